"""The chat command parser and the words of its answers (pure)."""

from __future__ import annotations

import pytest

from nanoclaw.commands import Command, Status, parse_command, shorten, status_text, stopped_text


@pytest.mark.parametrize(
    ("text", "bot", "command"),
    [
        ("/stop", "", "stop"),
        ("  /STATUS \n", "", "status"),
        ("/pause", "andy_bot", "pause"),
        ("/resume", "", "resume"),
        ("/stop@andy_bot", "andy_bot", "stop"),
        ("/stop@Andy_Bot", "andy_bot", "stop"),
        ("/stop@other_bot", "andy_bot", None),
        ("/stop@andy_bot", "", None),  # no username known: the @ form is nobody's
        ("/stop now", "", None),
        ("/stopping", "", None),
        ("stop", "", None),
        ("//stop", "", None),
        ("/start", "", None),
        ("please /stop", "", None),
        ("/st\u0430tus", "", None),  # a Cyrillic a
        ("", "", None),
    ],
)
def test_parse_command(text: str, bot: str, command: Command | None) -> None:
    assert parse_command(text, bot) == command


def test_stopped_text_names_time_steps_and_tokens() -> None:
    assert stopped_text(42.4, 6, 12400) == "stopped after 42 s, 6 steps, 12,400 tokens"
    assert stopped_text(0.2, 1, 1) == "stopped after 0 s, 1 step, 1 token"


def test_shorten_keeps_one_printable_line() -> None:
    assert shorten("npm run build") == "npm run build"
    assert shorten("echo a\n\x1b[31mb\tc") == "echo a [31mb c"
    long = shorten("x" * 100, 20)
    assert len(long) == 20 and long.endswith("...")


def test_status_text() -> None:
    live = Status(True, 12.3, 3, "bash", "sleep 30", budget_left="900 tokens", next_task="x")
    assert status_text(live).splitlines() == [
        "an agent is working: 12 s, step 3",
        "running bash: sleep 30",
        "budget left today: 900 tokens",
        "next task: x",
    ]
    assert status_text(Status(queue_position=2)).splitlines() == [
        "waiting for a free slot: position 2",
        "no task scheduled",
    ]
    assert "(paused)" in status_text(Status(True, paused=True))
    assert status_text(Status()).startswith("no agent is working")
