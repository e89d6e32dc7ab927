"""`nanoclaw usage [GROUP] [--days N] [--runs]`: model usage per group and day, and per run.

Reads the store directly, with or without a running daemon. A day is the calendar day in
TZ and a run counts on the day it started; the budget line applies the proxy's own rule.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from functools import reduce
from zoneinfo import ZoneInfo

from nanoclaw.config import Settings
from nanoclaw.display import printable_line
from nanoclaw.errors import ConfigError
from nanoclaw.home import open_store
from nanoclaw.models import RunRecord, Usage
from nanoclaw.proxy.budget import Budget, add_usage, budget_tokens, day_start
from nanoclaw.store.messages import Store

HEADER = (
    f"{'day':<10}  {'group':<16}{'requests':>9}{'input':>11}{'output':>11}"
    f"{'cache read':>13}{'cache write':>13}"
)


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


def _numbers(u: Usage) -> str:
    return (
        f"{u.requests:>9}{u.input_tokens:>11}{u.output_tokens:>11}"
        f"{u.cache_read_tokens:>13}{u.cache_write_tokens:>13}"
    )


def total_line(total: DayTotal) -> str:
    # a folder name is checked when a group is saved; the store is shown defensively all the same
    return printable_line(f"{total.day:%Y-%m-%d}  {total.folder:<16}" + _numbers(total.usage))


def run_line(run: RunRecord, zone: ZoneInfo) -> str:
    started = datetime.fromtimestamp(run.started_ms / 1000, zone)
    return f"  #{run.id:<6} {started:%H:%M} {run.status:<11}" + _numbers(run.usage)


def budget_line(folder: str, today: Usage, budget: Budget, now: datetime, zone: ZoneInfo) -> str:
    def part(n: int, limit: int, what: str) -> str:
        return f"{n} of {limit} {what}" if limit else f"{n} {what} (no limit)"

    resets = day_start(now, zone, 1)
    return printable_line(
        f"today {folder}: {part(today.requests, budget.requests, 'requests')}, "
        f"{part(budget_tokens(today), budget.tokens, 'tokens')}; resets at {resets:%H:%M %Z}"
    )


async def cmd_usage(
    settings: Settings, store: Store, args: argparse.Namespace, now: datetime | None = None
) -> int:
    zone = settings.zone
    now = now or datetime.now(UTC)
    since = day_start(now, zone, 1 - args.days)
    runs = await store.runs_since(int(since.timestamp() * 1000), args.group)
    if args.group and not runs and await store.group(args.group) is None:
        raise ConfigError(f"no group {args.group}")  # a removed group's runs still show
    totals = day_totals(runs, zone)
    if not totals:
        print(f"no model usage since {since:%Y-%m-%d %H:%M %Z}")
    else:
        print(HEADER)
    for total in totals:
        print(total_line(total))
        if args.runs:
            for run in total.runs:
                print(run_line(run, zone))
    budget = Budget(settings.group_daily_requests, settings.group_daily_tokens)
    today_ms = int(day_start(now, zone).timestamp() * 1000)
    folders = [args.group] if args.group else sorted({t.folder for t in totals})
    for folder in folders:
        today = await store.group_usage(folder, today_ms)
        print(budget_line(folder, today, budget, now, zone))
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
        help="model usage per group and day (and per run)",
        description="Model usage per group and calendar day (TZ); a run counts on the day it "
        "started. The last lines show today's budget (GROUP_DAILY_REQUESTS, GROUP_DAILY_TOKENS), "
        "whose tokens are input + cache write + output: cache reads do not count.",
    )
    usage.add_argument("group", nargs="?", help="only this group's")
    usage.add_argument(
        "--days", type=_days, default=7, help="today and the days before it (default 7)"
    )
    usage.add_argument("--runs", action="store_true", help="also each run: id, start, status")
