"""Pairing: the pure code rules, the store's single-use redemption, the inbound step's
answers and limits (real SQLite, the real `Ingest`), `nanoclaw pair` as a subprocess, and
a Telegram round trip over the fake Bot API (XMPP and Matrix: test_xmpp.py, test_matrix.py)."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from bot_api import MsgOpts
from conftest import Running, run_cli, settings_for, start_core, stop_core, wait_for
from fake_anthropic import FakeAnthropic
from fake_telegram import FakeTelegram

from channels.telegram import TelegramChannel
from nanoclaw.channel import Ingest, Welcome
from nanoclaw.config import Settings
from nanoclaw.errors import StoreError
from nanoclaw.models import Group, InboundMessage
from nanoclaw.pairing import (
    ALPHABET,
    ATTEMPTS_PER_HOUR,
    HOUR_MS,
    TTL_MS,
    Attempt,
    new_code,
    normalise_code,
    parse,
    step,
)
from nanoclaw.store.db import now_ms
from nanoclaw.store.messages import Store

NOW = 1_800_000_000_000


def test_codes_are_typeable_and_never_a_word() -> None:
    draw = random.Random(7)
    codes = [new_code(draw.choice) for _ in range(500)]
    for code in codes:
        assert len(code) == 9 and code[4] == "-"
        plain = code.replace("-", "")
        assert set(plain) <= set(ALPHABET) and not set(plain) & set("01OIL")
        assert any(c.isdigit() for c in plain) and any(c.isalpha() for c in plain)
        assert normalise_code(code.lower().replace("-", " ")) == plain
    assert len(set(codes)) == len(codes)
    assert len(ALPHABET) ** 8 == 852_891_037_441  # the figure pairing.py states


@pytest.mark.parametrize(
    ("text", "attempt"),
    [
        ("K7QX-M3PD", Attempt("K7QXM3PD", False)),
        (" k7qx m3pd ", Attempt("K7QXM3PD", False)),
        ("k7qxm3pd", Attempt("K7QXM3PD", False)),
        ("pair K7QX-M3PD", Attempt("K7QXM3PD", True)),
        ("/pair@andy_bot k7qxm3pd", Attempt("K7QXM3PD", True)),
        ("/pair K7QX-M3P0", Attempt(None, True)),  # a 0 is never in a code: surely wrong
        ("whatever", None),  # an eight-letter word is not a code
        ("12345678", None),
        ("pair programming is fun", None),
        ("K7QX-M3PD please", None),
        ("@Andy K7QX-M3PD", None),
        ("", None),
    ],
)
def test_what_counts_as_an_attempt(text: str, attempt: Attempt | None) -> None:
    assert parse(text) == attempt


@pytest.mark.parametrize(
    ("explicit", "served", "live", "recent", "expected"),
    [
        (False, True, False, 0, "pass"),  # an order number in a group chat, no code live
        (False, True, True, 0, "check"),
        (False, False, False, 0, "check"),  # a stranger's chat: answered even if none is live
        (True, True, False, 0, "check"),
        (True, False, True, ATTEMPTS_PER_HOUR, "refuse"),
        (False, False, True, ATTEMPTS_PER_HOUR, "refuse"),
        (False, True, True, ATTEMPTS_PER_HOUR, "pass"),
    ],
)
def test_step(explicit: bool, served: bool, live: bool, recent: int, expected: str) -> None:
    assert step(Attempt("K7QXM3PD", explicit), served, live, recent) == expected


async def test_a_code_pairs_one_chat_once(store: Store, settings: Settings) -> None:
    await store.save_group(Group(folder="work", name="work"))
    await store.save_group(Group(folder="other", name="other", chats=("tg:-5",)))
    new = await store.create_pair_code("work", NOW)
    code = normalise_code(new.code)
    assert new.expires_ms == NOW + TTL_MS
    assert (await store.redeem_pair_code("ABCD2345", "tg:7", "tg:7", NOW)).outcome == "wrong"
    held = await store.redeem_pair_code(code, "tg:-5", "tg:8", NOW)  # other's chat: refused
    assert (held.outcome, held.folder) == ("held", "other")
    nick = await store.redeem_pair_code(code, "xmpp:r@muc.example.org", "xmpp:r@muc/x", NOW)
    assert nick.outcome == "nobody"  # a room nick cannot be allowed; the code stays unused
    paired = await store.redeem_pair_code(code, "tg:7", "tg:7", NOW + 1)
    assert (paired.outcome, paired.folder) == ("paired", "work")
    work = await store.group("work")
    assert work is not None and work.chats == ("tg:7",) and work.allowed_senders == ("tg:7",)
    assert (await store.redeem_pair_code(code, "tg:9", "tg:9", NOW + 2)).outcome == "wrong"
    assert await store.pairing_open_until(NOW + 2) is None
    assert await store.pair_attempts("tg:7", NOW + 2) == 2
    assert await store.pair_attempts("tg:7", NOW + HOUR_MS + 1) == 0
    # expired: a code made 10 minutes and 1 ms ago
    old = normalise_code((await store.create_pair_code("work", NOW - TTL_MS - 1)).code)
    assert (await store.redeem_pair_code(old, "tg:10", "tg:10", NOW)).outcome == "wrong"
    for _ in range(5):
        await store.create_pair_code("work", NOW)
    with pytest.raises(StoreError, match="5 pairing codes are live"):
        await store.create_pair_code("work", NOW)


async def test_two_processes_racing_for_one_code_pair_one_chat(
    store: Store, settings: Settings
) -> None:
    await store.save_group(Group(folder="work", name="work"))
    code = normalise_code((await store.create_pair_code("work", NOW)).code)
    other = await Store.open(settings.layout.db)  # a second connection, as another process
    try:
        results = await asyncio.gather(
            store.redeem_pair_code(code, "tg:1", "tg:1", NOW),
            other.redeem_pair_code(code, "tg:2", "tg:2", NOW),
        )
    finally:
        await other.close()
    assert sorted(r.outcome for r in results) == ["paired", "wrong"]


def message(chat: str, sender: str, text: str, private: bool = True) -> InboundMessage:
    return InboundMessage(
        chat_id=chat,
        platform_id=uuid.uuid4().hex,
        sender_id=sender,
        sender_name="Bob",
        text=text,
        ts_ms=NOW,
        is_group_chat=not private,
    )


async def outbox(store: Store) -> list[tuple[str, str, str]]:
    rows = await store._all("SELECT folder, chat_id, text FROM outbox ORDER BY id")
    return [(str(r[0]), str(r[1]), str(r[2])) for r in rows]


async def test_the_inbound_step_answers_and_limits(store: Store, settings: Settings) -> None:
    replies: list[None] = []
    ingest = Ingest(
        store,
        welcome=Welcome("Andy", "@Andy", ("tg:1",)),
        reply=lambda: replies.append(None),
        clock=lambda: NOW,
    )
    await store.save_group(Group(folder="work", name="work", chats=("tg:-100",)))
    code = (await store.create_pair_code("work", NOW)).code
    # a stranger's private chat: wrong codes, answered once; then the limit, then the code
    for wrong in ("pair ABCD-2345", "EFGH-6789", "pair JKMN-2345", "PQRS-6789", "TUVW-2345"):
        await ingest.unserved(message("tg:2", "tg:2", wrong))
    await ingest.unserved(message("tg:2", "tg:2", code))  # the sixth try: not even checked
    assert await store.folder_of_chat("tg:2") is None
    assert [t for _, _, t in await outbox(store)] == [
        "That code is not valid (wrong, used or expired). Ask the owner for a new one."
    ]
    # another stranger: a hint once, however often they write; then the code pairs them
    await ingest.unserved(message("tg:3", "tg:3", "hello?"))
    await ingest.unserved(message("tg:3", "tg:3", "anyone?"))
    await ingest.unserved(message("tg:3", "tg:3", f"/pair {code.lower()}"))
    rows = await outbox(store)
    assert len(rows) == 3 and rows[1][:2] == ("", "tg:3") and "nanoclaw pair GROUP" in rows[1][2]
    assert rows[2] == (
        "work",
        "tg:3",
        "Paired: this chat now talks to group work, and you "
        "(tg:3) may start a message with @Andy to wake me.",
    )
    assert await store.folder_of_chat("tg:3") == "work" and len(replies) == 3
    # a served group chat: an order number passes as a message while no code is live,
    # the paired person is allowed, a stranger in a group chat gets no hint
    assert await ingest.message(message("tg:-100", "tg:4", "AB12CD34", private=False))
    assert await ingest.message(message("tg:3", "tg:3", "@Andy hi"))
    assert len(await outbox(store)) == 3
    assert [m.text for m in await store.messages_for_folder("work", 0)] == ["AB12CD34", "@Andy hi"]
    # the code never reached the store
    texts = await store._all("SELECT text FROM messages")
    assert not any(code.replace("-", "") in str(t[0]).upper().replace("-", "") for t in texts)


def test_nanoclaw_pair_prints_a_code_the_daemon_accepts(home: Path, settings: Settings) -> None:
    proc = run_cli(home, "pair", "work")
    assert proc.returncode == 0, proc.stderr
    assert "created group work" in proc.stdout
    code = next(w for w in proc.stdout.split() if len(w) == 9 and w[4] == "-")
    assert (home / "groups" / "work").is_dir()

    async def redeem_and_fill() -> None:
        store = await Store.open(settings.layout.db)
        try:
            now = now_ms()
            done = await store.redeem_pair_code(normalise_code(code), "tg:5", "tg:5", now)
            assert (done.outcome, done.folder) == ("paired", "work")
            for _ in range(5):
                await store.create_pair_code("work", now)
        finally:
            await store.close()

    asyncio.run(redeem_and_fill())
    again = run_cli(home, "pair", "work")
    assert again.returncode == 1 and "5 pairing codes are live already" in again.stderr
    bad = run_cli(home, "pair", "Not/A/Group")
    assert bad.returncode == 2 and "use a-z" in bad.stderr


@pytest.fixture
def tg() -> Iterator[FakeTelegram]:
    with FakeTelegram() as server:
        yield server


@pytest_asyncio.fixture
async def bot(home: Path, fake: FakeAnthropic, tg: FakeTelegram) -> AsyncIterator[Running]:
    """The daemon with Telegram; TELEGRAM_ALLOWED_CHAT_IDS lists one chat, not the strangers'."""
    settings = settings_for(
        home,
        fake.base_url,
        TELEGRAM_BOT_TOKEN=tg.token,
        TELEGRAM_API_URL=tg.base_url,
        TELEGRAM_ALLOWED_CHAT_IDS="-1001",
        ALLOWED_SENDERS="tg:111",
    )
    channel = TelegramChannel(settings, settings.layout.store / "telegram")
    running, task = await start_core(settings, channel)
    yield running
    await stop_core(running, task)


