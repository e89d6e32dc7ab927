"""Benchmarks for the performance targets of SPEC section 11 (`python -m bench`).

Every figure is measured on this machine in one run and printed next to its floor, the
cost that no implementation can beat, so the ratio says what the project itself adds:

1. sandbox spawn: bwrap with nanoclaw's full mount plan running /bin/true, started as
   the runner starts it (cgroup jail, options through `--args FD`, the seccomp filter,
   `prlimit` inside). Floor: bwrap with the same namespaces and process options and no
   mount but /usr (and the top-level links) running /bin/true; the bare
   `bwrap --bind / / /bin/true` is shown beside it. Target: ratio <= 2.
2. agent cold start: `Launcher.launch()` of a real sandboxed agent until the fake
   Anthropic server records its first request. Floor: the runner's interpreter and flags
   (`-I -S -B`) running `import json, socket, http.client, subprocess` in the group's own
   plan, started as the runner is, cgroup creation included, once before each launch.
   Target: ratio <= 2. `python -c "import anthropic"` on the host is shown for reference.
   The same launches give the idle agent's memory: the runner's VmRSS once it answered
   and waits for input (target <= 25 MiB), its whole sandbox's beside it.
3. warm follow-up: a message stored through the in-process `Core` until the live agent's
   next model request carrying it reaches the fake server. Floor: none (an absolute
   budget: p50 <= 25 ms).
4. reply: an outbound IPC file renamed into place (and the host nudged, as the agent
   does) until the channel's `send` is called, with the real watcher and router of a
   running `Core`. Floor: none (p50 <= 25 ms).
5. inbound ingest: `Ingest.message` one message per call into a real SQLite store, from
   64 producers side by side (one producer and the batched `Store.add_messages` are
   shown beside it for reference). Floor: none (>= 5,000 messages/s sustained).
6. daemon idle CPU: `nanoclaw run` in a subprocess with nothing to do; utime + stime
   from /proc over the wall time. Floor: zero (<= 1 % of one core).
7. load: the real daemon against the fake Bot API at 1, 5 and 20 groups, msg/s against
   issue 15's targets (5 groups >= 2 x 9.7 msg/s; 20 groups >= 10 x 1.5 msg/s, p50 <= 2 s,
   both the figures of the runner built on the SDK), with the daemon's CPU and peak RSS.

The numbers are measurements, never assertions: the command exits 0 whatever they are.
"""

import sys
from pathlib import Path

# The fakes in tests/ import one another as top-level modules, as pytest sees them.
_TESTS = str(Path(__file__).resolve().parents[1] / "tests")
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)
