"""The XMPP channel's pure decisions: what to ignore, who sent it, whether the bot is addressed."""

from __future__ import annotations

import pytest

from channels.xmpp_message import Seen, addressed, ignore_reason, sender_of

ME = "andy@localhost"
ROOM = "team@conference.localhost"
ROOMS = {ROOM}


def seen(**kw: object) -> Seen:
    base: dict[str, object] = {
        "kind": "chat",
        "from_bare": "alice@localhost",
        "from_resource": "phone",
        "body": "hello",
        "delayed": False,
    }
    base.update(kw)
    return Seen(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("stanza", "reason"),
    [
        (seen(), None),
        (seen(delayed=True), None),  # an offline 1:1 message is still a message
        (seen(kind="error"), "error stanza"),
        (seen(kind="headline"), "headline"),
        (seen(body="  "), "no body (chat state, receipt or subject)"),
        (seen(from_bare=ME), "from our own account"),
        (seen(kind="groupchat", from_bare=ROOM, from_resource="alice"), None),
        (
            seen(kind="groupchat", from_bare=ROOM, from_resource="alice", delayed=True),
            "room history replayed on join",
        ),
        (
            seen(kind="groupchat", from_bare=ROOM, from_resource="Andy"),
            "our own message reflected by the room",
        ),
        (
            seen(kind="groupchat", from_bare=ROOM, from_resource="other", real_jid=ME),
            "our own message reflected by the room",
        ),
        (seen(kind="groupchat", from_bare=ROOM, from_resource=""), "message from the room itself"),
        (
            seen(kind="groupchat", from_bare="elsewhere@conference.localhost", from_resource="x"),
            "groupchat from a room we are not in",
        ),
    ],
)
def test_ignore_reason(stanza: Seen, reason: str | None) -> None:
    assert ignore_reason(stanza, ME, "Andy", ROOMS) == reason


def test_sender_is_bare_jid_in_one_to_one() -> None:
    assert sender_of(seen(), ROOMS) == ("xmpp:alice@localhost", "alice")


def test_room_sender_uses_real_jid_when_revealed() -> None:
    s = seen(kind="groupchat", from_bare=ROOM, from_resource="Al", real_jid="alice@localhost")
    assert sender_of(s, ROOMS) == ("xmpp:alice@localhost", "Al")


def test_room_nick_is_never_a_bare_jid_identity() -> None:
    s = seen(kind="groupchat", from_bare=ROOM, from_resource="alice@localhost")
    sender_id, _ = sender_of(s, ROOMS)
    assert sender_id == f"xmpp:{ROOM}/alice@localhost"
    assert sender_id != "xmpp:alice@localhost"


def test_private_message_through_a_room_is_untrusted() -> None:
    s = seen(kind="chat", from_bare=ROOM, from_resource="alice")
    assert sender_of(s, ROOMS)[0] == f"xmpp:{ROOM}/alice"


@pytest.mark.parametrize(
    ("body", "yes"),
    [
        ("Andy: hi", True),
        ("andy, what now", True),
        ("  ANDY : x", True),
        ("Andy hi", False),
        ("hi Andy:", False),
        ("Andyx: hi", False),
    ],
)
def test_addressed(body: str, yes: bool) -> None:
    assert addressed(body, "Andy") is yes


def test_room_nick_in_allowed_senders_is_refused() -> None:
    from nanoclaw.config import load_settings
    from nanoclaw.errors import ConfigError

    with pytest.raises(ConfigError, match="bare JIDs"):
        load_settings(None, ALLOWED_SENDERS=f"xmpp:{ROOM}/alice")
