"""The per-group queue: one live agent per group, at most N overall, FIFO between groups.

It knows nothing of messages: `submit(folder)` asks for a run, `run_group(folder)` does it
and says whether it succeeded; failures are retried with exponential backoff.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)


class GroupQueue:
    def __init__(
        self,
        max_concurrent: int,
        run_group: Callable[[str], Awaitable[bool]],
        *,
        retry_base_s: float = 2.0,
        max_retries: int = 5,
    ) -> None:
        self._max = max_concurrent
        self._run_group = run_group
        self._retry_base_s = retry_base_s
        self._max_retries = max_retries
        self._active: dict[str, asyncio.Task[None]] = {}
        self._waiting: deque[str] = deque()
        self._again: set[str] = set()
        self._retries: dict[str, int] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._idle = asyncio.Event()
        self._idle.set()

    def submit(self, folder: str) -> None:
        """Ask for a run of `folder`; while it runs, one more run is remembered."""
        if folder in self._active:
            self._again.add(folder)
        elif folder in self._timers or folder in self._waiting:
            return
        elif len(self._active) < self._max:
            self._start(folder)
        else:
            self._waiting.append(folder)
            self._idle.clear()

    def is_active(self, folder: str) -> bool:
        return folder in self._active

    @property
    def waiting(self) -> int:
        """Groups waiting for a free slot."""
        return len(self._waiting)

    def position(self, folder: str) -> int:
        """1 for the first group waiting for a slot; 0 when `folder` is not waiting."""
        return self._waiting.index(folder) + 1 if folder in self._waiting else 0

    @property
    def active_count(self) -> int:
        return len(self._active)

    def _start(self, folder: str) -> None:
        self._idle.clear()
        self._active[folder] = asyncio.create_task(self._run(folder), name=f"run-{folder}")

    async def _run(self, folder: str) -> None:
        ok = False
        try:
            ok = await self._run_group(folder)
        except asyncio.CancelledError:
            del self._active[folder]
            raise  # shutting down: no retry; the cursor keeps the messages pending
        except Exception:
            log.exception("queue group=%s run crashed", folder)
        del self._active[folder]
        self._after(folder, ok)

    def _after(self, folder: str, ok: bool) -> None:
        if ok:
            self._retries.pop(folder, None)
        else:
            tries = self._retries.get(folder, 0) + 1
            if tries <= self._max_retries:
                self._retries[folder] = tries
                delay = self._retry_base_s * 2 ** (tries - 1)
                log.warning("queue group=%s run failed; retry %d in %.1fs", folder, tries, delay)
                loop = asyncio.get_running_loop()
                self._timers[folder] = loop.call_later(delay, self._retry, folder)
            else:
                self._retries.pop(folder, None)
                log.error(
                    "queue group=%s failed %d times; its messages stay pending until the next one",
                    folder,
                    self._max_retries,
                )
        if folder in self._again and folder not in self._timers:
            self._again.discard(folder)
            self._waiting.append(folder)  # behind groups already waiting: FIFO
        while self._waiting and len(self._active) < self._max:
            self._start(self._waiting.popleft())
        if not self._active and not self._waiting and not self._timers:
            self._idle.set()

    def _retry(self, folder: str) -> None:
        self._timers.pop(folder, None)
        self._again.discard(folder)
        self.submit(folder)

    async def wait_idle(self) -> None:
        """Return once nothing runs, waits or is due for a retry (burst mode for tests)."""
        await self._idle.wait()

    async def shutdown(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        self._waiting.clear()
        tasks = list(self._active.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._again.clear()
        self._idle.set()
