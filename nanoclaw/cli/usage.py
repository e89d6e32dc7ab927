"""`nanoclaw usage [GROUP] [--days N] [--runs] [--prices]`: model usage and its cost per
group and day, and per run. Reads the store directly, with or without a running daemon. A
day is the calendar day in TZ, a run counts on the day it started; the budget line applies
the proxy's own rule.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from functools import reduce
from zoneinfo import ZoneInfo

from nanoclaw.config import Settings
from nanoclaw.display import printable_line
from nanoclaw.errors import ConfigError
from nanoclaw.home import open_store
from nanoclaw.models import Group, RunRecord, Usage
from nanoclaw.pricing import PriceTable, load_prices, price_lines, priced
from nanoclaw.proxy.budget import Budget, add_usage, budget_tokens, day_start, group_budget
from nanoclaw.proxy.churn import CHURN_WINDOW, cache_churn, churn_note
from nanoclaw.store.messages import Store

HEADER = (
    f"{'day':<10}  {'group':<16}{'requests':>9}{'input':>11}{'cache read':>12}"
    f"{'cache write':>13}{'output':>11}{'hit':>6}{'cost':>11}{'per msg':>10}"
)
Calls = Mapping[int, Sequence[tuple[str, Usage]]]  # run id -> its calls summed per model


@dataclass(frozen=True)
class DayTotal:
    day: date
    folder: str
    usage: Usage
    runs: tuple[RunRecord, ...]


def day_totals(runs: Sequence[RunRecord], zone: ZoneInfo) -> list[DayTotal]:
    """Runs summed per calendar day (in `zone`, by start) and group, oldest day first."""
    buckets: dict[tuple[date, str], list[RunRecord]] = {}
    for run in runs:
        day = datetime.fromtimestamp(run.started_ms / 1000, zone).date()
        buckets.setdefault((day, run.folder), []).append(run)
    return [
        DayTotal(day, folder, reduce(add_usage, (r.usage for r in rs), Usage()), tuple(rs))
        for (day, folder), rs in sorted(buckets.items())
    ]


def hit_rate(u: Usage) -> float | None:
    """Pure: the share of the prompt read from the cache; None when there was no prompt."""
    prompt = u.input_tokens + u.cache_read_tokens + u.cache_write_tokens
    return u.cache_read_tokens / prompt if prompt else None


def run_cost(
    run: RunRecord, calls: Sequence[tuple[str, Usage]], prices: PriceTable
) -> float | None:
    """Pure: the USD of a run's calls; None (shown "?") when one has no price, or when the
    run has tokens but no calls recorded (a run from before calls were)."""
    if not calls:
        return None if budget_tokens(run.usage) or run.usage.cache_read_tokens else 0.0
    usd, unknown = priced(prices, calls)
    return None if unknown else usd


def total_cost(costs: Sequence[float | None]) -> float | None:
    return None if any(c is None for c in costs) else sum(c or 0.0 for c in costs)


def money(usd: float | None) -> str:
    return "?" if usd is None else f"${usd:.4f}"


def _numbers(u: Usage, usd: float | None) -> str:
    rate = hit_rate(u)
    return (
        f"{u.requests:>9}{u.input_tokens:>11}{u.cache_read_tokens:>12}"
        f"{u.cache_write_tokens:>13}{u.output_tokens:>11}"
        f"{'-' if rate is None else f'{rate:.0%}':>6}{money(usd):>11}"
    )


def total_line(
    total: DayTotal, calls: Calls, messages: Mapping[int, int], prices: PriceTable
) -> str:
    usd = total_cost([run_cost(r, calls.get(r.id, ()), prices) for r in total.runs])
    handled = sum(messages.get(r.id, 0) for r in total.runs)
    per = "-" if not handled else "?" if usd is None else f"${usd / handled:.4f}"
    # a folder name is checked when a group is saved; the store is shown defensively all the same
    line = f"{total.day:%Y-%m-%d}  {total.folder:<16}" + _numbers(total.usage, usd) + f"{per:>10}"
    return printable_line(line)


def run_line(run: RunRecord, zone: ZoneInfo, calls: Calls, prices: PriceTable) -> str:
    started = datetime.fromtimestamp(run.started_ms / 1000, zone)
    own = calls.get(run.id, ())
    models = ",".join(model for model, _ in own) or "-"
    usd = run_cost(run, own, prices)
    line = f"  #{run.id:<6} {started:%H:%M} {run.status:<11}" + _numbers(run.usage, usd)
    return printable_line(f"{line}  {models}")


def budget_line(
    folder: str,
    today: Usage,
    budget: Budget,
    now: datetime,
    zone: ZoneInfo,
    spent: float | None = None,
) -> str:
    """Today's use against the group's budget; `spent` is its USD today (None: some unpriced)."""

    def part(n: int, limit: int, what: str) -> str:
        return f"{n} of {limit} {what}" if limit else f"{n} {what} (no limit)"

    cash = money(spent) + (f" of ${budget.cost:.2f}" if budget.cost else " (no cost limit)")
    resets = day_start(now, zone, 1)
    return printable_line(
        f"today {folder}: {part(today.requests, budget.requests, 'requests')}, "
        f"{part(budget_tokens(today), budget.tokens, 'tokens')}, {cash}; "
        f"resets at {resets:%H:%M %Z}"
    )


async def group_lines(
    settings: Settings, store: Store, folder: str, now: datetime, prices: PriceTable
) -> list[str]:
    """A group's budget line for today, and its cache churn warning if it churns."""
    zone = settings.zone
    default = Budget(
        settings.group_daily_requests, settings.group_daily_tokens, settings.group_daily_cost
    )
    group = await store.group(folder)
    budget = group_budget(group or Group(folder, folder), default)
    today_ms = int(day_start(now, zone).timestamp() * 1000)
    today = await store.group_usage(folder, today_ms)
    usd, unknown = priced(prices, await store.calls_since(folder, today_ms))
    lines = [budget_line(folder, today, budget, now, zone, None if unknown else usd)]
    recent = await store.recent_calls(folder, CHURN_WINDOW)
    if cache_churn(recent):
        lines.append(printable_line("warning: " + churn_note(folder, recent)))
    return lines


