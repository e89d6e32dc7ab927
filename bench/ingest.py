"""Figure 5: inbound ingest into a real SQLite store, one message per `Ingest.message` call.

The figure is 64 producers calling side by side, as the channels of a busy daemon do (their
calls share commits); one producer alone and the batched `Store.add_messages` are shown
for reference. The chat belongs to a registered group, so every message counts.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from bench.home import terminal_message
from bench.report import Figure
from nanoclaw.channel import Ingest
from nanoclaw.models import Group, InboundMessage
from nanoclaw.store.messages import Store

INGEST_TARGET = 5000.0
PRODUCERS = 64
BATCH = 100
CHAT = "term:bench"


def _messages(count: int) -> list[InboundMessage]:
    return [terminal_message(f"message {i} for the ingest benchmark", CHAT) for i in range(count)]


async def _producer(ingest: Ingest, feed: Iterator[InboundMessage], deadline: float) -> int:
    done = 0
    for msg in feed:  # the producers share one iterator: each message is taken once
        if await ingest.message(msg) is None:
            raise RuntimeError("a fresh message was refused as a duplicate")
        done += 1
        if done % 16 == 0 and time.perf_counter() > deadline:
            break
    return done


async def _ingest_rate(
    store: Store, producers: int, seconds: float, limit: int
) -> tuple[float, int]:
    ingest = Ingest(store)
    feed = iter(_messages(limit))
    start = time.perf_counter()
    counts = await asyncio.gather(
        *(_producer(ingest, feed, start + seconds) for _ in range(producers))
    )
    return sum(counts) / (time.perf_counter() - start), sum(counts)


async def _batched_rate(store: Store, seconds: float, limit: int) -> tuple[float, int]:
    batched = _messages(limit)
    done = 0
    start = time.perf_counter()
    deadline = start + seconds
    while done < len(batched) and time.perf_counter() < deadline:
        ids = await store.add_messages(batched[done : done + BATCH])
        if None in ids:
            raise RuntimeError("a fresh message was refused as a duplicate")
        done += len(ids)
    return done / (time.perf_counter() - start), done


async def _rates(seconds: float, limit: int) -> dict[str, tuple[float, int]]:
    """Rate and count per phase; each phase stops at `seconds` or `limit` messages."""
    with tempfile.TemporaryDirectory(prefix="nanoclaw-bench-") as tmp:
        store = await Store.open(Path(tmp) / "store" / "nanoclaw.db")
        try:
            await store.save_group(Group(folder="bench", name="bench", chats=(CHAT,)))
            return {
                "single": await _ingest_rate(store, 1, seconds, limit),
                "concurrent": await _ingest_rate(store, PRODUCERS, seconds, limit),
                "batched": await _batched_rate(store, seconds, limit),
            }
        finally:
            await store.close()


def ingest(seconds: float, limit: int) -> list[Figure]:
    rates = asyncio.run(_rates(seconds, limit))
    many, n_many = rates["concurrent"]
    single, n_single = rates["single"]
    batched, n_batched = rates["batched"]
    return [
        Figure(
            "ingest",
            f"inbound ingest ({PRODUCERS} producers)",
            many,
            "msg/s",
            f">= {INGEST_TARGET:,.0f} msg/s",
            many >= INGEST_TARGET,
            extra={"messages": n_many, "us_per_msg": 1e6 / many, "producers": PRODUCERS},
            note="Ingest.message called side by side; committed in groups",
        ),
        Figure(
            "ingest_single",
            "  one producer",
            single,
            "msg/s",
            "(reference)",
            None,
            extra={"messages": n_single, "us_per_msg": 1e6 / single},
        ),
        Figure(
            "ingest_batched",
            f"  batched add_messages({BATCH})",
            batched,
            "msg/s",
            "(reference)",
            None,
            extra={"messages": n_batched, "us_per_msg": 1e6 / batched},
        ),
    ]
