"""A wake-up signal for loops that poll: `set()` from anywhere, `wait(timeout)` in the loop.

It lets an in-process producer (a channel, the IPC handler) cut a poll interval short
without the loop missing a wake-up that arrived while it was busy. A cancellation always
wins over a wake-up that comes in the same step (`asyncio.wait_for` on 3.11 dropped it).
"""

from __future__ import annotations

import asyncio


class Waker:
    def __init__(self) -> None:
        self._event = asyncio.Event()

    def set(self) -> None:
        self._event.set()

    async def wait(self, timeout: float) -> bool:
        """True when woken, False on timeout; a wake-up during the last step counts."""
        try:
            async with asyncio.timeout(max(timeout, 0.0)):
                await self._event.wait()
        except TimeoutError:
            return False
        finally:
            self._event.clear()
        return True
