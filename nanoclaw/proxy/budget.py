"""A group's daily budget of model requests, tokens and money: the pure verdict, the day it
counts in, the reservation each request makes before the proxy forwards it, and the
`model_calls` row each answer leaves.

A group's day is the calendar day in TZ: its other runs count on the day they started,
this run's own usage always counts whole. Budget tokens are input + cache writes + output:
cache reads (a tenth of the input price, re-read at every step) do not. A request is
counted (requests + 1 in the run's row) before it is forwarded, under a lock per group, so
concurrent requests see each other; its tokens are added after the reply, and a request cut
short stays counted as reserved. Requests still in flight count their `max_tokens` as output
tokens towards the verdict of the others, so they cannot overshoot the budget together.

Money (GROUP_DAILY_COST) is the group's model calls made today priced by the price table
(a model without a price counts 0, warned once), this run's own calls whole, plus each
request in flight priced at its `max_tokens` of output at its model's output price. Its
input is not estimated: it is known only once the answer says it, and the output side is
the one a request can run up (a turn's input is mostly cache reads at a tenth of the price).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, time, timedelta
from typing import Protocol
from zoneinfo import ZoneInfo

from nanoclaw.models import Group, ModelCall, Usage
from nanoclaw.pricing import PriceTable, cost, price_of, priced
from nanoclaw.proxy.churn import CHURN_WINDOW, cache_churn, churn_note

log = logging.getLogger(__name__)
CHURN_NOTE_EVERY = timedelta(hours=1)  # a group's churn warning, at most this often


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Budget:
    """A group's daily allowance of Messages requests, budget tokens and USD; 0 (or a None
    cost) is unlimited."""

    requests: int = 0
    tokens: int = 0
    cost: float | None = None


def group_budget(group: Group, default: Budget) -> Budget:
    """Pure: the group's own daily limits where it has them (0: none), else the settings'."""
    return Budget(
        default.requests if group.daily_requests is None else group.daily_requests,
        default.tokens if group.daily_tokens is None else group.daily_tokens,
        default.cost if group.daily_cost is None else group.daily_cost,
    )


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
    folder: str, used: Usage, budget: Budget, now: datetime, zone: ZoneInfo, spent: float = 0.0
) -> str | None:
    """Why the group may not send another request today, or None when it may. `spent` is
    the USD counted against `budget.cost`."""
    tokens = budget_tokens(used)
    if budget.requests and used.requests >= budget.requests:
        what, n, limit = "request", str(used.requests), str(budget.requests)
    elif budget.tokens and tokens >= budget.tokens:
        what, n, limit = "token", str(tokens), str(budget.tokens)
    elif budget.cost and spent >= budget.cost:
        what, n, limit = "cost", f"${spent:.2f}", f"${budget.cost:.2f}"
    else:
        return None
    resets = day_start(now, zone, 1)
    return (
        f"nanoclaw: group {folder} is over its daily {what} budget ({n} of {limit}); "
        f"resets at {resets:%H:%M %Z}"
    )


class CallLog(Protocol):
    """Where model calls are written and summed: the store."""

    async def add_model_call(
        self, folder: str, run_id: int | None, call: ModelCall, usage: Usage
    ) -> None: ...

    async def calls_since(
        self, folder: str, since_ms: int, exclude_run: int | None = None
    ) -> list[tuple[str, Usage]]: ...

    async def recent_calls(self, folder: str, limit: int) -> list[Usage]: ...


class BudgetBook:
    """What every proxy of the daemon shares: a lock per group, under which reservations are
    checked and made one at a time, what its requests in flight may cost (output tokens and
    USD), and which warnings were given already."""

    def __init__(self) -> None:
        self._locks: dict[str, asyncio.Lock] = {}
        self._pending: dict[str, int] = {}
        self._pending_cost: dict[str, float] = {}
        self._warned: set[str] = set()
        self._noted: dict[str, datetime] = {}

    def lock(self, folder: str) -> asyncio.Lock:
        return self._locks.setdefault(folder, asyncio.Lock())

    def pending(self, folder: str) -> int:
        return self._pending.get(folder, 0)

    def pending_cost(self, folder: str) -> float:
        return self._pending_cost.get(folder, 0.0)

    def hold(self, folder: str, tokens: int, usd: float = 0.0) -> None:
        self._pending[folder] = self.pending(folder) + tokens
        self._pending_cost[folder] = self.pending_cost(folder) + usd

    def release(self, folder: str, tokens: int, usd: float = 0.0) -> None:
        self._pending[folder] = max(0, self.pending(folder) - tokens)
        self._pending_cost[folder] = max(0.0, self.pending_cost(folder) - usd)

    def first_time(self, key: str) -> bool:
        """True the first time `key` is asked about: a warning given once per daemon."""
        new = key not in self._warned
        self._warned.add(key)
        return new

    def noted(self, key: str, now: datetime, within: timedelta) -> bool:
        """Whether `key` was noted less than `within` before `now`."""
        last = self._noted.get(key)
        return last is not None and now - last < within

    def note(self, key: str, now: datetime) -> None:
        self._noted[key] = now


@dataclass(frozen=True)
class BudgetGuard:
    """What the proxy needs to keep one group's budget: `spent(since)` is the group's usage
    by runs other than this one started since that moment (the store's sum); `book` is
    shared by every proxy of the daemon (the launcher's). `calls` gets a `model_calls` row
    per answer (by `call`, the group's own provider and model, unless told who answered)
    and sums them for the money budget, priced by `prices`."""

    folder: str
    budget: Budget
    zone: ZoneInfo
    spent: Callable[[datetime], Awaitable[Usage]]
    clock: Callable[[], datetime] = field(default=_utc_now)
    book: BudgetBook = field(default_factory=BudgetBook)
    run_id: int | None = None
    call: ModelCall = field(default_factory=lambda: ModelCall("anthropic", ""))
    calls: CallLog | None = None
    prices: PriceTable = field(default_factory=PriceTable)

    @property
    def limited(self) -> bool:
        return bool(self.budget.requests or self.budget.tokens or self.budget.cost)

    def price(self, model: str) -> float | None:
        """USD per output token of `model`, or None (warned once) when it has no price."""
        price = price_of(self.prices, model)
        if price is None:
            self.unpriced({model})
            return None
        return price.output / 1_000_000

    def unpriced(self, models: set[str]) -> None:
        if not self.prices.models:  # no table given (a test's guard): nothing to warn about
            return
        for model in sorted(models):
            if self.book.first_time(f"price:{model}"):
                log.warning(
                    "no price for model %r: its calls count $0 against the cost budget "
                    "(add it to a NANOCLAW_PRICES table)",
                    model[:200],
                )


class RunBudget:
    """One run's side of the budget: its own usage and cost (counted whole even past
    midnight), the reservation of each request and the tokens of its reply. `record` adds
    to the run's row."""

    def __init__(self, guard: BudgetGuard | None, record: Callable[[Usage], Awaitable[None]]):
        self._guard = guard
        self._record = record
        self.used = Usage()
        self.cost = 0.0  # USD of this run's answered calls that have a price
        self._held: list[tuple[int, float]] = []  # (max_tokens, USD) of requests in flight
        self.refusal: str | None = None  # why the budget stopped this run, if it did

    async def _count(self, usage: Usage) -> None:
        self.used = add_usage(self.used, usage)
        await self._record(usage)

    async def _others_cost(self, guard: BudgetGuard, since: datetime) -> float:
        if guard.calls is None:
            return 0.0
        since_ms = int(since.timestamp() * 1000)
        calls = await guard.calls.calls_since(guard.folder, since_ms, guard.run_id)
        usd, unknown = priced(guard.prices, calls)
        guard.unpriced(unknown)
        return usd

    async def reserve(self, max_tokens: int, model: str | None = None) -> str | None:
        """Count one request before it is forwarded; or why the group may not send it.
        `model` (the group's own when None) prices the reservation for a money budget."""
        guard = self._guard
        if guard is None or not guard.limited:
            await self._count(Usage(requests=1))
            return None
        async with guard.book.lock(guard.folder):
            now = guard.clock()
            since = day_start(now, guard.zone)
            spent = await guard.spent(since)
            in_flight = Usage(output_tokens=guard.book.pending(guard.folder))
            used = add_usage(add_usage(spent, self.used), in_flight)
            usd, hold_usd = 0.0, 0.0
            if guard.budget.cost:
                usd = await self._others_cost(guard, since) + self.cost
                usd += guard.book.pending_cost(guard.folder)
                per_token = guard.price(model or guard.call.model)
                hold_usd = max_tokens * (per_token or 0.0)
            verdict = budget_verdict(guard.folder, used, guard.budget, now, guard.zone, usd)
            if verdict is not None:
                self.refusal = self.refusal or verdict  # the agent stops at the first anyway
                return verdict
            guard.book.hold(guard.folder, max_tokens, hold_usd)
            self._held.append((max_tokens, hold_usd))
            try:
                await self._count(Usage(requests=1))
            except BaseException:
                self.release(max_tokens)
                raise
        return None

    async def settle(self, usage: Usage, call: ModelCall | None = None) -> None:
        """The reply's tokens (its request is counted already) and its `model_calls` row:
        `call` names who answered, the group's own model when None."""
        await self._count(replace(usage, requests=0))
        guard = self._guard
        if guard is None:
            return
        who = call or guard.call
        price = price_of(guard.prices, who.model)
        if price is None:
            guard.unpriced({who.model})
        else:
            self.cost += cost(usage, price)
        if guard.calls is not None:
            await guard.calls.add_model_call(guard.folder, guard.run_id, who, usage)
            await self._watch_churn(guard, guard.calls)

    async def _watch_churn(self, guard: BudgetGuard, calls: CallLog) -> None:
        """Warn when the group's cache writes dominate: at most once an hour per group (and
        no query while it was warned within that hour)."""
        key, now = f"churn:{guard.folder}", guard.clock()
        if guard.book.noted(key, now, CHURN_NOTE_EVERY):
            return
        recent = await calls.recent_calls(guard.folder, CHURN_WINDOW)
        if cache_churn(recent):
            guard.book.note(key, now)
            log.warning("%s", churn_note(guard.folder, recent))

    async def refund(self) -> None:
        """The request never left the host (upstream unreachable): it does not count."""
        await self._count(Usage(requests=-1))

    def release(self, max_tokens: int) -> None:
        """The end of a reserved request, whatever happened to it: its hold on the in-flight
        estimate goes. One cut short stays counted at its reservation."""
        held = next((h for h in self._held if h[0] == max_tokens), None)
        if self._guard is not None and held is not None:
            self._held.remove(held)
            self._guard.book.release(self._guard.folder, *held)
