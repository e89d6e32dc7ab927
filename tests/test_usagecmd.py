"""`nanoclaw usage`: day totals per group, per-run lines and today's budget, from a real
store read by the real CLI in a subprocess; the grouping by calendar day is pure."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from conftest import run_cli

from nanoclaw.cli.usage import day_totals
from nanoclaw.models import RunRecord, Usage
from nanoclaw.proxy.budget import day_start
from nanoclaw.store.messages import Store

HOUR_MS = 3_600_000


def nanoclaw(home: Path, *args: str, **settings: str) -> subprocess.CompletedProcess[str]:
    return run_cli(home, "usage", *args, **settings)


def rows(out: str) -> dict[tuple[str, str], list[int]]:
    """Day lines as {(day, group): [requests, input, output, cache read, cache write]}."""
    found = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 7 and parts[0][:2] == "20":
            found[(parts[0], parts[1])] = [int(p) for p in parts[2:]]
    return found


def test_day_totals_group_runs_by_day_in_the_zone() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    at = datetime(2025, 6, 1, 21, 30, tzinfo=UTC)  # 23:30 in Berlin
    ms = int(at.timestamp() * 1000)
    runs = [
        RunRecord(1, "work", "ok", ms, usage=Usage(1, 10, 1)),
        RunRecord(2, "work", "ok", ms + HOUR_MS, usage=Usage(2, 20, 2)),  # 00:30 next day
        RunRecord(3, "main", "ok", ms + HOUR_MS, usage=Usage(1, 5, 5, 3, 1)),
        RunRecord(4, "work", "failed", ms + 2 * HOUR_MS, usage=Usage(1, 30, 3)),
    ]
    totals = day_totals(runs, berlin)
    assert [(t.day, t.folder, t.usage) for t in totals] == [
        (date(2025, 6, 1), "work", Usage(1, 10, 1)),
        (date(2025, 6, 2), "main", Usage(1, 5, 5, 3, 1)),
        (date(2025, 6, 2), "work", Usage(3, 50, 5)),
    ]
    assert [r.id for r in totals[2].runs] == [2, 4]
    in_utc = day_totals(runs, ZoneInfo("UTC"))  # all on the first of June there
    assert [(t.day, t.folder, t.usage.requests) for t in in_utc] == [
        (date(2025, 6, 1), "main", 1),
        (date(2025, 6, 1), "work", 4),
    ]


async def record_runs(db: Path) -> dict[str, int]:
    """Runs of `work` today, yesterday and 10 days ago, and one of `main` today (UTC)."""
    midnight = int(day_start(datetime.now(UTC), ZoneInfo("UTC")).timestamp() * 1000)
    plan = [
        ("ok", "work", 1, Usage(2, 100, 40, 1000, 10), "ok"),
        ("failed", "work", 2, Usage(1, 50, 5), "failed"),
        ("yesterday", "work", -12, Usage(3, 300, 30), "ok"),
        ("old", "work", -240, Usage(9, 900, 90), "ok"),
        ("main", "main", 0, Usage(1, 7, 3), "ok"),
    ]
    store = await Store.open(db)
    ids: dict[str, int] = {}
    try:
        for name, folder, _, usage, status in plan:
            ids[name] = await store.start_run(folder, "message", None, None)
            await store.add_usage(ids[name], usage)
            await store.finish_run(ids[name], status)
    finally:
        await store.close()
    with sqlite3.connect(db) as con:  # back-date them: the store stamps the present
        for name, _, hours, _, _ in plan:
            started = midnight + hours * HOUR_MS + 60_000
            con.execute("UPDATE runs SET started_ms = ? WHERE id = ?", (started, ids[name]))
    return ids


@pytest.fixture
def used(home: Path) -> dict[str, int]:
    return asyncio.run(record_runs(home / "store" / "nanoclaw.db"))


def test_usage_per_group_and_day_with_todays_budget(home: Path, used: dict[str, int]) -> None:
    proc = nanoclaw(home)
    assert proc.returncode == 0, proc.stderr
    today = datetime.now(UTC).date()
    yesterday = f"{today - timedelta(days=1):%Y-%m-%d}"
    assert rows(proc.stdout) == {
        (yesterday, "work"): [3, 300, 30, 0, 0],
        (f"{today:%Y-%m-%d}", "main"): [1, 7, 3, 0, 0],
        (f"{today:%Y-%m-%d}", "work"): [3, 150, 45, 1000, 10],
    }
    assert proc.stdout.splitlines()[0].split()[:4] == ["day", "group", "requests", "input"]
    assert "today main: 1 of 500 requests, 10 of 2000000 tokens" in proc.stdout
    # tokens for the budget: input + cache write + output, cache reads left out
    assert "today work: 3 of 500 requests, 205 of 2000000 tokens" in proc.stdout
    assert "resets at 00:00 UTC" in proc.stdout
    assert "#" not in proc.stdout  # no run lines without --runs
    longer = rows(nanoclaw(home, "--days", "11").stdout)
    assert longer[(f"{today - timedelta(days=10):%Y-%m-%d}", "work")] == [9, 900, 90, 0, 0]


def test_usage_of_one_group_today_with_its_runs(home: Path, used: dict[str, int]) -> None:
    proc = nanoclaw(home, "work", "--days", "1", "--runs", GROUP_DAILY_TOKENS="200")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert list(rows(proc.stdout)) == [(f"{datetime.now(UTC):%Y-%m-%d}", "work")]
    runs = [line.split() for line in lines if line.startswith("  #")]
    assert runs == [
        [f"#{used['ok']}", "01:01", "ok", "2", "100", "40", "1000", "10"],
        [f"#{used['failed']}", "02:01", "failed", "1", "50", "5", "0", "0"],
    ]
    assert lines[-1].startswith("today work: 3 of 500 requests, 205 of 200 tokens")


def test_usage_of_an_unknown_group_or_no_days(home: Path) -> None:
    proc = nanoclaw(home, "nope")
    assert (proc.returncode, proc.stdout, proc.stderr) == (2, "", "nanoclaw: no group nope\n")
    proc = nanoclaw(home, "--days", "0")
    assert proc.returncode == 2 and "--days is 1 or more" in proc.stderr
    proc = nanoclaw(home, GROUP_DAILY_REQUESTS="-5")
    assert proc.returncode == 2
    assert proc.stderr.startswith("nanoclaw: setting GROUP_DAILY_REQUESTS: ")
    assert proc.stderr.count("\n") == 1
