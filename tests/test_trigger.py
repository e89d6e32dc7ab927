"""The trigger and allowlist rules (SPEC section 7), table-driven against the pure functions."""

from __future__ import annotations

from typing import Any

import pytest

from nanoclaw.models import Group, Message
from nanoclaw.trigger import (
    LOCAL_SENDER,
    any_trigger,
    normalise,
    sender_allowed,
    starts_with_trigger,
    triggers,
)

ALLOWED = ("tg:1",)
DEFAULT = "@Andy"
WORK = Group(folder="work", name="work", chats=("tg:-100",))


def msg(text: str, sender: str = "tg:1", **kw: Any) -> Message:
    return Message(
        id=1,
        chat_id="tg:-100",
        platform_id="p",
        sender_id=sender,
        sender_name="alice",
        text=text,
        ts_ms=0,
        **kw,
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("@Andy", True),
        ("@Andy hi", True),
        ("@andy hi", True),
        ("@ANDY what's up", True),
        ("@Andy, can you", True),
        ("@Andy: hi", True),
        ("@Andy\nhi", True),
        ("   @Andy hi", True),
        ("@Andyx", False),
        ("@Andy_bot hi", False),
        ("@Andy2 hi", False),
        ("hi @Andy", False),
        ("Andy hi", False),
        ("", False),
        ("@And", False),
        # invisible characters before the trigger are ignored
        ("\u200b@Andy hi", True),
        ("\u200e\u202e@Andy hi", True),
        ("\ufeff\u2060@Andy", True),
        ("\u2066@Andy\u2069 hi", True),
        # ... and inside it too, so they cannot split the word either way
        ("@An\u200bdy hi", True),
        ("@Andy\u200bx", False),
        # NFKC folds the fullwidth look-alikes onto the ASCII trigger
        ("\uff20Andy hi", True),
        ("\uff20\uff21\uff4e\uff44\uff59 hi", True),
    ],
)
def test_starts_with_trigger(text: str, expected: bool) -> None:
    assert starts_with_trigger(text, DEFAULT) is expected


def test_normalise_folds_and_strips() -> None:
    assert normalise("\u200b \uff20Andy") == "@Andy"


@pytest.mark.parametrize(
    ("message", "group", "expected"),
    [
        (msg("@Andy hi"), WORK, True),
        (msg("hello there"), WORK, False),
        (msg("hello", mentions_bot=True), WORK, True),
        (msg("hello", reply_to_bot=True), WORK, True),
        # no trigger needed: any allowed sender's message counts
        (msg("hello"), Group(folder="g", name="g", requires_trigger=False), True),
        # a sender allowed by nobody never triggers, whatever the message says
        (msg("@Andy hi", sender="tg:666"), WORK, False),
        (msg("@Andy hi", sender="tg:666", mentions_bot=True), WORK, False),
        (msg("hi", sender="tg:666"), Group(folder="g", name="g", requires_trigger=False), False),
        # the group's own allowlist adds senders
        (
            msg("@Andy hi", sender="tg:2"),
            Group(folder="g", name="g", allowed_senders=("tg:2",)),
            True,
        ),
        # the terminal's local user is always allowed
        (msg("@Andy hi", sender=LOCAL_SENDER), WORK, True),
        (msg("hi", sender=LOCAL_SENDER), WORK, False),
        (
            msg("hi", sender=LOCAL_SENDER),
            Group(folder="main", name="main", requires_trigger=False),
            True,
        ),
        # a group trigger replaces the default
        (msg("@bot hi"), Group(folder="g", name="g", trigger="@bot"), True),
        (msg("@Andy hi"), Group(folder="g", name="g", trigger="@bot"), False),
        (msg("@BOT, hi"), Group(folder="g", name="g", trigger="@bot"), True),
        (msg("@botty hi"), Group(folder="g", name="g", trigger="@bot"), False),
    ],
)
def test_triggers(message: Message, group: Group, expected: bool) -> None:
    assert triggers(message, group, ALLOWED, DEFAULT) is expected


def test_empty_global_allowlist_blocks_network_senders() -> None:
    assert triggers(msg("@Andy hi"), WORK, (), DEFAULT) is False
    assert triggers(msg("@Andy hi", sender=LOCAL_SENDER), WORK, (), DEFAULT) is True


def test_sender_allowed_is_exact() -> None:
    assert sender_allowed("tg:1", ["tg:1"], WORK) is True
    assert sender_allowed("tg:12", ["tg:1"], WORK) is False
    assert sender_allowed("xmpp:tg:1", ["tg:1"], WORK) is False


def test_any_trigger() -> None:
    quiet = [msg("hello"), msg("@Andy hi", sender="tg:666")]
    assert any_trigger(quiet, WORK, ALLOWED, DEFAULT) is False
    assert any_trigger([*quiet, msg("@andy go")], WORK, ALLOWED, DEFAULT) is True
    assert any_trigger([], WORK, ALLOWED, DEFAULT) is False
