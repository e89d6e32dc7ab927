"""The terminal chat: a real REPL on a pty (replies, Ctrl+C), the channel's drawing over the
prompt, and the pure parts (commands, marks, delivery keys)."""

from __future__ import annotations

import io
import re
import sys
import termios
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from conftest import chat_env, wait_for
from fake_anthropic import FakeAnthropic, text_reply
from pty_terminal import Pty, alive, descendants, until

from channels.repl import parse_command, stopped_line
from channels.terminal import TerminalChannel, scheduled_mark
from nanoclaw.home import ensure_main
from nanoclaw.router import outbox_id
from nanoclaw.store.messages import Store
from nanoclaw.supervisor import Stopped


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


def test_repl_commands_and_a_reply(home: Path, fake: FakeAnthropic) -> None:
    env = chat_env(home, fake.base_url)
    term = Pty([sys.executable, "-m", "nanoclaw.cli.main", "chat"], home, env)
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
        term.close()
    assert (home / "store" / "chat_history").read_text().count("/add work") == 1


async def test_ctrl_c_stops_the_run_at_once_and_the_batch_is_not_asked_again(
    home: Path, fake: FakeAnthropic, store: Store
) -> None:
    """Ctrl+C while the agent works kills its sandbox and marks the batch handled; at the
    prompt it ends the chat at once. A scheduled task's reply that waited for a chat is
    marked; the prompt comes back after a reply, "is working" on its own line."""
    await ensure_main(store)
    task_run = await store.start_run("main", "task", None, None)
    await store.enqueue_reply("main", "term:main", "morning report", task_run)
    await store.finish_run(task_run, "ok")
    env = chat_env(home, fake.base_url)
    argv = [sys.executable, "-m", "nanoclaw.cli.main", "chat"]
    fake.script(replace(text_reply("too late"), delay=120))
    term = Pty(argv, home, env)
    try:
        out = term.expect("morning report\n")
        assert re.search(r"Andy \[scheduled \d\d:\d\d\]: morning report\n", out)
        term.expect("[main] > ")
        start = len(term.buffer)
        term.send("a slow question")
        term.expect("\x1b[KAndy is working...\n[main] > ", start=start)  # over the prompt
        await fake.await_requests(1, timeout=60)  # the agent waits for the model
        sandboxes = descendants(term.proc.pid)
        assert alive(sandboxes)
        term.ctrl_c()
        out = term.expect(" done)\n[main] > ", start=start)
        assert re.search(r"\x1b\[Kstopped run \d+ after \d+ s \(0 turns done\)\n", out[start:])
        until(lambda: not alive(sandboxes))  # the whole sandbox, killed as a group
        term.send("[[say: still here]]")  # the chat goes on, with a new run
        term.expect("Andy: still here\n[main] > ", start=start)

        async def taken() -> bool:
            return await store.cursor("main") >= await store.max_message_id()

        await wait_for(taken)  # the agent took the question: its idle wait is not stopped
        term.ctrl_c()  # at the prompt: the chat ends
        assert term.proc.wait(timeout=30) == 130
        lflag = termios.tcgetattr(term.master)[3]
        assert lflag & termios.ECHO and lflag & termios.ICANON  # readline's mode undone
    finally:
        term.close()
    runs = {r.id: r for r in await store.runs("main")}
    stopped = [r for r in runs.values() if r.status == "stopped"]
    assert len(stopped) == 1 and stopped[0].error == "stopped by the owner"

    fake.reset()  # the next start: the stopped question is not asked again
    term = Pty(argv, home, env)
    try:
        term.expect("[main] > ")
        term.send("[[say: fresh start]]")
        term.expect("Andy: fresh start")
        term.send("/quit")
        assert term.proc.wait(timeout=30) == 0
    finally:
        term.close()
    prompts = [str(r.body["messages"]) for r in fake.requests]
    assert len(prompts) == 1 and "a slow question" not in prompts[0]
    assert "morning report" not in term.buffer  # delivered once, in the first chat


class Tty(io.StringIO):
    """A terminal's output as a string: what the channel writes when a person watches."""

    def isatty(self) -> bool:
        return True


async def test_a_reply_over_the_prompt_draws_it_again_and_work_shows_once() -> None:
    out = Tty()
    channel = TerminalChannel("Andy", out=out)
    channel.typed = lambda: "half a que"
    channel.prompting("[main] > ")
    await channel.set_typing("term:main", True)
    await channel.set_typing("term:main", True)  # the router and the REPL both tell
    await channel.set_typing("term:work", True)  # another group's chat: not this prompt
    await channel.send("term:main", "hello")
    assert out.getvalue() == (
        "\r\x1b[KAndy is working...\n[main] > half a que\r\x1b[KAndy: hello\n[main] > half a que"
    )
    channel.prompting(None)  # the owner pressed Enter: plain lines again
    await channel.send("term:work", "there")
    channel.prompting("[main] > ")  # the prompt again, while the agent still works
    await channel.set_typing("term:main", True)
    assert out.getvalue().endswith("Andy [work]: there\n")  # "is working": shown once
    channel.asked()  # a follow-up: its work shows again
    await channel.set_typing("term:main", True)
    assert out.getvalue().endswith(
        "Andy [work]: there\n\r\x1b[KAndy is working...\n[main] > half a que"
    )


@pytest.mark.parametrize(
    ("kind", "created", "now", "mark"),
    [
        ("task", "2026-03-02T08:00:00+00:00", "2026-03-02T12:00:00+00:00", " [scheduled 13:30]"),
        (
            "task",
            "2026-03-01T08:00:00+00:00",
            "2026-03-02T12:00:00+00:00",
            " [scheduled 2026-03-01 13:30]",
        ),
        (
            "task",
            "2026-03-02T17:00:00+00:00",
            "2026-03-02T20:00:00+00:00",
            " [scheduled 2026-03-02 22:30]",
        ),  # one day in UTC, two in the owner's zone
        ("message", "2026-03-02T08:00:00+00:00", "2026-03-02T12:00:00+00:00", ""),
        ("", "2026-03-02T08:00:00+00:00", "2026-03-02T12:00:00+00:00", ""),
    ],
)
def test_scheduled_mark(kind: str, created: str, now: str, mark: str) -> None:
    def ms(iso: str) -> int:
        return int(datetime.fromisoformat(iso).timestamp() * 1000)

    assert scheduled_mark(kind, ms(created), ZoneInfo("Asia/Kolkata"), ms(now)) == mark


@pytest.mark.parametrize(
    ("key", "item"),
    [
        ("nanoclaw-42-0-0badf00d", 42),
        ("nanoclaw-7-file", 7),
        ("nanoclaw-x-1", None),
        ("other-42-0", None),
        ("", None),
    ],
)
def test_outbox_id_of_a_delivery_key(key: str, item: int | None) -> None:
    assert outbox_id(key) == item


@pytest.mark.parametrize(
    ("stopped", "line"),
    [
        (Stopped(3, 12.4, 1), "stopped run 3 after 12 s (1 turn done)"),
        (Stopped(4, 0.2, 0), "stopped run 4 after 0 s (0 turns done)"),
        (None, "stopped before the agent started; it will not be asked again"),
    ],
)
def test_stopped_line(stopped: Stopped | None, line: str) -> None:
    assert stopped_line(stopped) == line
