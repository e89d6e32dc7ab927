"""`nanoclaw usage`: day totals per group with cache hit rate and cost, per-run lines, today's
budget and the cache churn warning, from a real store read by the real CLI in a subprocess;
the grouping by calendar day, the hit rate and a run's cost are pure."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from conftest import run_cli

from nanoclaw.cli.usage import day_totals, hit_rate, run_cost
from nanoclaw.models import Group, InboundMessage, ModelCall, RunRecord, Usage
from nanoclaw.pricing import load_prices
from nanoclaw.proxy.budget import day_start
from nanoclaw.store.messages import Store

HOUR_MS = 3_600_000


def nanoclaw(home: Path, *args: str, **settings: str) -> subprocess.CompletedProcess[str]:
    return run_cli(home, "usage", *args, **settings)


def rows(out: str) -> dict[tuple[str, str], list[str]]:
    """Day lines as {(day, group): [requests, input, cache read, cache write, output, hit,
    cost, cost per message]}."""
    found = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 10 and parts[0][:2] == "20":
            found[(parts[0], parts[1])] = parts[2:]
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


SONNET = "claude-sonnet-4-6"
HAIKU = "claude-haiku-4-5-20251001"
# name, folder, hours after today's midnight (UTC), the run's usage, status, its calls, and
# whether it handled messages (3 of its group's chat, one of another chat between them)
PLAN = [
    (
        "ok",
        "work",
        1,
        Usage(2, 100, 40, 1000, 10),
        "ok",
        [(SONNET, Usage(1, 60, 20, 0, 10)), (SONNET, Usage(1, 40, 20, 1000, 0))],
        True,
    ),
    ("failed", "work", 2, Usage(1, 50, 5), "failed", [(HAIKU, Usage(1, 50, 5))], False),
    ("yesterday", "work", -12, Usage(3, 1000, 200), "ok", [(SONNET, Usage(3, 1000, 200))], False),
    ("old", "work", -240, Usage(9, 900, 90), "ok", [], False),  # from before model_calls
    # every call writes the cache anew: a churning prefix; and a model without a price
    (
        "main",
        "main",
        0,
        Usage(5, 5, 5, 0, 500),
        "ok",
        [("mystery", Usage(1, 1, 1, 0, 100))] * 5,
        False,
    ),
]


async def record_runs(db: Path) -> dict[str, int]:
    """Runs of `work` today, yesterday and 10 days ago, and one of `main` today (UTC), with
    their model calls; the first handled 3 of `work`'s messages."""
    midnight = int(day_start(datetime.now(UTC), ZoneInfo("UTC")).timestamp() * 1000)
    store = await Store.open(db)
    ids: dict[str, int] = {}
    try:
        await store.save_group(Group("work", "work", chats=("tg:-1",)))
        said = []
        for i, chat in enumerate(["tg:-1", "tg:-1", "tg:-2", "tg:-1"]):
            said.append(
                await store.add_message(InboundMessage(chat, f"p{i}", "tg:1", "A", "hi", 1))
            )
        for name, folder, _, usage, status, calls, handled in PLAN:
            first, last = (said[0], said[-1]) if handled else (None, None)
            ids[name] = await store.start_run(folder, "message", first, last)
            await store.add_usage(ids[name], usage)
            for model, call in calls:
                await store.add_model_call(folder, ids[name], ModelCall("anthropic", model), call)
            await store.finish_run(ids[name], status)
    finally:
        await store.close()
    with sqlite3.connect(db) as con:  # back-date them: the store stamps the present
        for name, _, hours, *_ in PLAN:
            started = midnight + hours * HOUR_MS + 60_000
            con.execute("UPDATE runs SET started_ms = ? WHERE id = ?", (started, ids[name]))
            con.execute("UPDATE model_calls SET ts_ms = ? WHERE run_id = ?", (started, ids[name]))
    return ids


@pytest.fixture
def used(home: Path) -> dict[str, int]:
    return asyncio.run(record_runs(home / "store" / "nanoclaw.db"))


def test_hit_rate_and_run_cost() -> None:
    assert hit_rate(Usage(1, 100, 10, 800, 100)) == 0.8
    assert hit_rate(Usage(1, 0, 10)) is None
    prices = load_prices(None)
    run = RunRecord(1, "w", "ok", 0, usage=Usage(1, 1000, 100))
    assert run_cost(run, [(SONNET, Usage(1, 1000, 100))], prices) == (3000 + 1500) / 1e6
    assert run_cost(run, [("mystery", Usage(1, 1000, 100))], prices) is None
    assert run_cost(run, [], prices) is None  # tokens without calls: not known
    assert run_cost(RunRecord(2, "w", "ok", 0, usage=Usage(1)), [], prices) == 0.0


