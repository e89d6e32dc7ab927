"""Lookalike triggers and nicks (SPEC sections 7, 10): a homoglyph of the trigger never
fires, compatibility forms and invisible characters do, and a Telegram mention, an XMPP
nick and a room nick match exactly or not at all.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable
from datetime import UTC, datetime

from aiogram.types import Chat, User
from aiogram.types import Message as TgMessage
from hostile import ODD_TEXT, TRIGGER
from hypothesis import assume, given
from hypothesis import strategies as st

from channels import telegram_message, xmpp_message
from nanoclaw.models import Group, Message
from nanoclaw.trigger import INVISIBLE, starts_with_trigger, triggers

# Letters of other scripts that look like those of "Andy". They are other letters, so they
# never match: NFKC folds only compatibility forms of the same letter (fullwidth, math bold).
HOMOGLYPHS = {
    "A": ["\u0410", "\u0391", "\u13aa", "\ua4ee"],  # Cyrillic, Greek, Cherokee, Lisu
    "n": ["\u0578", "\u057c", "\u03b7"],  # Armenian vo, ra; Greek eta
    "d": ["\u0501", "\u146f"],  # Cyrillic komi de, Canadian syllabics
    "y": ["\u0443", "\u04af", "\u03b3"],  # Cyrillic u, straight u; Greek gamma
}
# Same letters in compatibility forms, folded by NFKC onto ASCII: these do trigger (a choice).
VARIANTS = {
    "@": ["@", "\uff20", "\ufe6b"],
    "A": ["A", "a", "\uff21", "\uff41", "\U0001d400"],
    "n": ["n", "N", "\uff4e", "\U0001d427"],
    "d": ["d", "D", "\uff44", "\u217e"],
    "y": ["y", "Y", "\uff59", "\U0001d432"],
}
INVISIBLE_CHARS = [chr(c) for c in INVISIBLE]
SPACE = st.text(st.sampled_from([" ", "\t", "\n", *INVISIBLE_CHARS]), max_size=4)


def test_the_lookalike_tables_say_what_they_claim() -> None:
    for glyphs in HOMOGLYPHS.values():
        for g in glyphs:
            assert not unicodedata.normalize("NFKC", g).casefold().isascii(), g
    for letter, forms in VARIANTS.items():
        for f in forms:
            assert unicodedata.normalize("NFKC", f).casefold() == letter.casefold(), f


def with_invisibles(draw: Callable[[st.SearchStrategy[str]], str], chars: list[str]) -> str:
    return "".join(c + draw(st.text(st.sampled_from(INVISIBLE_CHARS), max_size=2)) for c in chars)


@given(st.data())
def test_a_lookalike_trigger_never_fires(data: st.DataObject) -> None:
    swapped = data.draw(st.sets(st.sampled_from("Andy"), min_size=1))
    letters = [
        data.draw(st.sampled_from(HOMOGLYPHS[c] if c in swapped else VARIANTS[c])) for c in "Andy"
    ]
    at = data.draw(st.sampled_from(VARIANTS["@"]))
    text = (
        data.draw(SPACE)
        + with_invisibles(data.draw, [at, *letters])
        + data.draw(st.text(max_size=20))
    )
    assert not starts_with_trigger(text, TRIGGER)
    msg = Message(1, "tg:-1", "p", "tg:111", "alice", text, 0)
    group = Group(folder="alpha", name="alpha", chats=("tg:-1",))
    assert not triggers(msg, group, ["tg:111"], TRIGGER)


@given(st.data())
def test_the_trigger_fires_through_invisibles_and_compatibility_forms(data: st.DataObject) -> None:
    # Invisible characters render as nothing, so "@An<ZWJ>dy" shows as "@Andy" and fires;
    # one between the trigger and a letter cannot hide the letter either ("@Andy<ZWSP>x").
    forms = [data.draw(st.sampled_from(VARIANTS[c])) for c in "@Andy"]
    head = data.draw(SPACE) + with_invisibles(data.draw, forms)
    tail = data.draw(st.sampled_from(["", " hi", ", can you", ":", "\nnext line", "!"]))
    assert starts_with_trigger(head + tail, TRIGGER)
    letter = data.draw(st.sampled_from(["x", "_", "2", "\u0430", "\uff58"]))
    assert not starts_with_trigger(
        head + data.draw(st.sampled_from(["", *INVISIBLE_CHARS])) + letter, TRIGGER
    )


def tg_message(text: str) -> TgMessage:
    return TgMessage(
        message_id=1,
        date=datetime.now(UTC),
        chat=Chat(id=-1, type="group"),
        from_user=User(id=5, is_bot=False, first_name="a"),
        text=text,
    )


@given(ODD_TEXT, st.sampled_from(["x", "2", "_", "\u0430", "é"]), ODD_TEXT)
def test_telegram_plain_mention_is_a_whole_handle(before: str, letter: str, after: str) -> None:
    assume("andy_bot" not in (before + after).casefold())
    assert not telegram_message.mentions(
        tg_message(f"{before}@andy_bot{letter}{after}"), "andy_bot"
    )
    assert not telegram_message.mentions(tg_message(f"{before}@\u0430ndy_bot {after}"), "andy_bot")
    assert telegram_message.mentions(tg_message(f"{before} @Andy_Bot, {after}"), "andy_bot")


@given(st.data())
def test_xmpp_lookalike_nick_is_not_addressed(data: st.DataObject) -> None:
    swapped = data.draw(st.sets(st.sampled_from("Andy"), min_size=1))
    nick = "".join(data.draw(st.sampled_from(HOMOGLYPHS[c])) if c in swapped else c for c in "Andy")
    lead = data.draw(SPACE)
    rest = data.draw(st.sampled_from([":", ",", " :"])) + data.draw(ODD_TEXT)
    assert not xmpp_message.addressed(lead + nick + rest, "Andy")
    # unlike the trigger, addressing does not see through invisible characters (fails closed)
    assert xmpp_message.addressed(lead.translate(INVISIBLE) + "aNDY" + rest, "Andy")


@given(ODD_TEXT, ODD_TEXT)
def test_a_room_nick_is_never_an_allowed_sender(nick: str, body: str) -> None:
    seen = xmpp_message.Seen("groupchat", "team@conf.example.org", nick, body, False)
    rooms = {"team@conf.example.org"}
    xmpp_message.ignore_reason(seen, "andy@example.org", "Andy", rooms)
    sender, _ = xmpp_message.sender_of(seen, rooms)
    group = Group(folder="team", name="team", allowed_senders=("xmpp:alice@example.org",))
    allowed = ["xmpp:team@conf.example.org", "xmpp:alice@example.org"]
    assert not any(
        triggers(Message(1, "x", "p", sender, nick, t, 0), group, allowed, TRIGGER)
        for t in (body, "@Andy hi")
    )
