"""The per-group queue: concurrency cap, FIFO between groups, one follow-up run, retries.

Runs are held open by events the test releases; every wait has a timeout so a hang fails
fast, and no sleep stands in for an assertion.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from nanoclaw.queue import GroupQueue

TIMEOUT = 5


class Runs:
    """The `run_group` callable: records starts, holds each run until released."""

    def __init__(self, results: dict[str, list[bool | Exception]] | None = None) -> None:
        self.results = results or {}
        self.order: list[str] = []
        self.active = 0
        self.peak = 0
        self.cancelled: list[str] = []
        self.hold = True
        self._started: asyncio.Queue[str] = asyncio.Queue()
        self._gates: dict[str, asyncio.Event] = {}

    async def __call__(self, folder: str) -> bool:
        self.order.append(folder)
        self.active += 1
        self.peak = max(self.peak, self.active)
        gate = self._gates[folder] = asyncio.Event()
        self._started.put_nowait(folder)
        try:
            if self.hold:
                await gate.wait()
        except asyncio.CancelledError:
            self.cancelled.append(folder)
            raise
        finally:
            self.active -= 1
        outcomes = self.results.get(folder)
        outcome = outcomes.pop(0) if outcomes else True
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    async def started(self) -> str:
        return await asyncio.wait_for(self._started.get(), TIMEOUT)

    def release(self, folder: str) -> None:
        self._gates[folder].set()

    def nothing_started(self) -> bool:
        return self._started.empty()


@pytest.fixture
async def make_queue() -> AsyncIterator[Callable[..., GroupQueue]]:
    """Build queues that are shut down after the test, so no run outlives its loop."""
    made: list[GroupQueue] = []

    def make(*args: Any, **kw: Any) -> GroupQueue:
        made.append(GroupQueue(*args, **kw))
        return made[-1]

    yield make
    for queue in made:
        await asyncio.wait_for(queue.shutdown(), TIMEOUT)


async def idle(queue: GroupQueue) -> None:
    await asyncio.wait_for(queue.wait_idle(), TIMEOUT)


async def test_wait_idle_returns_at_once_when_nothing_submitted(
    make_queue: Callable[..., GroupQueue],
) -> None:
    await idle(make_queue(2, Runs()))


async def test_at_most_max_concurrent(make_queue: Callable[..., GroupQueue]) -> None:
    runs = Runs()
    queue = make_queue(2, runs)
    for folder in "abcde":
        queue.submit(folder)
    running = {await runs.started(), await runs.started()}
    assert running == {"a", "b"}
    assert queue.active_count == 2
    assert runs.nothing_started()
    for _ in range(3):
        finished = min(running)
        runs.release(finished)
        running.remove(finished)
        running.add(await runs.started())
        assert queue.active_count == 2 and runs.active == 2
        assert runs.nothing_started()
    for folder in running:
        runs.release(folder)
    await idle(queue)
    assert runs.peak == 2
    assert sorted(runs.order) == list("abcde")
    assert queue.active_count == 0


async def test_waiting_groups_start_in_fifo_order(make_queue: Callable[..., GroupQueue]) -> None:
    runs = Runs()
    queue = make_queue(1, runs)
    for folder in ("a", "d", "b", "c", "b"):
        queue.submit(folder)
    for expected in ("a", "d", "b", "c"):
        assert await runs.started() == expected
        assert queue.is_active(expected)
        runs.release(expected)
    await idle(queue)
    assert runs.order == ["a", "d", "b", "c"]
    assert runs.peak == 1


async def test_submit_while_active_runs_once_more(make_queue: Callable[..., GroupQueue]) -> None:
    runs = Runs()
    queue = make_queue(2, runs)
    queue.submit("a")
    assert await runs.started() == "a"
    for _ in range(3):
        queue.submit("a")
    assert runs.nothing_started()
    runs.release("a")
    assert await runs.started() == "a"
    assert runs.peak == 1  # the follow-up starts after the first run, never beside it
    runs.release("a")
    await idle(queue)
    assert runs.order == ["a", "a"]


async def test_submit_while_waiting_is_not_doubled(make_queue: Callable[..., GroupQueue]) -> None:
    runs = Runs()
    queue = make_queue(1, runs)
    queue.submit("a")
    await runs.started()
    queue.submit("b")
    queue.submit("b")
    runs.release("a")
    assert await runs.started() == "b"
    runs.release("b")
    await idle(queue)
    assert runs.order == ["a", "b"]


async def test_failing_run_retried_then_given_up(make_queue: Callable[..., GroupQueue]) -> None:
    runs = Runs({"a": [False, RuntimeError("sandbox died"), False, False, False]})
    runs.hold = False
    queue = make_queue(2, runs, retry_base_s=0.01, max_retries=3)
    queue.submit("a")
    await idle(queue)
    assert runs.order == ["a"] * 4  # the first run and three retries
    assert runs.results["a"] == [False]  # the fifth outcome was never asked for


async def test_retry_stops_after_a_success(make_queue: Callable[..., GroupQueue]) -> None:
    runs = Runs({"a": [False, True]})
    runs.hold = False
    queue = make_queue(2, runs, retry_base_s=0.01, max_retries=5)
    queue.submit("a")
    await idle(queue)
    assert runs.order == ["a", "a"]


async def test_retry_counter_resets_after_success(make_queue: Callable[..., GroupQueue]) -> None:
    runs = Runs({"a": [False, True, False, False, True]})
    runs.hold = False
    queue = make_queue(2, runs, retry_base_s=0.01, max_retries=2)
    queue.submit("a")
    await idle(queue)
    queue.submit("a")
    await idle(queue)
    assert len(runs.order) == 5
    assert runs.results["a"] == []


async def test_failing_group_does_not_block_others(make_queue: Callable[..., GroupQueue]) -> None:
    runs = Runs({"a": [False, False, False]})
    runs.hold = False
    queue = make_queue(1, runs, retry_base_s=0.01, max_retries=2)
    queue.submit("a")
    queue.submit("b")
    await idle(queue)
    assert Counter(runs.order) == {"a": 3, "b": 1}


async def test_shutdown_cancels_running_and_drops_waiting(
    make_queue: Callable[..., GroupQueue],
) -> None:
    runs = Runs()
    queue = make_queue(2, runs, retry_base_s=60)
    for folder in "abc":
        queue.submit(folder)
    await runs.started()
    await runs.started()
    await asyncio.wait_for(queue.shutdown(), TIMEOUT)
    assert sorted(runs.cancelled) == ["a", "b"]
    assert queue.active_count == 0
    assert "c" not in runs.order


async def test_shutdown_leaves_nothing_scheduled(make_queue: Callable[..., GroupQueue]) -> None:
    runs = Runs()
    queue = make_queue(1, runs, retry_base_s=60)
    queue.submit("a")
    await runs.started()
    await asyncio.wait_for(queue.shutdown(), TIMEOUT)
    # nothing runs, waits or is due for a retry, so the queue is idle
    await asyncio.wait_for(queue.wait_idle(), 2)


async def test_follow_up_run_queues_behind_waiting_groups(
    make_queue: Callable[..., GroupQueue],
) -> None:
    runs = Runs()
    queue = make_queue(1, runs)
    queue.submit("a")
    await runs.started()
    queue.submit("b")  # b waits for the only slot
    queue.submit("a")  # a's follow-up
    runs.release("a")
    assert await runs.started() == "b"
