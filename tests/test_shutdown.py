"""Stopping: the daemon on SIGTERM, and Ctrl+C in a chat that runs beside a daemon."""

from __future__ import annotations

import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

from conftest import chat_env
from fake_anthropic import FakeAnthropic, text_reply
from pty_terminal import Pty, alive, descendants, until

from nanoclaw.home import ensure_main
from nanoclaw.store.messages import Store


async def test_sigterm_logs_runs_in_flight_and_a_chat_beside_shows_work(
    home: Path, fake: FakeAnthropic, store: Store
) -> None:
    """The daemon's agent works for a chat beside it: the chat shows it working (from the
    store: no typing reaches it), its Ctrl+C says the run goes on; SIGTERM then ends the
    daemon cleanly with one line saying how many runs were in flight."""
    await ensure_main(store)
    env = chat_env(home, fake.base_url)
    fake.script(replace(text_reply("too late"), delay=120))
    with (home / "daemon.log").open("ab") as log:
        daemon = subprocess.Popen(
            [sys.executable, "-m", "nanoclaw.cli.main", "run"],
            cwd=home,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    until(lambda: "nanoclaw running" in (home / "daemon.log").read_text())  # holds the lock
    term = Pty([sys.executable, "-m", "nanoclaw.cli.main", "chat"], home, env)
    try:
        term.expect("[main] > ")
        term.send("a slow question")
        await fake.await_requests(1, timeout=60)
        term.expect("Andy is working...\n[main] > ")  # over the prompt, which stays
        sandboxes = descendants(daemon.pid)
        assert alive(sandboxes) and not descendants(term.proc.pid)
        term.ctrl_c()
        term.expect("not stopped: the daemon runs this group's agent")
        assert alive(sandboxes)  # the daemon's run goes on
        term.send("/quit")
        assert term.proc.wait(timeout=30) == 0

        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=60) == 0
        assert not alive(sandboxes)
    finally:
        term.close()
        daemon.kill()
        daemon.wait()
    lines = (home / "daemon.log").read_text().splitlines()
    said = [ln[ln.index("stopping:") :] for ln in lines if "stopping:" in ln]
    assert said == ["stopping: 1 runs in flight (SIGTERM)"]  # once
    assert not any("Traceback" in ln for ln in lines)
