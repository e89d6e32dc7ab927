"""Hostile inbound messages (SPEC sections 7, 10): any message, and any Matrix event, is
stored whole and prompted within the budget with no tag it could forge.
"""

from __future__ import annotations

import asyncio
import html
import re
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

from hostile import HEAVY, JSON, LONG_TEXT, ODD_TEXT, TEXTS, TRIGGER, UTC_ZONE
from hypothesis import given
from hypothesis import strategies as st

from channels import matrix_event
from nanoclaw.models import Group, InboundMessage, Message
from nanoclaw.prompt import PROMPT_BUDGET_CHARS, build_prompt
from nanoclaw.store.messages import Store
from nanoclaw.trigger import triggers

SENDERS = st.one_of(
    st.sampled_from(["tg:111", "tg:222", "tg:111 ", "tg:111\n"]),
    ODD_TEXT.map(lambda t: "tg:" + t),
    LONG_TEXT,
)


@st.composite
def inbound(draw: st.DrawFn) -> InboundMessage:
    return InboundMessage(
        chat_id="tg:-1",
        platform_id=f"p{draw(st.integers(0, 10**9))}",
        sender_id=draw(SENDERS),
        sender_name=draw(TEXTS),
        text=draw(TEXTS),
        ts_ms=draw(st.integers(-(2**63), 2**63 - 1)),
        chat_name=draw(ODD_TEXT),
        mentions_bot=draw(st.booleans()),
        reply_to_sender=draw(st.one_of(st.just(""), TEXTS)),
        reply_to_text=draw(st.one_of(st.just(""), TEXTS)),
    )


TAG = re.compile(r"</?[a-z_]+")
OPEN = re.compile(
    r'<message sender="[^"<>]*" sender_id="([^"<>]*)" time="[^"<>]*"( trust="untrusted")?>'
)


async def store_and_prompt(msgs: list[InboundMessage]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = await Store.open(Path(tmp) / "nanoclaw.db")
        try:
            group = Group(folder="alpha", name="alpha", chats=("tg:-1",))
            await store.save_group(group)
            ids = [await store.add_message(m) for m in msgs]
            got = await store.messages_for_folder("alpha", 0)
        finally:
            await store.close()
    fresh = [m for m, i in zip(msgs, ids, strict=True) if i is not None]
    assert len(set(m.platform_id for m in msgs)) == len(fresh)  # only re-deliveries dropped
    for want, have in zip(fresh, got, strict=True):  # stored exactly: nothing lost or changed
        assert (have.text, have.sender_id, have.sender_name, have.ts_ms) == (
            want.text,
            want.sender_id,
            want.sender_name,
            want.ts_ms,
        )
        assert (have.reply_to_text, have.reply_to_sender) == (
            want.reply_to_text,
            want.reply_to_sender,
        )
        triggers(have, group, ["tg:111"], TRIGGER)
    trusted = {"tg:111": True}
    prompt = build_prompt(got, UTC_ZONE, trusted)
    assert len(prompt) <= PROMPT_BUDGET_CHARS + 600
    omitted = re.match(r"\((\d+) earlier messages omitted\)", prompt)
    kept = got[int(omitted.group(1)) if omitted else 0 :]
    assert kept, "the newest message is always kept"
    # The only tags are the wrapper's: no message can close its own or open a fake one.
    expected = ["<messages"]
    for m in kept:
        quote = ["<reply_to", "</reply_to"] if m.reply_to_text or m.reply_to_sender else []
        expected += ["<message", *quote, "</message"]
    assert TAG.findall(prompt) == [*expected, "</messages"]
    opened = OPEN.findall(prompt)
    assert [bool(t) for _, t in opened] == [not trusted.get(m.sender_id, False) for m in kept]
    for (shown, _), m in zip(opened, kept, strict=True):
        if m.sender_id.isprintable() and len(m.sender_id) <= 300:
            assert html.unescape(shown) == m.sender_id


@HEAVY
@given(st.lists(inbound(), min_size=1, max_size=5))
def test_odd_messages_are_stored_whole_and_prompted_safely(msgs: list[InboundMessage]) -> None:
    asyncio.run(store_and_prompt(msgs))


def test_many_huge_messages_stay_within_the_budget() -> None:
    big = [
        Message(
            i,
            "tg:-1",
            f"p{i}",
            "mx:@" + "x" * 100_000,
            "&" * 100_000,
            "<" * 100_000,
            2**62,
            reply_to_sender='"' * 100_000,
            reply_to_text="&" * 100_000,
        )
        for i in range(1, 30)
    ]
    prompt = build_prompt(big, UTC_ZONE, {})
    assert len(prompt) <= PROMPT_BUDGET_CHARS + 600
    assert prompt.startswith("(") and 'time="unknown"' in prompt


MATRIX_CONTENT = st.one_of(
    st.fixed_dictionaries(
        {},
        optional={
            "msgtype": st.sampled_from(["m.text", "m.emote", "m.image", "m.notice", "m.location"])
            | JSON,
            "body": st.one_of(
                TEXTS,
                st.sampled_from(["\ud800", "x\udfffy"]),
                JSON,
                TEXTS.map(lambda t: f"> <@bob:hs{t}> quoted\n\n{t}"),
            ),
            "formatted_body": JSON | st.just('<a href="https://matrix.to/#/@andy:hs">A</a>'),
            "m.mentions": JSON | st.just({"user_ids": ["@andy:hs"]}),
            "m.relates_to": JSON | st.just({"m.in_reply_to": {"event_id": "$e0"}}),
        },
    ),
    JSON,
)
MATRIX_EVENTS = st.fixed_dictionaries(
    {"type": st.just("m.room.message") | JSON},
    optional={
        "sender": st.sampled_from(["@alice:hs", "@andy:hs", "@\ud800:hs"]) | JSON,
        "event_id": st.sampled_from(["$e1", "$\udfff"]) | JSON,
        "origin_server_ts": st.integers() | JSON,
        "content": MATRIX_CONTENT,
    },
)


async def store_events(events: list[tuple[dict[str, Any], str | None]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = await Store.open(Path(tmp) / "nanoclaw.db")
        try:
            for i, (raw, replied) in enumerate(events):
                matrix_event.reply_target(raw.get("content") or {})  # as channels/matrix.py
                msg = matrix_event.normalise(
                    raw,
                    "!room\udcff:hs",
                    "@andy:hs",
                    sender_name="Al\ud800",
                    room_name="R",
                    is_group=True,
                    replied_to_sender=replied,
                )
                if msg is None:
                    continue
                assert 0 <= msg.ts_ms <= matrix_event.MAX_TS_MS
                msg = replace(msg, platform_id=f"{msg.platform_id}-{i}")
                assert await store.add_message(msg) is not None
        finally:
            await store.close()


@HEAVY
@given(
    st.lists(st.tuples(MATRIX_EVENTS, st.sampled_from([None, "@andy:hs", "@x\ud800"])), max_size=4)
)
def test_any_matrix_event_normalises_to_something_storable(events: list[Any]) -> None:
    asyncio.run(store_events(events))
