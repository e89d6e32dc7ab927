"""Group commit: concurrent writes that arrive while the connection is busy share one commit.

Each caller's await ends with its own outcome, after the commit that holds its row. There is
no timer: a batch is whatever is queued when the connection is free, so a lone caller waits
for nobody.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

# One outcome per item of a batch, in order: its result, or the exception it alone raised.
Flush = Callable[[list[T]], Awaitable[list[R | Exception]]]


class GroupCommit(Generic[T, R]):
    """Hands items to `flush`: a caller who finds it free flushes its own item at once; items
    that come while it is busy queue, and one task then flushes up to `limit` at a time."""

    def __init__(self, flush: Flush[T, R], limit: int) -> None:
        self._flush = flush
        self._limit = max(1, limit)
        self._queue: list[tuple[T, asyncio.Future[R]]] = []
        self._busy = False  # a flush runs, or the task that will run the queue is made
        self._leader: asyncio.Task[None] | None = None

    async def submit(self, item: T) -> R:
        """Flush `item` (with whatever else is waiting) and return its outcome, or raise it."""
        if not self._busy:
            return await self._alone(item)
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
        return await future

    async def idle(self) -> None:
        """Return once everything queued so far has been flushed."""
        while self._leader is not None:
            await asyncio.wait({self._leader})  # never raises, nor cancels the leader

    async def _alone(self, item: T) -> R:
        """The lone caller's path: no task, no queue, as if there were no grouping."""
        self._busy = True
        try:
            outcome = (await self._flush([item]))[0]
        finally:
            self._busy = False
            self._lead()
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def _lead(self) -> None:
        # A task, not a caller, drains the queue: a caller that is cancelled must not
        # strand the others' items.
        if self._queue and not self._busy:
            self._busy = True
            self._leader = asyncio.create_task(self._drain(), name="group-commit")

    async def _drain(self) -> None:
        try:
            while self._queue:
                batch = self._queue[: self._limit]
                del self._queue[: self._limit]
                try:
                    outcomes = await self._flush([item for item, _ in batch])
                except Exception as exc:  # the flush itself broke: each caller hears of it
                    for _, future in batch:
                        _settle(future, exc)
                    continue
                except BaseException:  # cancelled: the batch's callers are cancelled too
                    for _, future in batch:
                        _settle(future, None)
                    raise
                for (_, future), outcome in zip(batch, outcomes, strict=True):
                    if isinstance(outcome, Exception):
                        _settle(future, outcome)
                    elif not future.done():  # a caller cancelled meanwhile: nobody to tell
                        future.set_result(outcome)
        finally:
            self._busy = False
            self._leader = None
            for _, future in self._queue:  # left only when this task was cancelled
                _settle(future, None)
            self._queue.clear()


def _settle(future: asyncio.Future[Any], exc: Exception | None) -> None:
    if future.done():
        return
    if exc is None:
        future.cancel()
    else:
        future.set_exception(exc)


def returned_ids(
    keys: Sequence[tuple[str, str]], returned: Iterable[Sequence[Any]]
) -> list[int | None]:
    """Map the rows an `INSERT ... ON CONFLICT DO NOTHING RETURNING id, chat_id, platform_id`
    gave back to the inserted messages (RETURNING's order is not promised).

    A key seen twice in one batch was stored once, by its first occurrence (rows are
    inserted in VALUES order); later ones and keys already stored get None, as a
    re-delivered message does.
    """
    ids = {(str(row[1]), str(row[2])): int(row[0]) for row in returned}
    return [ids.pop(key, None) for key in keys]


def value_rows(rows: int, columns: int) -> str:
    """The VALUES list of a multi-row INSERT: `rows` groups of `columns` marks."""
    one = "(" + ", ".join("?" * columns) + ")"
    return ", ".join([one] * rows)
