"""Figure 1 (sandbox spawn) and the process-start floors of figure 2.

Both commands are started the same way, with `subprocess.run(env={})`, interleaved so
that a drift in machine load hits the measurement and its floor alike.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.home import make_home
from bench.report import Figure, median
from nanoclaw.launcher import AGENT_CODE
from nanoclaw.sandbox import SandboxPlan, bwrap_argv, detect_runtime, limits_prefix, write_etc

MINIMAL_BWRAP = [
    "bwrap", "--unshare-user", "--ro-bind", "/usr", "/usr",
    "--symlink", "usr/bin", "/bin", "--symlink", "usr/lib", "/lib",
    "--symlink", "usr/lib64", "/lib64", "/bin/true",
]  # fmt: skip
SPAWN_TARGET = 2.0
COLD_TARGET = 1.3


def full_plan_argv(home: Path) -> list[str]:
    """prlimit + bwrap with nanoclaw's whole mount plan for `main`, running /bin/true."""
    make_home(home)
    plan = SandboxPlan(
        workspace=home / "groups" / "main",
        ipc=home / "store" / "ipc" / "main",
        global_dir=home / "groups" / "global",
        global_writable=True,
        skills=home / "skills",
        agent_code=AGENT_CODE,
        etc=write_etc(home / "store" / "sandbox" / "etc"),
        runtime=detect_runtime(),
        env=(("TZ", "UTC"),),
    )
    return limits_prefix(plan.limits) + bwrap_argv(plan, ["/bin/true"])


def time_once(argv: list[str]) -> float:
    """Wall seconds of one run from fork to exit; a failing command is an error."""
    start = time.perf_counter()
    done = subprocess.run(argv, env={}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        err = done.stderr.decode(errors="replace").strip()[:300]
        raise RuntimeError(f"{argv[0]} exited {done.returncode}: {err}")
    return elapsed


def interleaved(a: list[str], b: list[str], n: int, warmup: int = 2) -> tuple[list[float], ...]:
    times_a: list[float] = []
    times_b: list[float] = []
    for i in range(warmup + n):
        ta, tb = time_once(a), time_once(b)
        if i >= warmup:
            times_a.append(ta)
            times_b.append(tb)
    return times_a, times_b


def sandbox_spawn(n: int) -> Figure:
    with tempfile.TemporaryDirectory(prefix="nanoclaw-bench-") as tmp:
        full = full_plan_argv(Path(tmp))
        floors, fulls = interleaved(MINIMAL_BWRAP, full, n)
    floor_ms, full_ms = median(floors) * 1000, median(fulls) * 1000
    ratio = full_ms / floor_ms
    return Figure(
        "spawn",
        "sandbox spawn (full plan, /bin/true)",
        full_ms,
        "ms",
        f"<= {SPAWN_TARGET:g}x floor",
        ratio <= SPAWN_TARGET,
        floor=floor_ms,
        ratio=ratio,
        extra={"n": n, "full_min_ms": min(fulls) * 1000, "floor_min_ms": min(floors) * 1000},
        note=f"floor = minimal bwrap of /bin/true; full argv has {len(full)} words",
    )


def import_anthropic_ms(n: int, warmup: int = 1) -> list[float]:
    """The floor of figure 2: this interpreter importing the SDK, median over n runs."""
    argv = [sys.executable, "-c", "import anthropic"]
    return [time_once(argv) * 1000 for _ in range(warmup + n)][warmup:]
