"""Stopping a server process the tests (or the bench) started: ask, wait, then kill."""

from __future__ import annotations

import signal
import subprocess


def stop_process(
    proc: subprocess.Popen[bytes], grace: float = 5.0, sig: int = signal.SIGTERM
) -> None:
    """Send `sig`, wait up to `grace` seconds, SIGKILL if still alive, and reap."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
    proc.wait()
