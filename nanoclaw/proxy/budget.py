"""A group's daily budget of model requests and tokens: the pure verdict, the day it counts
in, and the reservation each request makes before the proxy forwards it.

A group's day is the calendar day in TZ: its other runs count on the day they started,
this run's own usage always counts whole. Budget tokens are input + cache writes + output:
cache reads (a tenth of the input price, re-read at every step) do not. A request is
counted (requests + 1 in the run's row) before it is forwarded, under a lock per group, so
concurrent requests see each other; its tokens are added after the reply, and a request cut
short stays counted as reserved. Requests still in flight count their `max_tokens` as output
tokens towards the verdict of the others, so they cannot overshoot the budget together.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from nanoclaw.models import ModelCall, Usage


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Budget:
    """A group's daily allowance of Messages requests and budget tokens; 0 is unlimited."""

    requests: int = 0
    tokens: int = 0


def budget_tokens(usage: Usage) -> int:
    return usage.input_tokens + usage.cache_write_tokens + usage.output_tokens


def add_usage(a: Usage, b: Usage) -> Usage:
    return Usage(
        a.requests + b.requests,
        a.input_tokens + b.input_tokens,
        a.output_tokens + b.output_tokens,
        a.cache_read_tokens + b.cache_read_tokens,
        a.cache_write_tokens + b.cache_write_tokens,
    )


def day_start(now: datetime, zone: ZoneInfo, days: int = 0) -> datetime:
    """Midnight in `zone` starting the day of `now`, `days` later (negative: earlier)."""
    return datetime.combine(now.astimezone(zone).date() + timedelta(days=days), time(0), zone)


def budget_verdict(
    folder: str, used: Usage, budget: Budget, now: datetime, zone: ZoneInfo
) -> str | None:
    """Why the group may not send another request today, or None when it may."""
    tokens = budget_tokens(used)
    if budget.requests and used.requests >= budget.requests:
        what, n, limit = "request", used.requests, budget.requests
    elif budget.tokens and tokens >= budget.tokens:
        what, n, limit = "token", tokens, budget.tokens
    else:
        return None
    resets = day_start(now, zone, 1)
    return (
        f"nanoclaw: group {folder} is over its daily {what} budget ({n} of {limit}); "
        f"resets at {resets:%H:%M %Z}"
    )


class BudgetBook:
    """What every proxy of the daemon shares: a lock per group, under which reservations are
    checked and made one at a time, and the output tokens its requests in flight may cost."""

    def __init__(self) -> None:
        self._locks: dict[str, asyncio.Lock] = {}
        self._pending: dict[str, int] = {}

    def lock(self, folder: str) -> asyncio.Lock:
        return self._locks.setdefault(folder, asyncio.Lock())

    def pending(self, folder: str) -> int:
        return self._pending.get(folder, 0)

    def hold(self, folder: str, tokens: int) -> None:
        self._pending[folder] = self.pending(folder) + tokens

    def release(self, folder: str, tokens: int) -> None:
        self._pending[folder] = max(0, self.pending(folder) - tokens)


@dataclass(frozen=True)
class BudgetGuard:
    """What the proxy needs to keep one group's budget: `spent(since)` is the group's usage
    by runs other than this one started since that moment (the store's sum); `book` is
    shared by every proxy of the daemon (the launcher's)."""

    folder: str
    budget: Budget
    zone: ZoneInfo
    spent: Callable[[datetime], Awaitable[Usage]]
    clock: Callable[[], datetime] = field(default=_utc_now)
    book: BudgetBook = field(default_factory=BudgetBook)

    @property
    def limited(self) -> bool:
        return bool(self.budget.requests or self.budget.tokens)


class RunBudget:
    """One run's side of the budget: its own usage (counted whole even past midnight), the
    reservation of each request and the tokens of its reply. `record` adds to the run's row."""

    def __init__(self, guard: BudgetGuard | None, record: Callable[[Usage], Awaitable[None]]):
        self._guard = guard if guard is not None and guard.limited else None
        self._record = record
        self.used = Usage()
        self.refusal: str | None = None  # why the budget stopped this run, if it did

    async def _count(self, usage: Usage) -> None:
        self.used = add_usage(self.used, usage)
        await self._record(usage)

    async def reserve(self, max_tokens: int, model: str | None = None) -> str | None:
        """Count one request before it is forwarded; or why the group may not send it.
        `model` prices the reservation for a money budget (issue 18: not yet)."""
        guard = self._guard
        if guard is None:
            await self._count(Usage(requests=1))
            return None
        async with guard.book.lock(guard.folder):
            now = guard.clock()
            spent = await guard.spent(day_start(now, guard.zone))
            in_flight = Usage(output_tokens=guard.book.pending(guard.folder))
            used = add_usage(add_usage(spent, self.used), in_flight)
            verdict = budget_verdict(guard.folder, used, guard.budget, now, guard.zone)
            if verdict is not None:
                self.refusal = self.refusal or verdict  # the agent stops at the first anyway
                return verdict
            guard.book.hold(guard.folder, max_tokens)
            try:
                await self._count(Usage(requests=1))
            except BaseException:
                guard.book.release(guard.folder, max_tokens)
                raise
        return None

    async def settle(self, usage: Usage, call: ModelCall | None = None) -> None:
        """The reply's tokens; its request is counted already. `call` names who answered
        (its `model_calls` row: issue 18, not yet)."""
        await self._count(replace(usage, requests=0))

    async def refund(self) -> None:
        """The request never left the host (upstream unreachable): it does not count."""
        await self._count(Usage(requests=-1))

    def release(self, max_tokens: int) -> None:
        """The end of a reserved request, whatever happened to it: its hold on the in-flight
        estimate goes. One cut short stays counted at its reservation."""
        if self._guard is not None:
            self._guard.book.release(self._guard.folder, max_tokens)
