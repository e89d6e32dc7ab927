"""Figure 5: inbound ingest into a real SQLite store, one message per `Ingest.message` call.

The chat belongs to a registered group, so every message is one the orchestrator would
count. The batched `Store.add_messages` rate is measured after it, for reference only.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

from bench.home import terminal_message
from bench.report import Figure
from nanoclaw.channel import Ingest
from nanoclaw.models import Group, InboundMessage
from nanoclaw.store.messages import Store

INGEST_TARGET = 5000.0
BATCH = 100
CHAT = "term:bench"


def _messages(count: int) -> list[InboundMessage]:
    return [terminal_message(f"message {i} for the ingest benchmark", CHAT) for i in range(count)]


async def _rates(seconds: float, limit: int) -> tuple[float, int, float, int]:
    """(per-call rate, count, batched rate, count); each phase stops at `seconds` or `limit`."""
    with tempfile.TemporaryDirectory(prefix="nanoclaw-bench-") as tmp:
        store = await Store.open(Path(tmp) / "store" / "nanoclaw.db")
        try:
            await store.save_group(Group(folder="bench", name="bench", chats=(CHAT,)))
            ingest = Ingest(store)
            single = _messages(limit)
            count = 0
            start = time.perf_counter()
            deadline = start + seconds
            for msg in single:
                if await ingest.message(msg) is None:
                    raise RuntimeError("a fresh message was refused as a duplicate")
                count += 1
                if count % 64 == 0 and time.perf_counter() > deadline:
                    break
            single_rate = count / (time.perf_counter() - start)

            batched = _messages(limit)
            done = 0
            start = time.perf_counter()
            deadline = start + seconds
            while done < len(batched) and time.perf_counter() < deadline:
                ids = await store.add_messages(batched[done : done + BATCH])
                if None in ids:
                    raise RuntimeError("a fresh message was refused as a duplicate")
                done += len(ids)
            batch_rate = done / (time.perf_counter() - start)
        finally:
            await store.close()
    return single_rate, count, batch_rate, done


def ingest(seconds: float, limit: int) -> list[Figure]:
    single, n_single, batched, n_batched = asyncio.run(_rates(seconds, limit))
    return [
        Figure(
            "ingest",
            "inbound ingest (Ingest.message)",
            single,
            "msg/s",
            f">= {INGEST_TARGET:,.0f} msg/s",
            single >= INGEST_TARGET,
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
