"""The Waker: a wake-up cuts the wait short, none is lost, and cancellation always wins."""

from __future__ import annotations

import asyncio

import pytest

from nanoclaw.waker import Waker


async def test_a_wake_up_ends_the_wait_and_one_set_before_it_counts() -> None:
    waker = Waker()
    assert await waker.wait(0.01) is False
    waker.set()  # while the loop was busy: the next wait returns at once
    assert await asyncio.wait_for(waker.wait(30), 5) is True
    waiting = asyncio.create_task(waker.wait(30))
    await asyncio.sleep(0)
    waker.set()
    assert await asyncio.wait_for(waiting, 5) is True


@pytest.mark.parametrize("order", ["set-then-cancel", "cancel-then-set"])
async def test_a_cancel_in_the_same_step_as_a_wake_up_is_not_swallowed(order: str) -> None:
    """On 3.11 `asyncio.wait_for` returned the result and dropped the cancel: the
    orchestrator's loop went on after shutdown and `nanoclaw chat` never exited."""
    waker = Waker()
    waiting = asyncio.create_task(waker.wait(30))
    for _ in range(3):  # settled inside its wait
        await asyncio.sleep(0)
    if order == "set-then-cancel":
        waker.set()
        waiting.cancel()
    else:
        waiting.cancel()
        waker.set()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(waiting, 5)
    assert waiting.cancelled()
