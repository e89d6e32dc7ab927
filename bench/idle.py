"""Figure 6: CPU used by an idle daemon, `python -m nanoclaw.cli run` in its own process.

The daemon gets a fresh NANOCLAW_HOME (so only `main` is registered and watched) and no
network channel; its utime + stime are read from /proc/<pid>/stat over a quiet window.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.home import make_home
from bench.report import Figure

IDLE_TARGET_PCT = 1.0
READY_LINE = "nanoclaw running"
SETTLE_S = 1.5


def cpu_seconds(pid: int) -> float:
    """utime + stime of every thread of `pid`, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # fields 14 and 15 of proc(5)
    return ticks / os.sysconf("SC_CLK_TCK")


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
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "NANOCLAW_HOME": str(home),
            "ANTHROPIC_API_KEY": "k",
            "ANTHROPIC_BASE_URL": base_url,
            "TZ": "UTC",
        }
        with open(log, "wb") as err:
            proc = subprocess.Popen(
                [sys.executable, "-m", "nanoclaw.cli", "run"],
                cwd=home,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        try:
            _wait_ready(proc, log, 60)
            time.sleep(SETTLE_S)
            cpu0, wall0 = cpu_seconds(proc.pid), time.monotonic()
            time.sleep(seconds)
            cpu1, wall1 = cpu_seconds(proc.pid), time.monotonic()
            if proc.poll() is not None:
                raise RuntimeError(f"daemon exited with {proc.returncode} while idle")
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
    pct = (cpu1 - cpu0) / (wall1 - wall0) * 100
    return Figure(
        "idle_cpu",
        "daemon idle CPU (one core)",
        pct,
        "%",
        f"<= {IDLE_TARGET_PCT:g} %",
        pct <= IDLE_TARGET_PCT,
        extra={"window_s": wall1 - wall0, "cpu_ms": (cpu1 - cpu0) * 1000},
        note=f"tick = {1000 / os.sysconf('SC_CLK_TCK'):g} ms",
    )
