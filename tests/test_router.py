"""The router: reply splitting, backoff, and `deliver_once` over a real store and a test channel.

The channel below implements the `Channel` protocol and records every chunk it was asked
to send; it can be told to fail on its Nth call, which is how partial delivery is tested.
"""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from nanoclaw.channel import Channel, Inbound
from nanoclaw.errors import DeliveryError, FilesUnsupported, PermanentDeliveryError
from nanoclaw.router import MAX_BACKOFF_S, Router, backoff_s, split_text
from nanoclaw.store.db import now_ms
from nanoclaw.store.messages import Store


class RecordingChannel:
    """A `Channel` that records sends and raises `fail_with` on call number `fail_on`."""

    def __init__(self, name: str = "term", max_message_len: int = 20) -> None:
        self.name = name
        self.max_message_len = max_message_len
        self.sent: list[tuple[str, str]] = []
        self.keys: list[str] = []  # the idempotency key of every attempt, failed ones too
        self.calls = 0
        self.fail_on: int | None = None
        self.fail_with: BaseException = DeliveryError("channel down")
        self.files: list[tuple[str, str, bytes, str]] = []  # chat, name, content, caption
        self.files_supported = True

    async def start(self, inbound: Inbound) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def send(self, chat_id: str, text: str, key: str = "") -> None:
        self.calls += 1
        self.keys.append(key)
        if self.calls == self.fail_on:
            raise self.fail_with
        self.sent.append((chat_id, text))

    async def send_file(
        self, chat_id: str, path: Path, name: str, caption: str = "", key: str = ""
    ) -> None:
        self.calls += 1
        self.keys.append(key)
        if not self.files_supported:
            raise FilesUnsupported(f"{self.name} cannot carry files")
        if self.calls == self.fail_on:
            raise self.fail_with
        self.files.append((chat_id, name, path.read_bytes(), caption))

    async def set_typing(self, chat_id: str, typing: bool) -> None:
        pass

    def texts(self) -> list[str]:
        return [t for _, t in self.sent]


def squash(text: str) -> str:
    return re.sub(r"\s+", "", text)


# split_text

WORDS = " ".join(f"word{i}" for i in range(60))
PARAS = "First paragraph is here.\n\nSecond one follows.\nWith a second line.\n\nThird."


@pytest.mark.parametrize("text", [WORDS, PARAS, "x" * 95, "a " + "b" * 70 + " c", "short"])
@pytest.mark.parametrize("limit", [1, 7, 20, 33, 100])
def test_split_text_respects_limit_and_keeps_content(text: str, limit: int) -> None:
    chunks = split_text(text, limit)
    assert chunks
    assert all(0 < len(c) <= limit for c in chunks)
    assert squash("".join(chunks)) == squash(text)
    assert all(c == c.strip() for c in chunks)


def test_split_text_short_is_one_chunk() -> None:
    assert split_text("  hello world \n", 50) == ["hello world"]
    assert split_text("", 50) == []
    assert split_text(" \n ", 50) == []


def test_split_text_prefers_paragraphs() -> None:
    text = "aaaa aaaa aaaa\n\nbbbb\nbbbb bbbb"
    assert split_text(text, 25) == ["aaaa aaaa aaaa", "bbbb\nbbbb bbbb"]


def test_split_text_then_lines() -> None:
    text = "aaaa aaaa aaaa\nbbbb bbbb bbbb"
    assert split_text(text, 20) == ["aaaa aaaa aaaa", "bbbb bbbb bbbb"]


def test_split_text_then_spaces() -> None:
    assert split_text("aaaa bbbb cccc dddd", 10) == ["aaaa bbbb", "cccc dddd"]


def test_split_text_paragraph_too_early_falls_back_to_line() -> None:
    # the only blank line is in the first third of the window: a line break is preferred
    text = "ab\n\ncccccccccccccc\ndddddd"
    assert split_text(text, 20) == ["ab\n\ncccccccccccccc", "dddddd"]


def test_split_text_hard_cuts_a_long_word() -> None:
    assert split_text("x" * 25, 10) == ["x" * 10, "x" * 10, "x" * 5]
    chunks = split_text("see https://example.org/" + "p" * 50, 20)
    assert all(len(c) <= 20 for c in chunks)
    assert "".join(chunks) == "seehttps://example.org/" + "p" * 50


# backoff


