"""The Matrix channel's pure parts: bodies, reply fallbacks, mentions, what is ignored."""

from __future__ import annotations

from typing import Any

import pytest

from channels.matrix_event import body_of, mentions_me, normalise, split_reply_fallback
from nanoclaw.models import Group, stored
from nanoclaw.trigger import triggers

ME = "@andy:localhost"
ROOM = "!room:localhost"


def event(content: dict[str, Any], sender: str = "@alice:localhost", **kw: Any) -> dict[str, Any]:
    return {
        "type": "m.room.message",
        "sender": sender,
        "event_id": "$e1",
        "origin_server_ts": 1_700_000_000_000,
        "content": content,
        **kw,
    }


def norm(ev: dict[str, Any], replied: str | None = None) -> Any:
    return normalise(
        ev,
        ROOM,
        ME,
        sender_name="Alice",
        room_name="Team",
        is_group=True,
        replied_to_sender=replied,
    )


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ({"msgtype": "m.text", "body": "hi"}, "hi"),
        ({"msgtype": "m.emote", "body": "waves"}, "* Alice waves"),
        ({"msgtype": "m.image", "body": "cat.png"}, "[Image: cat.png]"),
        ({"msgtype": "m.image", "body": "cat.png", "filename": "cat.png"}, "[Image: cat.png]"),
        # Matrix 1.10: a body beside a different filename is a caption, and comes first
        ({"msgtype": "m.image", "body": "a cat", "filename": "cat.png"}, "a cat [Image: cat.png]"),
        ({"msgtype": "m.video", "body": "@Andy?", "filename": "v.mp4"}, "@Andy? [Video: v.mp4]"),
        ({"msgtype": "m.file", "body": "", "filename": "r.pdf"}, "[File]"),
        ({"msgtype": "m.file", "body": "x", "filename": ["r.pdf"]}, "[File: x]"),
        ({"msgtype": "m.file", "body": "report.pdf"}, "[File: report.pdf]"),
        ({"msgtype": "m.location", "body": "geo:1,2"}, "[Location]"),
        ({"msgtype": "m.notice", "body": "I am a bot"}, None),
        ({"msgtype": "m.weird", "body": "?"}, None),
    ],
)
def test_body_of(content: dict[str, Any], expected: str | None) -> None:
    assert body_of(content, "Alice") == expected


def test_reply_fallback_is_split_off() -> None:
    body = "> <@andy:localhost> the earlier answer\n> second line\n\nthanks, and more?"
    assert split_reply_fallback(body) == (
        "@andy:localhost",
        "the earlier answer\nsecond line",
        "thanks, and more?",
    )
    assert split_reply_fallback("no quote") == ("", "", "no quote")


def test_mentions() -> None:
    assert mentions_me({"m.mentions": {"user_ids": [ME]}}, ME)
    pill = '<a href="https://matrix.to/#/%40andy%3Alocalhost">Andy</a> hi'
    assert mentions_me({"formatted_body": pill}, ME)
    assert not mentions_me({"m.mentions": {"user_ids": ["@bob:localhost"]}, "body": ME}, ME)


def test_normalise_message() -> None:
    msg = norm(event({"msgtype": "m.text", "body": "hello", "m.mentions": {"user_ids": [ME]}}))
    assert (msg.chat_id, msg.sender_id, msg.platform_id) == (
        f"mx:{ROOM}",
        "mx:@alice:localhost",
        "$e1",
    )
    assert msg.mentions_bot and not msg.reply_to_bot and msg.text == "hello"


def test_normalise_reply_to_bot_carries_the_quote() -> None:
    content = {
        "msgtype": "m.text",
        "body": "> <@andy:localhost> 42\n\nwhy?",
        "m.relates_to": {"m.in_reply_to": {"event_id": "$bot"}},
    }
    msg = norm(event(content), replied=ME)
    assert msg.reply_to_bot and msg.text == "why?" and msg.reply_to_text == "42"


@pytest.mark.parametrize(
    "ev",
    [
        event({"msgtype": "m.text", "body": "mine"}, sender=ME),
        event({"msgtype": "m.notice", "body": "bot talk"}),
        event({"msgtype": "m.text", "body": ""}),
        {**event({"body": "x"}), "type": "m.reaction"},
        {**event({"body": "x"}), "event_id": None},
    ],
)
def test_ignored(ev: dict[str, Any]) -> None:
    assert norm(ev) is None


@pytest.mark.parametrize(
    ("content", "wakes"),
    [
        ({"msgtype": "m.image", "body": "@Andy what is this", "filename": "cat.png"}, True),
        ({"msgtype": "m.file", "body": "@andy, read it", "filename": "r.pdf"}, True),
        ({"msgtype": "m.image", "body": "look @Andy", "filename": "cat.png"}, False),
        ({"msgtype": "m.image", "body": "@Andy.png"}, False),  # a file name is not a caption
        (
            {
                "msgtype": "m.image",
                "body": "> <@bob:localhost> earlier\n\n@Andy and this?",
                "filename": "cat.png",
                "m.relates_to": {"m.in_reply_to": {"event_id": "$x"}},
            },
            True,
        ),
    ],
)
def test_a_caption_opens_with_the_trigger(content: dict[str, Any], wakes: bool) -> None:
    msg = norm(event(content))
    assert msg is not None
    group = Group(folder="team", name="team", chats=(f"mx:{ROOM}",))
    assert triggers(stored(1, msg), group, ["mx:@alice:localhost"], "@Andy") is wakes
