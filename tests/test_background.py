"""Background: keyed tasks replace each other, close cancels all, failures are logged."""

from __future__ import annotations

import asyncio
import logging

import pytest

from nanoclaw.background import Background


async def test_keyed_task_replaces_the_previous_one() -> None:
    bg = Background("t")
    first_cancelled = asyncio.Event()

    async def first() -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            first_cancelled.set()
            raise

    bg.spawn(first(), key="k")
    await asyncio.sleep(0)
    bg.spawn(asyncio.sleep(60), key="k")
    await asyncio.wait_for(first_cancelled.wait(), 5)
    await bg.close()


async def test_close_cancels_everything() -> None:
    bg = Background("t")
    started = asyncio.Event()
    cancelled: list[bool] = []

    async def forever() -> None:
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    bg.spawn(forever())
    bg.spawn(forever(), key="typing")
    await asyncio.wait_for(started.wait(), 5)
    await asyncio.sleep(0)
    await asyncio.wait_for(bg.close(), 5)
    assert cancelled == [True, True]


async def test_failure_is_logged_with_the_task_name(caplog: pytest.LogCaptureFixture) -> None:
    bg = Background("owner")

    async def boom() -> None:
        raise RuntimeError("kaput")

    with caplog.at_level(logging.ERROR):
        bg.spawn(boom(), key="job")
        for _ in range(5):
            await asyncio.sleep(0)
    assert any("owner:job" in r.getMessage() and r.exc_info for r in caplog.records)