def test_backoff_grows_and_is_capped() -> None:
    assert [backoff_s(n) for n in range(4)] == [1.0, 2.0, 4.0, 8.0]
    assert backoff_s(30) == MAX_BACKOFF_S
    assert backoff_s(3, retry_after=42.0) == 42.0
    assert backoff_s(3, retry_after=0) == 0
    assert backoff_s(3, retry_after=10**9) == MAX_BACKOFF_S * 4
    assert backoff_s(2, retry_after=-5) == 4.0


# Router.deliver_once


def outbox(db_path: Path) -> list[tuple[Any, ...]]:
    """Every outbox row, read by a plain sqlite3 connection as another process would."""
    con = sqlite3.connect(db_path)
    try:
        return con.execute(
            "SELECT id, chat_id, status, attempts, chunks_sent, next_attempt_ms, error "
            "FROM outbox ORDER BY id"
        ).fetchall()
    finally:
        con.close()


def make_due(db_path: Path) -> None:
    """What the passing of time does to a retried row: it becomes due."""
    con = sqlite3.connect(db_path)
    try:
        con.execute("UPDATE outbox SET next_attempt_ms = 0 WHERE status = 'pending'")
        con.commit()
    finally:
        con.close()


LONG = " ".join(f"part{i:02d}" for i in range(12))  # 83 characters


def test_recording_channel_is_a_channel() -> None:
    assert isinstance(RecordingChannel(), Channel)


async def test_long_reply_arrives_as_ordered_chunks(store: Store, db_path: Path) -> None:
    channel = RecordingChannel()
    router = Router(store, {"term": channel}, 0.05)
    await store.enqueue_reply("main", "term:main", LONG)
    assert await router.deliver_once() == 1
    expected = split_text(LONG, 20)
    assert len(expected) > 3
    assert channel.sent == [("term:main", c) for c in expected]
    assert " ".join(channel.texts()) == LONG
    [row] = outbox(db_path)
    assert row[2] == "sent"
    assert await router.deliver_once() == 0
    assert len(channel.sent) == len(expected)


async def test_several_rows_delivered_in_order(store: Store) -> None:
    channel = RecordingChannel(max_message_len=100)
    router = Router(store, {"term": channel}, 0.05)
    for text in ("one", "two", "three"):
        await store.enqueue_reply("main", "term:main", text)
    assert await router.deliver_once() == 3
    assert channel.texts() == ["one", "two", "three"]


async def test_failure_midway_resumes_without_resending(store: Store, db_path: Path) -> None:
    channel = RecordingChannel()
    channel.fail_on = 3
    router = Router(store, {"term": channel}, 0.05)
    await store.enqueue_reply("main", "term:main", LONG)
    chunks = split_text(LONG, 20)

    assert await router.deliver_once() == 0
    assert channel.texts() == chunks[:2]
    [(_, _, status, attempts, chunks_sent, next_ms, error)] = outbox(db_path)
    assert (status, attempts, chunks_sent, error) == ("pending", 1, 2, "channel down")
    assert next_ms > now_ms()  # not due yet: the router waits before retrying
    assert await router.deliver_once() == 0
    assert channel.texts() == chunks[:2]

    make_due(db_path)
    assert await router.deliver_once() == 1
    assert channel.texts() == chunks  # every chunk exactly once, in order
    [(_, _, status, *_)] = outbox(db_path)
    assert status == "sent"


async def test_failure_on_first_chunk_retries_from_the_start(store: Store, db_path: Path) -> None:
    channel = RecordingChannel()
    channel.fail_on = 1
    channel.fail_with = RuntimeError("socket closed")  # a plain error is retried too
    router = Router(store, {"term": channel}, 0.05)
    await store.enqueue_reply("main", "term:main", LONG)
    assert await router.deliver_once() == 0
    [(_, _, status, attempts, chunks_sent, _, error)] = outbox(db_path)
    assert (status, attempts, chunks_sent, error) == ("pending", 1, 0, "socket closed")
    make_due(db_path)
    assert await router.deliver_once() == 1
    assert channel.texts() == split_text(LONG, 20)


async def test_retry_after_is_respected(store: Store, db_path: Path) -> None:
    channel = RecordingChannel()
    channel.fail_on = 1
    channel.fail_with = DeliveryError("flood wait", retry_after=120)
    router = Router(store, {"term": channel}, 0.05)
    await store.enqueue_reply("main", "term:main", "hi")
    before = now_ms()
    assert await router.deliver_once() == 0
    after = now_ms()
    [(_, _, _, _, _, next_ms, _)] = outbox(db_path)
    assert before + 120_000 <= next_ms <= after + 120_000
    assert await store.next_outbox_due_ms(["term"]) == next_ms


