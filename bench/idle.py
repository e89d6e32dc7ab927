"""Figure 6: CPU used by an idle daemon, `python -m nanoclaw.cli.main run` in its own process.

The daemon gets a fresh NANOCLAW_HOME (so only `main` is registered and watched) and no
network channel; the CPU time of its threads is read from /proc (schedstat, in ns) over a
quiet window, with the busiest threads named so a polling loop shows up.
"""

from __future__ import annotations

import signal
import subprocess
import tempfile
import time
from pathlib import Path

from processes import stop_process

from bench.home import make_home, start_daemon
from bench.report import Figure

IDLE_TARGET_PCT = 1.0
READY_LINE = "nanoclaw running"
SETTLE_S = 1.5


def thread_cpu(pid: int) -> dict[str, float]:
    """Seconds on CPU per thread ("tid name"), from the nanosecond counters of schedstat."""
    out: dict[str, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
            ns = int((task / "schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue  # a thread that ended meanwhile
        out[f"{task.name} {name}"] = ns / 1e9
    return out


def _wait_ready(proc: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-600:]
            raise RuntimeError(f"daemon exited with {proc.returncode}: {tail}")
        if READY_LINE in log.read_text(errors="replace"):
            return
        time.sleep(0.05)
    raise TimeoutError(f"daemon did not log {READY_LINE!r} within {timeout}s")


def idle_cpu(seconds: float, base_url: str) -> Figure:
    with tempfile.TemporaryDirectory(prefix="nanoclaw-bench-") as tmp:
        home = make_home(Path(tmp))
        log = home / "daemon.log"
        proc = start_daemon(home, base_url)
        try:
            _wait_ready(proc, log, 60)
            time.sleep(SETTLE_S)
            cpu0, wall0 = thread_cpu(proc.pid), time.monotonic()
            time.sleep(seconds)
            cpu1, wall1 = thread_cpu(proc.pid), time.monotonic()
            if proc.poll() is not None:
                raise RuntimeError(f"daemon exited with {proc.returncode} while idle")
        finally:
            stop_process(proc, grace=15, sig=signal.SIGINT)
    wall = wall1 - wall0
    used = {k: v - cpu0.get(k, 0.0) for k, v in cpu1.items()}
    pct = sum(used.values()) / wall * 100
    ranked = sorted(used, key=lambda k: used[k], reverse=True)
    busiest = ranked[0] if ranked else "-"
    top = ", ".join(f"{k} {used[k] / wall * 100:.2f} %" for k in ranked[:3])
    return Figure(
        "idle_cpu",
        "daemon idle CPU (one core)",
        pct,
        "%",
        f"<= {IDLE_TARGET_PCT:g} %",
        pct <= IDLE_TARGET_PCT,
        extra={
            "window_s": wall,
            "threads": len(used),
            "busiest_thread_pct": used.get(busiest, 0.0) / wall * 100,
        },
        note=f"busiest threads: {top or '-'} (schedstat, all threads summed)",
    )