def test_usage_per_group_and_day_with_cost_and_todays_budget(
    home: Path, used: dict[str, int]
) -> None:
    proc = nanoclaw(home)
    assert proc.returncode == 0, proc.stderr
    today = datetime.now(UTC).date()
    yesterday = f"{today - timedelta(days=1):%Y-%m-%d}"
    # work today: $0.0012375 (sonnet) + $0.000075 (haiku) over 3 messages; hit 1000 / 1160
    assert rows(proc.stdout) == {
        (yesterday, "work"): ["3", "1000", "0", "0", "200", "0%", "$0.0060", "-"],
        (f"{today:%Y-%m-%d}", "main"): ["5", "5", "0", "500", "5", "0%", "?", "-"],
        (f"{today:%Y-%m-%d}", "work"): [
            "3", "150", "1000", "10", "45", "86%", "$0.0013", "$0.0004"
        ],
    }  # fmt: skip
    assert proc.stdout.splitlines()[0].split() == [
        "day", "group", "requests", "input", "cache", "read", "cache", "write", "output", "hit",
        "cost", "per", "msg",
    ]  # fmt: skip
    assert "today main: 5 of 500 requests, 510 of 2000000 tokens, ? (no cost limit)" in proc.stdout
    # tokens for the budget: input + cache write + output, cache reads left out
    assert (
        "today work: 3 of 500 requests, 205 of 2000000 tokens, $0.0013 (no cost limit)"
        in proc.stdout
    )
    assert "resets at 00:00 UTC" in proc.stdout
    assert "#" not in proc.stdout  # no run lines without --runs
    warnings = [line for line in proc.stdout.splitlines() if line.startswith("warning:")]
    assert warnings == [
        "warning: group main: cache writes dominate over its last 5 model calls (500 tokens "
        "written, 0 read): its cacheable prefix keeps changing (memory, tools or the system "
        "prompt change between calls)"
    ]
    longer = rows(nanoclaw(home, "--days", "11").stdout)
    old = ["9", "900", "0", "0", "90", "0%", "?", "-"]  # no calls recorded: its cost unknown
    assert longer[(f"{today - timedelta(days=10):%Y-%m-%d}", "work")] == old


def test_usage_of_one_group_today_with_its_runs_and_budgets(
    home: Path, used: dict[str, int]
) -> None:
    proc = nanoclaw(home, "work", "--days", "1", "--runs", GROUP_DAILY_TOKENS="200")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert list(rows(proc.stdout)) == [(f"{datetime.now(UTC):%Y-%m-%d}", "work")]
    runs = [line.split() for line in lines if line.startswith("  #")]
    assert runs == [
        [f"#{used['ok']}", "01:01", "ok", "2", "100", "1000", "10", "40", "90%", "$0.0012", SONNET],
        [f"#{used['failed']}", "02:01", "failed", "1", "50", "0", "0", "5", "0%", "$0.0001", HAIKU],
    ]  # fmt: skip
    assert lines[-1].startswith("today work: 3 of 500 requests, 205 of 200 tokens, $0.0013 (no")
    assert not any(line.startswith("warning:") for line in lines)  # reads dominate in work
    capped = nanoclaw(home, "work", "--days", "1", GROUP_DAILY_COST="0.5")
    assert capped.stdout.splitlines()[-1].startswith(
        "today work: 3 of 500 requests, 205 of 2000000 tokens, $0.0013 of $0.50; resets"
    )


def test_usage_with_an_override_price_table(home: Path, used: dict[str, int]) -> None:
    table = home / "prices.json"
    mystery = {"input": 1000, "output": 1000, "cache_read": 0, "cache_write": 10}
    table.write_text(json.dumps({"source": "ours", "models": {"mystery": mystery}}))
    proc = nanoclaw(home, "main", "--days", "1", NANOCLAW_PRICES=str(table))
    assert proc.returncode == 0, proc.stderr
    # 5 calls of 1 input, 1 output, 100 cache writes: 5 * (1000 + 1000 + 1000) / 1e6
    [(key, values)] = rows(proc.stdout).items()
    assert key[1] == "main" and values[6] == "$0.0150"
    printed = nanoclaw(home, "--prices", NANOCLAW_PRICES=str(table)).stdout.splitlines()
    assert printed[0].startswith("prices: list prices, ") and printed[0].endswith(
        "; ours (USD per million tokens)"
    )
    assert "mystery 1000.000 1000.000 0.000 10.000" in [" ".join(p.split()) for p in printed]
    assert any(p.split()[0] == SONNET for p in printed[2:])
    broken = home / "broken.json"
    broken.write_text("{}")
    proc = nanoclaw(home, NANOCLAW_PRICES=str(broken))
    assert proc.returncode == 2 and "a price table is an object" in proc.stderr


def test_usage_of_an_unknown_group_or_no_days(home: Path) -> None:
    proc = nanoclaw(home, "nope")
    assert (proc.returncode, proc.stdout, proc.stderr) == (2, "", "nanoclaw: no group nope\n")
    proc = nanoclaw(home, "--days", "0")
    assert proc.returncode == 2 and "--days is 1 or more" in proc.stderr
    proc = nanoclaw(home, GROUP_DAILY_REQUESTS="-5")
    assert proc.returncode == 2
    assert proc.stderr.startswith("nanoclaw: setting GROUP_DAILY_REQUESTS: ")
    assert proc.stderr.count("\n") == 1
