"""The tape in a real SQLite store: the triggers that append messages, replies, runs and IPC
actions in their cause's commit, trust marks, FTS5 search, stats, pruning, and the upgrade
of a version-7 store."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from nanoclaw.errors import StoreError
from nanoclaw.models import Group, InboundMessage, Usage
from nanoclaw.retention import DAY_MS, Retention, cutoff_ms
from nanoclaw.store import schema
from nanoclaw.store.messages import Store
from nanoclaw.store.tape import TapeQueryError, percentile, tape_stats


def msg(chat: str, pid: str, sender: str, text: str, name: str = "") -> InboundMessage:
    return InboundMessage(
        chat_id=chat,
        platform_id=pid,
        sender_id=sender,
        sender_name=name or sender,
        text=text,
        ts_ms=1,
        chat_name="a chat",
        is_group_chat=True,
    )


async def with_group(store: Store) -> None:
    await store.save_group(
        Group(folder="work", name="Work", chats=("tg:1",), allowed_senders=("tg:9",))
    )
    await store.save_group(Group(folder="main", name="Main", chats=("term:main",)))


async def test_messages_are_marked_by_their_senders_trust(store: Store) -> None:
    await with_group(store)
    await store.trust_senders(["tg:7"])
    await store.add_message(msg("tg:1", "a", "tg:5", "from a stranger"))
    await store.add_message(msg("tg:1", "b", "tg:9", "from the group's allowed"))
    await store.add_message(msg("tg:1", "c", "tg:7", "from an allowed everywhere"))
    await store.add_message(msg("term:main", "d", "term:local", "from the owner's terminal"))
    await store.add_message(msg("tg:2", "e", "tg:9", "in a chat of no group"))
    events = await store.tape_recent(0)
    assert [(e.folder, e.kind, e.text, e.untrusted) for e in events] == [
        ("work", "message", "from a stranger", True),
        ("work", "message", "from the group's allowed", False),
        ("work", "message", "from an allowed everywhere", False),
        ("main", "message", "from the owner's terminal", False),
    ]
    assert events[0].chat_id == "tg:1" and events[0].detail == {"sender": "tg:5", "name": "tg:5"}
    await store.trust_senders([])  # a new ALLOWED_SENDERS replaces the old one
    await store.add_message(msg("tg:1", "f", "tg:7", "no longer allowed"))
    assert (await store.tape_recent(0))[-1].untrusted


async def test_runs_replies_and_ipc_actions_are_on_the_tape(store: Store) -> None:
    await with_group(store)
    first = await store.add_message(msg("tg:1", "a", "tg:9", "@Andy build it"))
    clean = await store.start_run("work", "message", first, first)
    await store.add_usage(clean, Usage(2, 100, 40, 1000, 10))
    await store.enqueue_reply("work", "tg:1", "built", clean)
    (item,) = await store.claim_outbox(["tg"])
    await store.outbox_sent(item.id)
    await store.record_ipc("work", "1-a.json", "rejected: not your chat")
    await store.record_ipc("work", "1-b.json", "memory updated")
    await store.finish_run(clean, "ok")
    tainted = await store.start_run("work", "message", first, first, tainted=True)
    await store.enqueue_reply("work", "tg:1", "words of a stranger", tainted)
    await store.enqueue_reply("work", "tg:1", "never arrives", tainted)
    sent, lost = await store.claim_outbox(["tg"])
    await store.outbox_sent(sent.id)
    await store.outbox_failed(lost.id, "chat gone")
    await store.finish_run(tainted, "failed", "agent crashed")
    await store.outbox_sent(sent.id)  # a repeat changes no status: no second event
    events = [e for e in await store.tape_recent(0) if e.kind != "message"]
    assert [(e.kind, e.run_id, e.text, e.untrusted) for e in events] == [
        ("run_start", clean, f"message run {clean}", False),
        ("reply", clean, "built", False),
        ("refusal", clean, "1-a.json: rejected: not your chat", False),
        ("ipc", clean, "1-b.json: memory updated", False),
        ("run_end", clean, f"run {clean} ok", False),
        ("run_start", tainted, f"message run {tainted} (untrusted senders in its prompt)", False),
        ("reply", tainted, "words of a stranger", True),
        ("error", tainted, "not delivered (chat gone): never arrives", True),
        ("run_end", tainted, f"run {tainted} failed: agent crashed", True),
    ]
    assert events[4].detail is not None
    assert events[4].detail["tokens"] == 150 and events[4].detail["status"] == "ok"


async def test_tape_event_records_what_no_table_holds(store: Store) -> None:
    await store.tape_event(
        "work", "tool", "npm run build", run_id=4, untrusted=True, detail={"exit": 1, "ms": 812}
    )
    await store.tape_event("work", "command", "/stop")
    tool, command = await store.tape_recent(0)
    assert (tool.kind, tool.run_id, tool.untrusted, tool.detail) == (
        "tool",
        4,
        True,
        {"exit": 1, "ms": 812},
    )
    assert (command.kind, command.text, command.untrusted, command.detail) == (
        "command",
        "/stop",
        False,
        {},
    )


async def test_search_is_full_text_and_per_group(store: Store) -> None:
    await with_group(store)
    await store.add_message(msg("tg:1", "a", "tg:9", "please deploy the website"))
    await store.add_message(msg("term:main", "b", "term:local", "deployment went fine"))
    await store.tape_event("work", "tool", "npm run build")
    assert [e.text for e in await store.tape_search("deploy*")] == [
        "please deploy the website",
        "deployment went fine",
    ]
    assert [e.folder for e in await store.tape_search("deploy*", "main")] == ["main"]
    assert [e.text for e in await store.tape_search('"run build"')] == ["npm run build"]
    assert await store.tape_search("website NOT deploy") == []
    for bad in ('"unclosed', "AND AND", "nope:word"):
        with pytest.raises(TapeQueryError):
            await store.tape_search(bad)


async def test_pruning_drops_old_events_and_their_index(store: Store, db_path: Path) -> None:
    for n in range(5):
        await store.tape_event("work", "tool", f"old step {n}")
    await store.tape_event("work", "tool", "recent step")
    with sqlite3.connect(db_path) as con:  # back-date the old ones: the store stamps now
        con.execute("UPDATE tape SET ts_ms = ts_ms - 40 * ? WHERE text LIKE 'old%'", (DAY_MS,))
    clock_s = (await store.tape_recent(0))[-1].ts_ms / 1000
    retention = Retention(store, 30, ["tg:1"], clock=lambda: clock_s)
    assert await retention.step() == 5
    assert [e.text for e in await store.tape_recent(0)] == ["recent step"]
    assert await store.tape_search("old") == []
    assert await store.tape_search("recent") != []
    assert await retention.step() == 0
    assert cutoff_ms(40 * DAY_MS, 30) == 10 * DAY_MS


async def test_prune_works_in_batches_past_one(store: Store) -> None:
    for n in range(2100):  # more than one PRUNE_BATCH
        await store.tape_event("work", "tool", f"step {n}")
    assert await store.prune_tape(10**15) == 2100
    assert await store.tape_recent(0) == []


async def test_stats_count_per_group_with_reply_times(store: Store, db_path: Path) -> None:
    await with_group(store)
    for n in range(3):
        m = await store.add_message(msg("tg:1", f"m{n}", "tg:9", f"question {n}"))
        run = await store.start_run("work", "message", m, m)
        await store.add_usage(run, Usage(1, 100, 10, 500, 5))
        await store.enqueue_reply("work", "tg:1", f"answer {n}", run)
        (item,) = await store.claim_outbox(["tg"])
        await store.outbox_sent(item.id)
        await store.finish_run(run, "ok" if n else "timeout")
    await store.tape_event("work", "tool", "ls")
    await store.add_message(msg("term:main", "x", "term:local", "unanswered"))
    with sqlite3.connect(db_path) as con:  # replies 1, 2 and 9 s after their questions
        for n, wait in enumerate((1000, 2000, 9000)):
            con.execute(
                "UPDATE tape SET ts_ms = (SELECT ts_ms FROM tape WHERE text = ?) + ? "
                "WHERE text = ?",
                (f"question {n}", wait, f"answer {n}"),
            )
    main, work = await store.tape_stats()
    assert (main.folder, main.messages, main.runs, main.p50_ms) == ("main", 1, 0, None)
    assert (work.messages, work.runs, work.tools, work.errors) == (3, 3, 1, 1)
    assert work.tokens == 3 * 115  # input + cache writes + output
    assert (work.p50_ms, work.p95_ms) == (2000, 9000)


def test_percentile_and_stats_folding_are_pure() -> None:
    assert percentile([], 50) is None
    assert percentile([5], 95) == 5
    assert percentile([4, 1, 3, 2], 50) == 2
    assert percentile(list(range(1, 101)), 95) == 95
    stats = tape_stats([("b", 1, 0, 0, 0), ("a", 2, 1, 3, 0)], [("a", 70)], [("a", 5), ("a", -1)])
    assert [(s.folder, s.tokens, s.p50_ms, s.p95_ms) for s in stats] == [
        ("a", 70, 0, 5),
        ("b", 0, None, None),
    ]


def test_statements_keep_a_triggers_body_whole() -> None:
    sql = (
        "CREATE TABLE t (x);\n"
        "CREATE TRIGGER g AFTER INSERT ON t BEGIN\n  SELECT 1;\n  SELECT 2;\nEND;\n"
    )
    assert list(schema.statements(sql)) == [
        "CREATE TABLE t (x);",
        "CREATE TRIGGER g AFTER INSERT ON t BEGIN\n  SELECT 1;\n  SELECT 2;\nEND;",
    ]


async def test_a_version_7_store_upgrades_and_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as con:
        for migration in schema.MIGRATIONS[:7]:
            for statement in schema.statements(migration):
                con.execute(statement)
        con.execute("PRAGMA user_version=7")
        con.execute("INSERT INTO groups (folder, name, created_ms) VALUES ('work', 'Work', 1)")
        con.execute("INSERT INTO group_chats (chat_id, folder) VALUES ('tg:1', 'work')")
        con.execute(
            "INSERT INTO messages (chat_id, platform_id, sender_id, text, ts_ms) "
            "VALUES ('tg:1', 'p', 'tg:5', 'before the tape', 1)"
        )
    store = await Store.open(path)
    try:
        assert await store.tape_recent(0) == []  # the tape starts at the upgrade
        await store.add_message(msg("tg:1", "q", "tg:5", "after the upgrade"))
        assert [e.text for e in await store.tape_recent(0)] == ["after the upgrade"]
        assert await store.max_message_id() == 2
    finally:
        await store.close()
    with sqlite3.connect(path) as con:
        assert con.execute("PRAGMA user_version").fetchone()[0] == len(schema.MIGRATIONS)
    with sqlite3.connect(path) as con:  # newer than this code: refused, not misread
        con.execute(f"PRAGMA user_version={len(schema.MIGRATIONS) + 1}")
    with pytest.raises(StoreError):
        await Store.open(path)