async def test_backoff_grows_with_attempts(store: Store, db_path: Path) -> None:
    channel = RecordingChannel()
    channel.fail_on = 1
    router = Router(store, {"term": channel}, 0.05)
    await store.enqueue_reply("main", "term:main", "hi")
    assert await router.deliver_once() == 0
    make_due(db_path)
    channel.calls = 0
    before = now_ms()
    assert await router.deliver_once() == 0
    [(_, _, _, attempts, _, next_ms, _)] = outbox(db_path)
    assert attempts == 2
    assert next_ms >= before + int(backoff_s(1) * 1000)


async def test_permanent_error_marks_row_failed(store: Store, db_path: Path) -> None:
    channel = RecordingChannel()
    channel.fail_on = 2
    channel.fail_with = PermanentDeliveryError("bot was kicked")
    router = Router(store, {"term": channel}, 0.05)
    await store.enqueue_reply("main", "term:main", LONG)
    await store.enqueue_reply("main", "term:main", "next")
    assert await router.deliver_once() == 1
    rows = outbox(db_path)
    assert [(r[2], r[6]) for r in rows] == [("failed", "bot was kicked"), ("sent", "")]
    assert channel.texts() == [split_text(LONG, 20)[0], "next"]
    make_due(db_path)
    assert await router.deliver_once() == 0
    assert await store.next_outbox_due_ms(["term"]) is None


async def test_rows_of_other_channels_untouched(store: Store, db_path: Path) -> None:
    channel = RecordingChannel()
    router = Router(store, {"term": channel}, 0.05)
    await store.enqueue_reply("work", "tg:-100", "for telegram")
    await store.enqueue_reply("work", "xmpp:room@conference.example.org", "for xmpp")
    await store.enqueue_reply("main", "term:main", "for terminal")
    assert await router.deliver_once() == 1
    assert channel.texts() == ["for terminal"]
    rows = {r[1]: r for r in outbox(db_path)}
    for chat in ("tg:-100", "xmpp:room@conference.example.org"):
        _, _, status, attempts, chunks_sent, next_ms, error = rows[chat]
        assert (status, attempts, chunks_sent, next_ms, error) == ("pending", 0, 0, 0, "")
    # not leased either: the channel's own router can take them at once
    tg = RecordingChannel("tg")
    assert await Router(store, {"tg": tg}, 0.05).deliver_once() == 1
    assert tg.texts() == ["for telegram"]


async def test_two_routers_on_one_file_send_once(tmp_path: Path) -> None:
    a = await Store.open(tmp_path / "nanoclaw.db")
    b = await Store.open(tmp_path / "nanoclaw.db")
    try:
        ca, cb = RecordingChannel(max_message_len=100), RecordingChannel(max_message_len=100)
        for i in range(5):
            await a.enqueue_reply("main", "term:main", f"r{i}")
        sent = await Router(a, {"term": ca}, 0.05).deliver_once()
        sent += await Router(b, {"term": cb}, 0.05).deliver_once()
        assert sent == 5
        assert sorted(ca.texts() + cb.texts()) == [f"r{i}" for i in range(5)]
    finally:
        await a.close()
        await b.close()


async def test_typing_ignores_unknown_channel_and_errors(store: Store) -> None:
    class Failing(RecordingChannel):
        async def set_typing(self, chat_id: str, typing: bool) -> None:
            self.calls += 1
            raise RuntimeError("no typing here")

    channel = Failing()
    router = Router(store, {"term": channel}, 0.05)
    await router.typing("tg:-1", True)
    await router.typing("term:main", True)
    assert channel.calls == 1


async def test_idempotency_key_is_stable_across_retries_of_a_chunk(
    store: Store, db_path: Path
) -> None:
    channel = RecordingChannel()
    channel.fail_on = 2  # the second chunk fails once
    await store.enqueue_reply("main", "term:main", LONG)
    router = Router(store, {"term": channel}, poll_s=1.0)
    await router.deliver_once()
    make_due(db_path)
    await router.deliver_once()
    first, failed, retried, *rest = channel.keys
    assert failed == retried  # the same chunk, the same key
    assert len({first, failed, *rest}) == 2 + len(rest)  # different chunks, different keys
    assert all(k.startswith("nanoclaw-") for k in channel.keys)
