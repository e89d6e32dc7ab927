"""Group commit: `GroupCommit` with a flush the test controls, then `Store.add_message` called
side by side against a real database file, read back by a second sqlite3 connection.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from nanoclaw.models import InboundMessage
from nanoclaw.store.committer import GroupCommit, returned_ids, value_rows
from nanoclaw.store.messages import Store

T0 = 1_700_000_000_000


def inbound(chat_id: str, platform_id: str, text: str = "hi") -> InboundMessage:
    return InboundMessage(chat_id, platform_id, "tg:1", "alice", text, T0)


def raw(path: Path, sql: str, args: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
    con = sqlite3.connect(path)
    try:
        return con.execute(sql, args).fetchall()
    finally:
        con.close()


class Gated:
    """A flush that records each batch and, while `gate` is clear, holds it."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.entered = asyncio.Event()

    async def flush(self, items: list[int]) -> list[int | Exception]:
        self.batches.append(list(items))
        self.entered.set()
        await self.gate.wait()
        return [ValueError(f"bad {i}") if i < 0 else i * 10 for i in items]


async def _busy(commit: GroupCommit[int, int], flush: Gated) -> asyncio.Task[int]:
    """A first caller whose flush is held: whoever comes now is queued."""
    flush.gate.clear()
    first = asyncio.create_task(commit.submit(0))
    await asyncio.wait_for(flush.entered.wait(), 5)
    return first


# GroupCommit with a flush the test holds


async def test_a_lone_caller_is_flushed_alone() -> None:
    flush = Gated()
    commit = GroupCommit(flush.flush, 100)
    assert await commit.submit(1) == 10
    assert await commit.submit(2) == 20
    assert flush.batches == [[1], [2]]


async def test_callers_that_come_while_busy_share_one_flush_in_order() -> None:
    flush = Gated()
    commit = GroupCommit(flush.flush, 100)
    first = await _busy(commit, flush)
    rest = [asyncio.create_task(commit.submit(i)) for i in range(1, 31)]
    await asyncio.sleep(0)  # every caller has queued its item
    flush.gate.set()
    done = await asyncio.wait_for(asyncio.gather(first, *rest), 5)
    assert list(done) == [i * 10 for i in range(31)]
    assert flush.batches == [[0], list(range(1, 31))]


async def test_a_group_is_at_most_limit_items() -> None:
    flush = Gated()
    commit = GroupCommit(flush.flush, 4)
    first = await _busy(commit, flush)
    rest = [asyncio.create_task(commit.submit(i)) for i in range(1, 11)]
    await asyncio.sleep(0)
    flush.gate.set()
    await asyncio.wait_for(asyncio.gather(first, *rest), 5)
    assert flush.batches == [[0], [1, 2, 3, 4], [5, 6, 7, 8], [9, 10]]


async def test_an_item_that_fails_is_raised_to_its_caller_only() -> None:
    flush = Gated()
    commit = GroupCommit(flush.flush, 100)
    first = await _busy(commit, flush)
    good = asyncio.create_task(commit.submit(1))
    bad = asyncio.create_task(commit.submit(-1))
    also = asyncio.create_task(commit.submit(2))
    await asyncio.sleep(0)
    flush.gate.set()
    assert list(await asyncio.wait_for(asyncio.gather(first, good, also), 5)) == [0, 10, 20]
    with pytest.raises(ValueError, match="bad -1"):
        await bad
    with pytest.raises(ValueError, match="bad -5"):  # alone, too
        await commit.submit(-5)


async def test_a_cancelled_caller_strands_nobody() -> None:
    flush = Gated()
    commit = GroupCommit(flush.flush, 100)
    first = await _busy(commit, flush)
    queued = [asyncio.create_task(commit.submit(i)) for i in (1, 2, 3)]
    await asyncio.sleep(0)
    first.cancel()  # the caller whose flush runs now, and one that waits in the queue
    queued[1].cancel()
    flush.gate.set()
    assert list(await asyncio.wait_for(asyncio.gather(queued[0], queued[2]), 5)) == [10, 30]
    assert first.cancelled() and queued[1].cancelled()
    await commit.idle()
    assert await commit.submit(4) == 40  # and the commit is free again


