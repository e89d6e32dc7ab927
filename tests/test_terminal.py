"""The terminal channel: a real REPL on a pty, commands, and the pure command parser."""

from __future__ import annotations

import io
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import cli_env
from fake_anthropic import FakeAnthropic

from channels.terminal import TerminalChannel, parse_command


@pytest.mark.parametrize(
    ("line", "parsed"),
    [
        ("/switch work", ("switch", "work")),
        ("/LIST", ("list", "")),
        ("/quit", ("quit", "")),
        ("hello /switch", None),
        ("//not a command", None),
        ("@Andy hi", None),
    ],
)
def test_parse_command(line: str, parsed: tuple[str, str] | None) -> None:
    assert parse_command(line) == parsed


async def test_agent_text_reaches_the_terminal_without_escape_sequences(tmp_path: Path) -> None:
    """An OSC 52 sequence would write the owner's clipboard; newline and tab are kept."""
    out = io.StringIO()
    channel = TerminalChannel("Andy", out=out, received=tmp_path / "received")
    osc52 = "\x1b]52;c;Y3VybCBldmlsLnNoIHwgc2g=\x07"
    await channel.send("term:main", f"done{osc52}\n\tnext\x1b[2J\r")
    (tmp_path / "report.txt").write_text("data")
    await channel.send_file("term:main", tmp_path / "report.txt", "report.txt", f"see{osc52}")
    shown = out.getvalue()
    assert shown.startswith("Andy: done\n\tnext\n")
    assert shown.endswith("report.txt\nsee\n")
    assert "\x1b" not in shown and "\x07" not in shown and "\r" not in shown


class Pty:
    def __init__(self, argv: list[str], cwd: Path, env: dict[str, str]) -> None:
        self.master, slave = pty.openpty()
        self.proc = subprocess.Popen(
            argv, stdin=slave, stdout=slave, stderr=slave, cwd=cwd, env=env
        )
        os.close(slave)
        self.buffer = ""

    def expect(self, needle: str, timeout: float = 60, start: int = 0) -> str:
        deadline = time.monotonic() + timeout
        while needle not in self.buffer[start:]:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{needle!r} not seen; got:\n{self.buffer[-2000:]}")
            ready, _, _ = select.select([self.master], [], [], left)
            if ready:
                try:
                    self.buffer += os.read(self.master, 65536).decode(errors="replace")
                except OSError:
                    break
        return self.buffer

    def send(self, line: str) -> None:
        os.write(self.master, (line + "\n").encode())


def test_repl_commands_and_a_reply(home: Path, fake: FakeAnthropic) -> None:
    env = cli_env(home, ANTHROPIC_BASE_URL=fake.base_url, POLL_INTERVAL_MS="50",
                  AGENT_IDLE_TIMEOUT_S="5", TERM="dumb")  # fmt: skip
    term = Pty([sys.executable, "-m", "nanoclaw.cli", "chat"], home, env)
    try:
        term.expect("[main] > ")
        term.send("/add work")
        term.expect("now chatting in work")
        term.send("/list")
        out = term.expect("term:work")
        assert "* work" in out and "main" in out
        term.send("hello there [[say: hi from work]]")
        term.expect("Andy: hi from work")
        before = len(term.buffer)
        term.send("/history")
        term.expect("Andy: hi from work", timeout=10, start=before)
        term.expect(": hello there", timeout=10, start=before)
        term.send("/switch nope")
        term.expect("no group 'nope'")
        term.send("/quit")
        assert term.proc.wait(timeout=30) == 0
    finally:
        term.proc.kill()
        os.close(term.master)
    assert (home / "store" / "chat_history").read_text().count("/add work") == 1
