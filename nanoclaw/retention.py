"""The daemon's upkeep of the tape: who is trusted in every group, and pruning old events.

At start it tells the store ALLOWED_SENDERS (the tape's triggers mark other senders'
messages untrusted), then deletes events older than TAPE_RETENTION_DAYS, again each hour.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from nanoclaw.config import Settings

log = logging.getLogger(__name__)
DAY_MS = 86_400_000
EVERY_S = 3600.0


class TapeStore(Protocol):
    async def trust_senders(self, sender_ids: Iterable[str]) -> None: ...

    async def prune_tape(self, before_ms: int) -> int: ...


def cutoff_ms(now_ms: int, days: int) -> int:
    """Events stored before this are past their retention."""
    return now_ms - days * DAY_MS


class Retention:
    """`step()` prunes once; `run()` trusts the senders, then steps at start and hourly."""

    def __init__(
        self,
        store: TapeStore,
        days: int,
        trusted: Iterable[str],
        *,
        every_s: float = EVERY_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._days = days
        self._trusted = tuple(trusted)
        self._every_s = every_s
        self._clock = clock

    @classmethod
    def of(cls, settings: Settings, store: TapeStore) -> Retention:
        return cls(store, settings.tape_retention_days, settings.allowed_senders)

    async def step(self) -> int:
        gone = await self._store.prune_tape(cutoff_ms(int(self._clock() * 1000), self._days))
        if gone:
            log.info("tape: pruned %d events older than %d days", gone, self._days)
        return gone

    async def run(self) -> None:
        await self._store.trust_senders(self._trusted)
        while True:
            try:
                await self.step()
            except Exception:  # a locked store this hour is tried again the next
                log.exception("tape: pruning failed")
            await asyncio.sleep(self._every_s)