def private(chat: int) -> MsgOpts:
    """A private chat with a stranger whose user id is the chat's id."""
    return {"chat_type": "private", "user_id": chat, "first_name": f"User{chat}"}


async def test_pairing_a_strangers_private_chat(bot: Running, tg: FakeTelegram, home: Path) -> None:
    """Issue 13, item 11, over the fake Bot API: `nanoclaw pair` → a code → a chat."""
    proc = await asyncio.to_thread(run_cli, home, "pair", "work")
    assert proc.returncode == 0, proc.stderr
    code = next(w for w in proc.stdout.split() if len(w) == 9 and w[4] == "-")
    bob = 222
    for text in ("hello?", "anyone there?", "pair ABCD-2345", "EFGH-6789", code):
        tg.push_update(tg.text_message(bob, text, **private(bob)))
    sent = await tg.await_sent(3, timeout=30)
    hint, wrong, paired = (s.visible for s in sent[:3])
    assert "nanoclaw pair GROUP" in hint and f"tg:{bob}" in hint  # told once, not twice
    assert wrong.startswith("That code is not valid")  # answered once in the hour
    assert paired == (
        f"Paired: this chat now talks to group work, and you (tg:{bob}) may start a message "
        "with @Andy to wake me."
    )
    work = await bot.store.group("work")
    assert work is not None and work.chats == (f"tg:{bob}",)
    assert work.allowed_senders == (f"tg:{bob}",)
    assert await bot.store.count_messages_for_folder("work", 0) == 0  # the code is not kept
    # served at once, and Bob may wake the agent there
    tg.push_update(tg.text_message(bob, "@Andy hi [[say: welcome Bob]]", **private(bob)))
    sent = await tg.await_sent(4, timeout=60)
    assert (sent[3].chat_id, sent[3].visible) == (bob, "welcome Bob")
    # the same code again, and an expired one, from two other strangers
    expired = await bot.store.create_pair_code("work", now_ms() - TTL_MS - 1)
    tg.push_update(tg.text_message(333, code, **private(333)))
    tg.push_update(tg.text_message(444, expired.code, **private(444)))
    sent = await tg.await_sent(6, timeout=30)
    assert [(s.chat_id, s.visible.split(" (")[0]) for s in sent[4:]] == [
        (333, "That code is not valid"),
        (444, "That code is not valid"),
    ]
    assert await bot.store.folder_of_chat("tg:333") is None
    await wait_for(lambda: _outbox_settled(bot), timeout=30)
    assert len(tg.sent) == 6


async def _outbox_settled(running: Running) -> bool:
    return await running.store._all("SELECT 1 FROM outbox WHERE status = 'pending'") == []
