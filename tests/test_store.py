"""The SQLite store and its ledger, against a real database file in tmp_path.

No mocks: every test opens the file with `Store.open`, writes through the public methods
and reads back what a second component (or a second process) would see.
"""

from __future__ import annotations

import asyncio
import gc
import sqlite3
import warnings
from pathlib import Path
from typing import Any

import pytest

from nanoclaw.errors import StoreError
from nanoclaw.models import Group, InboundMessage, Reply, Usage
from nanoclaw.store import schema
from nanoclaw.store.db import now_ms
from nanoclaw.store.messages import Store

T0 = 1_700_000_000_000


def inbound(
    chat_id: str, platform_id: str, text: str = "hi", ts_ms: int = T0, **kw: Any
) -> InboundMessage:
    return InboundMessage(
        chat_id=chat_id,
        platform_id=platform_id,
        sender_id=kw.pop("sender_id", "tg:1"),
        sender_name=kw.pop("sender_name", "alice"),
        text=text,
        ts_ms=ts_ms,
        **kw,
    )


async def add_group(store: Store, folder: str, *chats: str, **kw: Any) -> Group:
    group = Group(folder=folder, name=folder, chats=chats, **kw)
    await store.save_group(group)
    return group


def raw(path: Path, sql: str, args: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
    """Read the file with the plain sqlite3 module, as an outside process would."""
    con = sqlite3.connect(path)
    try:
        return con.execute(sql, args).fetchall()
    finally:
        con.close()


# migrations and connection


async def test_migrations_set_user_version(store: Store, db_path: Path) -> None:
    assert raw(db_path, "PRAGMA user_version") == [(len(schema.MIGRATIONS),)]
    tables = {r[0] for r in raw(db_path, "SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"chats", "messages", "groups", "group_chats", "cursors", "runs", "outbox"} <= tables


async def test_reopen_is_a_noop_and_keeps_data(db_path: Path) -> None:
    first = await Store.open(db_path)
    await first.add_message(inbound("tg:-1", "p1"))
    await first.close()
    second = await Store.open(db_path)
    try:
        assert await second.max_message_id() == 1
    finally:
        await second.close()
    assert raw(db_path, "PRAGMA user_version") == [(len(schema.MIGRATIONS),)]


async def test_newer_schema_is_refused(db_path: Path) -> None:
    await (await Store.open(db_path)).close()
    con = sqlite3.connect(db_path)
    con.execute(f"PRAGMA user_version={len(schema.MIGRATIONS) + 1}")
    con.commit()
    con.close()
    with warnings.catch_warnings():
        # the leaked connection (see the next test) is reclaimed here, while the loop runs
        warnings.simplefilter("ignore", ResourceWarning)
        with pytest.raises(StoreError, match="newer"):
            await Store.open(db_path)
        gc.collect()


async def test_failed_open_closes_its_connection(db_path: Path) -> None:
    await (await Store.open(db_path)).close()
    con = sqlite3.connect(db_path)
    con.execute(f"PRAGMA user_version={len(schema.MIGRATIONS) + 1}")
    con.commit()
    con.close()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(StoreError) as info:
            await Store.open(db_path)
        del info
        gc.collect()
    unclosed = [w for w in caught if "deleted before being closed" in str(w.message)]
    assert unclosed == []


async def test_wal_journal_mode(store: Store, db_path: Path) -> None:
    assert raw(db_path, "PRAGMA journal_mode") == [("wal",)]


# messages and chats


async def test_redelivered_message_returns_none_and_is_stored_once(
    store: Store, db_path: Path
) -> None:
    first = await store.add_message(inbound("tg:-1", "42", "hello"))
    again = await store.add_message(inbound("tg:-1", "42", "hello (edited)"))
    other_chat = await store.add_message(inbound("tg:-2", "42", "same id, other chat"))
    assert first is not None
    assert again is None
    assert other_chat is not None and other_chat != first
    rows = raw(db_path, "SELECT chat_id, text FROM messages ORDER BY id")
    assert rows == [("tg:-1", "hello"), ("tg:-2", "same id, other chat")]


async def test_add_messages_batch_mixes_new_and_duplicate(store: Store) -> None:
    await store.add_message(inbound("tg:-1", "a"))
    ids = await store.add_messages(
        [inbound("tg:-1", "b"), inbound("tg:-1", "a"), inbound("tg:-1", "c")]
    )
    assert ids[1] is None
    assert ids[0] is not None and ids[2] is not None and ids[0] < ids[2]


async def test_record_chat_keeps_every_chat_and_lists_unregistered(store: Store) -> None:
    await store.record_chat("tg:-1", "family", True, T0)
    await store.record_chat("xmpp:alice@example.org", "alice", False, T0 + 10)
    await store.record_chat("tg:-1", "", True, T0 + 20)  # empty name keeps the old one
    await add_group(store, "fam", "tg:-1")
    chats = {c.chat_id: c for c in await store.chats()}
    assert set(chats) == {"tg:-1", "xmpp:alice@example.org"}
    assert chats["tg:-1"].name == "family"
    assert chats["tg:-1"].last_seen_ms == T0 + 20
    assert chats["tg:-1"].folder == "fam"
    assert chats["xmpp:alice@example.org"].folder is None
    assert chats["xmpp:alice@example.org"].is_group_chat is False


async def test_add_message_records_its_chat(store: Store) -> None:
    await store.add_message(inbound("mx:!room:example.org", "e1", chat_name="Room"))
    chats = await store.chats()
    assert [(c.chat_id, c.name, c.folder) for c in chats] == [
        ("mx:!room:example.org", "Room", None)
    ]


# groups and cursors


async def test_save_group_binds_chats_and_starts_cursor_at_newest(store: Store) -> None:
    await store.add_message(inbound("tg:-1", "old1"))
    old = await store.add_message(inbound("tg:-1", "old2"))
    await add_group(store, "work", "tg:-1", "tg:-2")
    assert await store.cursor("work") == old
    assert await store.folder_of_chat("tg:-2") == "work"
    assert await store.messages_for_folder("work", await store.cursor("work")) == []
    assert await store.folders_with_messages_after(await store.cursor("work")) == {}
    group = await store.group("work")
    assert group is not None and set(group.chats) == {"tg:-1", "tg:-2"}


async def test_save_group_again_does_not_move_cursor(store: Store) -> None:
    await add_group(store, "work", "tg:-1")
    new = await store.add_message(inbound("tg:-1", "p"))
    await add_group(store, "work", "tg:-1", network="full")
    assert await store.cursor("work") == 0
    assert new is not None
    group = await store.group("work")
    assert group is not None and group.network == "full"


async def test_group_settings_round_trip(store: Store) -> None:
    await add_group(
        store,
        "work",
        "tg:-1",
        trigger="@bot",
        requires_trigger=False,
        allowed_senders=("tg:7", "tg:8"),
        model="m",
    )
    group = await store.group("work")
    assert group == Group(
        folder="work",
        name="work",
        chats=("tg:-1",),
        trigger="@bot",
        requires_trigger=False,
        allowed_senders=("tg:7", "tg:8"),
        model="m",
    )
    assert [g.folder for g in await store.groups()] == ["work"]
    assert await store.remove_group("work") is True
    assert await store.group("work") is None
    assert await store.folder_of_chat("tg:-1") is None
    assert await store.remove_group("work") is False


async def test_provider_budget_and_vision_settings_round_trip(store: Store) -> None:
    """Migration 10's columns: each one saved and read back, and changed on a second save."""
    fields: dict[str, Any] = {
        "provider": "openai-compatible",
        "fallback_models": ("claude-haiku-4-5", "gpt-5-mini"),
        "daily_requests": 40,
        "daily_tokens": 0,
        "daily_cost": 2.5,
        "vision": False,
    }
    await add_group(store, "work", "tg:-1", **fields)
    group = await store.group("work")
    assert group is not None
    assert {k: getattr(group, k) for k in fields} == fields
    await add_group(store, "work", "tg:-1")  # back to the defaults
    again = await store.group("work")
    assert again is not None and again.provider is None and again.fallback_models == ()
    assert (again.daily_requests, again.daily_tokens, again.daily_cost) == (None, None, None)
    assert again.vision is True


async def test_advance_cursor_never_moves_backwards(store: Store) -> None:
    await add_group(store, "work", "tg:-1")
    await store.advance_cursor("work", 10)
    await store.advance_cursor("work", 5)
    assert await store.cursor("work") == 10
    await store.advance_cursor("work", 12)
    assert await store.cursor("work") == 12


async def test_folder_queries(store: Store) -> None:
    await add_group(store, "work", "tg:-1", "tg:-2")
    await add_group(store, "home", "tg:-3")
    ids: list[int] = []
    for i in range(5):
        msg_id = await store.add_message(inbound("tg:-1" if i % 2 else "tg:-2", f"w{i}", f"w{i}"))
        assert msg_id is not None
        ids.append(msg_id)
    home = await store.add_message(inbound("tg:-3", "h0", "h0"))
    await store.add_message(inbound("tg:-99", "x", "unregistered"))

    assert await store.folders_with_messages_after(0) == {"work": ids[-1], "home": home}
    assert await store.folders_with_messages_after(ids[-1]) == {"home": home}

    msgs = await store.messages_for_folder("work", 0)
    assert [m.text for m in msgs] == ["w0", "w1", "w2", "w3", "w4"]
    newest = await store.messages_for_folder("work", 0, limit=2)
    assert [m.text for m in newest] == ["w3", "w4"]
    after = await store.messages_for_folder("work", ids[1])
    assert [m.text for m in after] == ["w2", "w3", "w4"]

    assert await store.count_messages_for_folder("work", 0) == 5
    assert await store.count_messages_for_folder("work", ids[2]) == 2
    assert await store.count_messages_for_folder("home", 0) == 1


async def test_message_fields_round_trip(store: Store) -> None:
    await add_group(store, "work", "tg:-1")
    msg = inbound(
        "tg:-1",
        "p",
        "text",
        mentions_bot=True,
        reply_to_bot=True,
        reply_to_sender="Andy",
        reply_to_text="earlier",
    )
    msg_id = await store.add_message(msg)
    [got] = await store.messages_for_folder("work", 0)
    assert got.id == msg_id
    assert (got.mentions_bot, got.reply_to_bot) == (True, True)
    assert (got.reply_to_sender, got.reply_to_text) == ("Andy", "earlier")
    assert (got.sender_id, got.sender_name, got.ts_ms) == ("tg:1", "alice", T0)


async def test_default_chat(store: Store) -> None:
    assert await store.default_chat("work") is None
    await add_group(store, "work", "tg:-1", "tg:-2")
    assert await store.default_chat("work") == "tg:-1"
    await store.add_message(inbound("tg:-2", "a"))
    assert await store.default_chat("work") == "tg:-2"
    await store.add_message(inbound("tg:-1", "b"))
    assert await store.default_chat("work") == "tg:-1"


async def test_bind_chat_adds_once(store: Store) -> None:
    await add_group(store, "work", "tg:-1")
    await store.bind_chat("work", "term:work")
    group = await store.bind_chat("work", "term:work")
    assert group.chats == ("tg:-1", "term:work")
    stored = await store.group("work")
    assert stored is not None and set(stored.chats) == {"tg:-1", "term:work"}


# IPC names and outbox


async def test_record_ipc_is_idempotent_and_commits_reply_with_name(
    store: Store, db_path: Path
) -> None:
    name = "1700000000000-abcdef.json"
    assert await store.ipc_done("work", name) is False
    assert await store.record_ipc("work", name, "sent", Reply("tg:-1", "hello")) is True
    assert await store.record_ipc("work", name, "sent", Reply("tg:-1", "hello")) is False
    assert await store.ipc_done("work", name) is True
    assert await store.ipc_done("home", name) is False
    rows = raw(db_path, "SELECT folder, chat_id, text, ipc_name, status FROM outbox")
    assert rows == [("work", "tg:-1", "hello", name, "pending")]


async def test_record_ipc_without_reply_inserts_no_outbox_row(store: Store, db_path: Path) -> None:
    assert await store.record_ipc("work", "1700000000000-a.json", "memory updated") is True
    assert raw(db_path, "SELECT count(*) FROM outbox") == [(0,)]
    assert raw(db_path, "SELECT outcome FROM ipc_done") == [("memory updated",)]


async def test_claim_outbox_leases_rows(store: Store) -> None:
    await store.enqueue_reply("work", "tg:-1", "one")
    await store.enqueue_reply("work", "term:main", "two")
    await store.enqueue_reply("work", "tg:-2", "three")
    first = await store.claim_outbox(["tg"])
    assert [i.text for i in first] == ["one", "three"]
    assert all(i.attempts == 0 and i.chunks_sent == 0 for i in first)
    assert await store.claim_outbox(["tg"]) == []
    # the other channel's row was not touched by the tg claim
    assert [i.text for i in await store.claim_outbox(["term"])] == ["two"]
    assert await store.claim_outbox([]) == []


async def test_expired_lease_can_be_claimed_again(store: Store) -> None:
    await store.enqueue_reply("work", "tg:-1", "one")
    assert len(await store.claim_outbox(["tg"], lease_ms=-1)) == 1
    assert len(await store.claim_outbox(["tg"])) == 1


async def test_outbox_retry_schedules_in_the_future(store: Store, db_path: Path) -> None:
    await store.enqueue_reply("work", "tg:-1", "one")
    [item] = await store.claim_outbox(["tg"])
    before = now_ms()
    await store.outbox_retry(item.id, 30_000, "boom")
    [(attempts, next_ms, claimed, error, status)] = raw(
        db_path, "SELECT attempts, next_attempt_ms, claimed_until_ms, error, status FROM outbox"
    )
    assert attempts == 1
    assert next_ms >= before + 30_000
    assert (claimed, error, status) == (0, "boom", "pending")
    assert await store.claim_outbox(["tg"]) == []
    due = await store.next_outbox_due_ms(["tg"])
    assert due is not None and due >= before + 30_000
    assert await store.pending_outbox("tg:-1") == 1


async def test_outbox_progress_sent_and_failed(store: Store, db_path: Path) -> None:
    await store.enqueue_reply("work", "tg:-1", "one")
    await store.enqueue_reply("work", "tg:-1", "two")
    a, b = await store.claim_outbox(["tg"])
    await store.outbox_progress(a.id, 2)
    await store.outbox_sent(a.id)
    await store.outbox_failed(b.id, "chat gone")
    rows = raw(db_path, "SELECT text, status, chunks_sent, sent_ms IS NOT NULL, error FROM outbox")
    assert rows == [("one", "sent", 2, 1, ""), ("two", "failed", 0, 0, "chat gone")]
    assert await store.pending_outbox("tg:-1") == 0
    assert await store.next_outbox_due_ms(["tg"]) is None
    assert await store.claim_outbox(["tg"], lease_ms=-1) == []


async def test_retried_row_keeps_chunk_progress(store: Store) -> None:
    await store.enqueue_reply("work", "tg:-1", "long")
    [item] = await store.claim_outbox(["tg"])
    await store.outbox_progress(item.id, 3)
    await store.outbox_retry(item.id, -1, "later")
    [again] = await store.claim_outbox(["tg"])
    assert (again.id, again.chunks_sent, again.attempts) == (item.id, 3, 1)


# runs


async def test_runs_lifecycle(store: Store) -> None:
    run_id = await store.start_run("work", "message", 3, 7)
    assert [r.status for r in await store.runs("work")] == ["running"]
    await store.add_usage(run_id, Usage(1, 100, 20, 5, 3))
    await store.add_usage(run_id, Usage(1, 10, 2, 0, 0))
    await store.finish_run(run_id, "ok")
    [rec] = await store.runs("work")
    assert (rec.id, rec.status, rec.error) == (run_id, "ok", "")
    assert rec.ended_ms is not None and rec.ended_ms >= rec.started_ms
    assert rec.usage == Usage(2, 110, 22, 5, 3)


async def test_finish_run_caps_error(store: Store) -> None:
    run_id = await store.start_run("work", "message", None, None)
    await store.finish_run(run_id, "error", "x" * 5000)
    [rec] = await store.runs()
    assert rec.status == "error" and len(rec.error) == 2000


async def test_interrupt_stale_runs(store: Store) -> None:
    done = await store.start_run("work", "message", 1, 1)
    await store.finish_run(done, "ok")
    stale1 = await store.start_run("work", "message", 2, 2)
    stale2 = await store.start_run("home", "task", None, None)
    assert await store.interrupt_stale_runs() == 2
    status = {r.id: r.status for r in await store.runs(limit=10)}
    assert status == {done: "ok", stale1: "interrupted", stale2: "interrupted"}
    assert await store.interrupt_stale_runs() == 0
    assert [r.folder for r in await store.runs("home")] == ["home"]


async def test_texts_sent_by_unfinished_runs(store: Store) -> None:
    ok = await store.start_run("work", "message", 1, 5)
    await store.enqueue_reply("work", "tg:-1", "from the ok run", ok)
    await store.finish_run(ok, "ok")
    cut = await store.start_run("work", "message", 6, 9)
    await store.enqueue_reply("work", "tg:-1", "first", cut)
    await store.record_ipc("work", "1700000000000-b.json", "sent", Reply("tg:-1", "second", cut))
    await store.interrupt_stale_runs()
    other = await store.start_run("home", "message", 6, 9)
    await store.enqueue_reply("home", "tg:-3", "other group", other)

    assert await store.texts_sent_by_unfinished_runs("work", 5) == ["first", "second"]
    # a cursor already past the cut run's batch means nothing to repeat
    assert await store.texts_sent_by_unfinished_runs("work", 9) == []


# two processes on one file


async def test_two_connections_see_each_others_commits(db_path: Path) -> None:
    a = await Store.open(db_path)
    b = await Store.open(db_path)
    try:
        await add_group(a, "work", "tg:-1")
        msg_id = await b.add_message(inbound("tg:-1", "p1", "from b"))
        assert [m.text for m in await a.messages_for_folder("work", 0)] == ["from b"]
        assert await b.group("work") is not None
        await b.enqueue_reply("work", "tg:-1", "reply")
        [item] = await a.claim_outbox(["tg"])
        assert item.text == "reply"
        assert await b.claim_outbox(["tg"]) == []  # a's lease is visible to b
        await a.advance_cursor("work", msg_id or 0)
        assert await b.cursor("work") == msg_id
        assert await b.record_ipc("work", "1700000000000-c.json", "x") is True
        assert await a.record_ipc("work", "1700000000000-c.json", "x") is False
    finally:
        await a.close()
        await b.close()


async def test_transcript_interleaves_messages_and_sent_replies(store: Store) -> None:
    await store.save_group(Group(folder="work", name="work", chats=("term:work",)))
    await store.add_message(inbound("term:work", "a", "question", ts_ms=1_000))
    await store.enqueue_reply("work", "term:work", "answer")
    [item] = await store.claim_outbox(["term"])
    await store.outbox_sent(item.id)
    await store.enqueue_reply("work", "term:work", "not sent yet")
    said = await store.transcript("term:work", 10)
    assert said == [("alice", "question"), ("", "answer")]


async def test_a_read_waits_for_another_tasks_open_transaction(store: Store) -> None:
    """Every task shares one connection: a read must not see another task's transaction
    half done (it once saw a CLAUDE.md sync between its DELETE and its INSERT)."""
    await store.save_group(Group(folder="g", name="g"))
    reader: asyncio.Task[list[Group]] | None = None

    async def half_done() -> None:
        nonlocal reader
        async with store.transaction():
            await store._db.execute("DELETE FROM groups WHERE folder = 'g'")
            reader = asyncio.create_task(store.groups())
            await store._db.execute("SELECT 1")  # the reader runs meanwhile and reads (or waits)
            raise LookupError("rolled back: the group was never gone")

    with pytest.raises(LookupError):
        await half_done()
    assert reader is not None
    assert [g.folder for g in await reader] == ["g"]