async def cmd_usage(
    settings: Settings, store: Store, args: argparse.Namespace, now: datetime | None = None
) -> int:
    prices = load_prices(settings.nanoclaw_prices)
    if args.prices:
        print("\n".join(price_lines(prices)))
        return 0
    zone = settings.zone
    now = now or datetime.now(UTC)
    since = day_start(now, zone, 1 - args.days)
    since_ms = int(since.timestamp() * 1000)
    runs = await store.runs_since(since_ms, args.group)
    if args.group and not runs and await store.group(args.group) is None:
        raise ConfigError(f"no group {args.group}")  # a removed group's runs still show
    calls = await store.run_calls_since(since_ms, args.group)
    messages = await store.run_messages_since(since_ms, args.group)
    totals = day_totals(runs, zone)
    if not totals:
        print(f"no model usage since {since:%Y-%m-%d %H:%M %Z}")
    else:
        print(HEADER)
    for total in totals:
        print(total_line(total, calls, messages, prices))
        if args.runs:
            for run in total.runs:
                print(run_line(run, zone, calls, prices))
    folders = [args.group] if args.group else sorted({t.folder for t in totals})
    for folder in folders:
        print("\n".join(await group_lines(settings, store, folder, now, prices)))
    return 0


async def run(settings: Settings, args: argparse.Namespace) -> int:
    async with open_store(settings) as store:
        return await cmd_usage(settings, store, args)


def _days(value: str) -> int:
    days = int(value)
    if days < 1:
        raise argparse.ArgumentTypeError("--days is 1 or more")
    return days


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    usage = sub.add_parser(
        "usage",
        help="model usage and cost per group and day (and per run)",
        description="Model usage and its cost per group and calendar day (TZ); a run counts "
        "on the day it started. hit: cache reads / (input + cache read + cache write); cost: "
        "the calls priced by the price table ('?': a model without a price); per msg: cost "
        "per message the day's runs handled. The last lines show today's budget "
        "(GROUP_DAILY_REQUESTS, GROUP_DAILY_TOKENS, GROUP_DAILY_COST, or the group's own), "
        "whose tokens are input + cache write + output: cache reads do not count.",
    )
    usage.add_argument("group", nargs="?", help="only this group's")
    usage.add_argument(
        "--days", type=_days, default=7, help="today and the days before it (default 7)"
    )
    usage.add_argument("--runs", action="store_true", help="also each run: id, start, status")
    usage.add_argument(
        "--prices", action="store_true", help="print the effective price table and stop"
    )
