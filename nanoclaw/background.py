"""Background tasks a component starts and must cancel when it stops.

A keyed task replaces the one before it under the same key (a chat's "typing" renewal);
a task that dies of an error is logged with its name instead of vanishing silently.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

log = logging.getLogger(__name__)


class Background:
    def __init__(self, owner: str) -> None:
        self._owner = owner
        self._tasks: set[asyncio.Task[Any]] = set()
        self._keyed: dict[str, asyncio.Task[Any]] = {}

    def spawn(self, coro: Coroutine[Any, Any, Any], key: str | None = None) -> None:
        if key is not None:
            self.cancel(key)
        name = key or getattr(coro, "__qualname__", "task")
        task = asyncio.create_task(coro, name=f"{self._owner}:{name}")
        self._tasks.add(task)
        if key is not None:
            self._keyed[key] = task
        task.add_done_callback(self._done)

    def cancel(self, key: str) -> None:
        task = self._keyed.pop(key, None)
        if task is not None:
            task.cancel()

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        for key, keyed in list(self._keyed.items()):
            if keyed is task:
                del self._keyed[key]
        if not task.cancelled() and task.exception() is not None:
            log.error("task %s failed", task.get_name(), exc_info=task.exception())

    async def close(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