async def test_idle_waits_for_the_queue() -> None:
    flush = Gated()
    commit = GroupCommit(flush.flush, 100)
    first = await _busy(commit, flush)
    rest = [asyncio.create_task(commit.submit(i)) for i in (1, 2)]
    await asyncio.sleep(0)
    flush.gate.set()
    await first
    await asyncio.wait_for(commit.idle(), 5)
    assert all(task.done() for task in rest)


def test_returned_ids_maps_rows_by_key_and_first_occurrence() -> None:
    keys = [("c", "1"), ("c", "2"), ("c", "1"), ("d", "1"), ("c", "3")]
    returned = [(12, "c", "3"), (10, "c", "1"), (11, "d", "1")]  # any order; ("c","2") was there
    assert returned_ids(keys, returned) == [10, None, None, 11, 12]


def test_value_rows() -> None:
    assert value_rows(2, 3) == "(?, ?, ?), (?, ?, ?)"


# the store: add_message called side by side


async def test_concurrent_add_message_each_caller_gets_its_own_committed_row(
    store: Store, db_path: Path
) -> None:
    async def add(i: int) -> int:
        msg_id = await store.add_message(inbound("tg:-1", f"p{i}", f"text {i}"))
        # Committed when the await returns: another connection already reads it.
        assert msg_id is not None
        assert raw(db_path, "SELECT platform_id, text FROM messages WHERE id = ?", (msg_id,)) == [
            (f"p{i}", f"text {i}")
        ]
        return msg_id

    ids = await asyncio.gather(*(add(i) for i in range(200)))
    assert len(set(ids)) == 200
    assert ids == sorted(ids)  # stored in the order the calls were made
    assert raw(db_path, "SELECT count(*) FROM messages") == [(200,)]


async def test_concurrent_duplicates_get_none_each_for_itself(store: Store, db_path: Path) -> None:
    before = await store.add_message(inbound("tg:-1", "old"))
    msgs = [
        inbound("tg:-1", "a"),
        inbound("tg:-1", "old", "re-delivered"),
        inbound("tg:-1", "b"),
        inbound("tg:-1", "a", "re-delivered in the same group"),
        inbound("tg:-2", "a", "same id, other chat"),
    ]
    ids = await asyncio.gather(*(store.add_message(m) for m in msgs))
    assert ids[1] is None and ids[3] is None
    assert None not in (ids[0], ids[2], ids[4])
    rows = raw(db_path, "SELECT id, chat_id, platform_id, text FROM messages ORDER BY id")
    assert [(r[1], r[2]) for r in rows] == [
        ("tg:-1", "old"),
        ("tg:-1", "a"),
        ("tg:-1", "b"),
        ("tg:-2", "a"),
    ]
    assert rows[0][0] == before and rows[1][0] == ids[0] and rows[1][3] == "hi"


async def test_a_bad_row_fails_only_its_own_caller(store: Store, db_path: Path) -> None:
    msgs = [inbound("tg:-1", f"p{i}") for i in range(10)]
    msgs[4] = inbound("tg:-1", "bad", "a lone surrogate \ud800 cannot be stored")
    msgs[7] = inbound("tg:-1", "p1", "a duplicate beside it")
    outcomes = await asyncio.gather(*(store.add_message(m) for m in msgs), return_exceptions=True)
    assert isinstance(outcomes[4], UnicodeEncodeError)
    assert outcomes[7] is None
    good = [o for i, o in enumerate(outcomes) if i not in (4, 7)]
    assert all(isinstance(o, int) for o in good) and len(set(good)) == 8
    stored = raw(db_path, "SELECT platform_id FROM messages ORDER BY id")
    assert [r[0] for r in stored] == [f"p{i}" for i in range(10) if i not in (4, 7)]
