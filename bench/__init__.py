"""Benchmarks for the performance targets of SPEC section 11 (`python -m bench`).

Every figure is measured on this machine in one run and printed next to its floor, the
cost that no implementation can beat, so the ratio says what the project itself adds:

1. sandbox spawn: bwrap with nanoclaw's full mount plan running /bin/true, started as
   the runner starts it (`prlimit` prefix, options passed through `--args FD`).
   Floor: a minimal bwrap (new user namespace, /usr and the merged-/usr symlinks)
   running /bin/true. Target: ratio <= 2.
2. agent cold start: `Launcher.launch()` of a real sandboxed agent until the fake
   Anthropic server records its first request. Floor: `python -c "import anthropic"`
   with this interpreter, the import every agent has to pay. That wall time includes
   the interpreter's teardown, which a running agent has not paid, so the stricter
   `import_only_ms` (the same import ended by `os._exit`) is shown beside it.
   Target: ratio <= 1.3.
3. warm follow-up: a message stored through the in-process `Core` until the live agent's
   next model request carrying it reaches the fake server. Floor: none (an absolute
   budget: p50 <= 25 ms).
4. reply: an outbound IPC file renamed into place until the channel's `send` is called,
   with the real watcher and router of a running `Core`. Floor: none (p50 <= 25 ms).
5. inbound ingest: `Ingest.message` one message per call into a real SQLite store
   (the batched `Store.add_messages` rate is shown beside it for reference).
   Floor: none (>= 5,000 messages/s sustained).
6. daemon idle CPU: `nanoclaw run` in a subprocess with nothing to do; utime + stime
   from /proc over the wall time. Floor: zero (<= 1 % of one core).

The numbers are measurements, never assertions: the command exits 0 whatever they are.
"""

import sys
from pathlib import Path

# The fakes in tests/ import one another as top-level modules, as pytest sees them.
_TESTS = str(Path(__file__).resolve().parents[1] / "tests")
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)
