"""Money budgets and model_calls rows: the pure verdict and per-group limits, then the real
proxy built by the launcher, forwarding to the fake Anthropic server with a real store:
reserved before forwarding (40 at once), priced per model, warned about churn once."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import pytest_asyncio
from aiohttp import ClientSession, UnixConnector
from anthropic import AsyncAnthropic
from fake_anthropic import FakeAnthropic, Reply
from pydantic import SecretStr

from nanoclaw.app import agent_settings
from nanoclaw.cli.groups import budget_text
from nanoclaw.config import load_settings
from nanoclaw.errors import ConfigError
from nanoclaw.layout import Layout
from nanoclaw.models import Group, ModelCall, Usage
from nanoclaw.pricing import Price, PriceTable
from nanoclaw.proxy.budget import (
    Budget,
    BudgetBook,
    BudgetGuard,
    RunBudget,
    budget_verdict,
    group_budget,
)
from nanoclaw.proxy.churn import CHURN_MIN_CALLS, cache_churn
from nanoclaw.proxy.upstream import upstream_client
from nanoclaw.sandbox.launcher import AgentSettings, Launcher
from nanoclaw.store.messages import Store

BERLIN = ZoneInfo("Europe/Berlin")
ASK = {"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
# Binary fractions, so sums are exact: 10 output tokens of "m" cost $0.625.
PRICES = PriceTable(
    MappingProxyType({"m": Price(0.0, 62_500.0, 0.0, 0.0), "cheap": Price(1.0, 1.0, 0.1, 1.0)}),
    "test",
)
# slow enough that all 40 reservations are checked before the first answer settles
REPLY = Reply(({"type": "text", "text": "x"},), input_tokens=0, output_tokens=10, delay=0.5)


def test_verdict_over_the_cost_budget() -> None:
    now = datetime(2025, 1, 10, 12, tzinfo=UTC)
    budget = Budget(0, 0, 5.0)
    assert budget_verdict("g", Usage(10**4, 10**9), budget, now, BERLIN, 4.99) is None
    assert budget_verdict("g", Usage(), budget, now, BERLIN, 5.0) == (
        "nanoclaw: group g is over its daily cost budget ($5.00 of $5.00); resets at 00:00 CET"
    )
    assert budget_verdict("g", Usage(), Budget(0, 0, None), now, BERLIN, 10**6) is None
    assert budget_verdict("g", Usage(), Budget(0, 0, 0.0), now, BERLIN, 10**6) is None


@pytest.mark.parametrize(
    ("own", "expected"),
    [
        ({}, Budget(500, 2_000_000, 5.0)),
        ({"daily_requests": 3, "daily_cost": 0.5}, Budget(3, 2_000_000, 0.5)),
        ({"daily_requests": 0, "daily_tokens": 0, "daily_cost": 0.0}, Budget(0, 0, 0.0)),
    ],
)
def test_a_groups_own_limits_override_the_settings(own: dict[str, Any], expected: Budget) -> None:
    group = Group("work", "work", **own)
    assert group_budget(group, Budget(500, 2_000_000, 5.0)) == expected


def test_groups_show_names_where_each_limit_comes_from() -> None:
    settings = load_settings(None, GROUP_DAILY_COST="5")
    assert budget_text(Group("w", "w"), settings) == (
        "500 requests a day, 2000000 tokens a day, $5.00 a day "
        "(GROUP_DAILY_REQUESTS, _TOKENS, _COST: every group)"
    )
    assert budget_text(Group("w", "w", daily_requests=7), load_settings(None)) == (
        "7 requests a day, 2000000 tokens a day, no cost limit "
        "(its own: requests; GROUP_DAILY_*: tokens, cost)"
    )
    mine = Group("w", "w", daily_tokens=0, daily_cost=2.5)
    assert budget_text(mine, settings) == (
        "500 requests a day, no tokens limit, $2.50 a day "
        "(its own: tokens, cost; GROUP_DAILY_*: requests)"
    )


@pytest.mark.parametrize(
    ("calls", "churning"),
    [
        ([Usage(1, 10, 10, 0, 5000)] * CHURN_MIN_CALLS, True),  # every call writes anew
        ([Usage(1, 10, 10, 0, 5000)] * (CHURN_MIN_CALLS - 1), False),  # too few to tell
        ([Usage(1, 10, 10, 0, 5000)] + [Usage(1, 10, 10, 5000, 200)] * 9, False),  # reads win
        ([Usage(1, 10, 10)] * 20, False),  # no caching at all
    ],
)
def test_cache_churn_is_writes_outweighing_reads(calls: list[Usage], churning: bool) -> None:
    assert cache_churn(calls) is churning


@pytest_asyncio.fixture
async def client(fake: FakeAnthropic) -> AsyncIterator[AsyncAnthropic]:
    async with upstream_client(SecretStr("sk-real"), fake.base_url) as c:
        yield c


def launcher(tmp_path: Path, store: Store, client: AsyncAnthropic, budget: Budget) -> Launcher:
    agent = AgentSettings("Andy", "m", "UTC", 1, 1, budget, prices=PRICES)
    return Launcher(store, Layout(tmp_path / "home"), agent, client)


async def post(sock: Path, body: dict[str, Any] = ASK) -> tuple[int, str]:
    async with (
        ClientSession(connector=UnixConnector(path=str(sock))) as session,
        session.post("http://proxy/v1/messages", json=body) as resp,
    ):
        answer = await resp.json(content_type=None)
        return resp.status, answer.get("error", {}).get("message", "")


async def run_asks(
    shared: Launcher, store: Store, group: Group, sock: Path, times: int = 1
) -> list[tuple[int, str]]:
    """A new run of `group` behind its own proxy at `sock`, asking `times` times in turn."""
    run_id = await store.start_run(group.folder, "message", None, None)
    proxy = shared.model_proxy(group, run_id)
    await proxy.start(sock)
    try:
        return [await post(sock) for _ in range(times)]
    finally:
        await proxy.stop()


async def calls_of(store: Store, folder: str) -> list[tuple[Any, ...]]:
    return [
        tuple(r)
        for r in await store._all(
            "SELECT run_id, provider, model, input_tokens, output_tokens, cache_read_tokens, "
            "cache_write_tokens, fallback FROM model_calls WHERE folder = ? ORDER BY id",
            (folder,),
        )
    ]


async def test_concurrent_requests_do_not_pass_the_cost_budget_together(
    client: AsyncAnthropic, tmp_path: Path, store: Store, fake: FakeAnthropic
) -> None:
    """40 requests at once, 4 from each of 10 runs, each reserving $0.625 against $3.125."""
    fake.responder = lambda body: REPLY
    shared = launcher(tmp_path, store, client, Budget(0, 0, 3.125))
    proxies, runs = [], []
    for i in range(10):
        runs.append(await store.start_run("work", "message", None, None))
        proxies.append(shared.model_proxy(Group("work", "work"), runs[-1]))
        await proxies[-1].start(tmp_path / f"llm{i}.sock")
    try:
        answers = await asyncio.gather(
            *(post(tmp_path / f"llm{i}.sock") for i in range(10) for _ in range(4))
        )
    finally:
        for proxy in proxies:
            await proxy.stop()
    assert sorted(status for status, _ in answers) == [200] * 5 + [429] * 35
    assert len(fake.requests) == 5
    refusals = {message for status, message in answers if status == 429}
    assert len(refusals) == 1
    assert refusals.pop().startswith("nanoclaw: group work is over its daily cost budget ($3.12")
    rows = await calls_of(store, "work")
    assert len(rows) == 5 and all(r[0] in runs for r in rows)
    assert {r[1:] for r in rows} == {("anthropic", "m", 0, 10, 0, 0, 0)}  # the group's own
    # spent in full now: a later run of the group is refused before forwarding
    [(status, message)] = await run_asks(shared, store, Group("work", "work"), tmp_path / "l.sock")
    assert status == 429 and "($3.12 of $3.12)" in message
    assert len(fake.requests) == 5


async def test_a_groups_own_budget_and_other_groups_spending(
    client: AsyncAnthropic, tmp_path: Path, store: Store, fake: FakeAnthropic
) -> None:
    fake.responder = lambda body: REPLY
    other = await store.start_run("home", "message", None, None)
    await store.add_model_call("home", other, ModelCall("anthropic", "m"), Usage(1, 0, 10**6))
    shared = launcher(tmp_path, store, client, Budget(0, 0, 1.0))
    # no money limit of its own (0), one request a day: the second is refused for requests
    group = Group("work", "work", daily_cost=0.0, daily_requests=1)
    first, second = await run_asks(shared, store, group, tmp_path / "llm.sock", 2)
    assert first[0] == 200
    assert second == (
        429,
        "nanoclaw: group work is over its daily request budget (1 of 1); resets at 00:00 UTC",
    )
    # `home` spent $62,500 today: its own next request is refused, work's spending aside
    [(status, message)] = await run_asks(shared, store, Group("home", "home"), tmp_path / "h.sock")
    assert status == 429 and "daily cost budget ($62500.00 of $1.00)" in message
    assert len(fake.requests) == 1


async def test_an_unpriced_model_counts_nothing_and_is_warned_once(
    client: AsyncAnthropic,
    tmp_path: Path,
    store: Store,
    fake: FakeAnthropic,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake.responder = lambda body: REPLY
    earlier = await store.start_run("work", "message", None, None)
    await store.add_model_call("work", earlier, ModelCall("x", "mystery"), Usage(1, 10**9, 10**9))
    shared = launcher(tmp_path, store, client, Budget(0, 0, 1.0))
    with caplog.at_level(logging.WARNING, logger="nanoclaw.proxy.budget"):
        answers = await run_asks(shared, store, Group("work", "work"), tmp_path / "llm.sock", 2)
    statuses = [status for status, _ in answers]
    assert statuses == [200, 200]  # $1.25 of $1.00 after them: the mystery model cost $0
    warned = [r.getMessage() for r in caplog.records if "no price" in r.getMessage()]
    assert warned == [
        "no price for model 'mystery': its calls count $0 against the cost budget "
        "(add it to a NANOCLAW_PRICES table)"
    ]


async def test_settle_records_who_answered_and_prices_it(store: Store) -> None:
    run_id = await store.start_run("work", "message", None, None)

    async def record(usage: Usage) -> None:
        await store.add_usage(run_id, usage)

    async def spent(since: datetime) -> Usage:
        return Usage()

    guard = BudgetGuard(
        "work",
        Budget(0, 0, 100.0),
        ZoneInfo("UTC"),
        spent,
        run_id=run_id,
        call=ModelCall("anthropic", "m"),
        calls=store,
        prices=PRICES,
    )
    budget = RunBudget(guard, record)
    assert await budget.reserve(10, "cheap") is None
    await budget.settle(Usage(1, 1_000_000, 1_000_000), ModelCall("openai", "cheap", True))
    budget.release(10)
    assert await budget.reserve(10) is None
    await budget.settle(Usage(1, 0, 10))  # today's callers: the group's own model
    budget.release(10)
    assert budget.cost == pytest.approx(2.0 + 0.625)
    assert await calls_of(store, "work") == [
        (run_id, "openai", "cheap", 1_000_000, 1_000_000, 0, 0, 1),
        (run_id, "anthropic", "m", 0, 10, 0, 0, 0),
    ]
    [run] = await store.runs("work")
    assert run.usage == Usage(2, 1_000_000, 1_000_010)


async def churn_run(
    store: Store,
    folder: str,
    calls: list[Usage],
    caplog: pytest.LogCaptureFixture,
    book: BudgetBook | None = None,
    at: datetime | None = None,
) -> list[str]:
    """A run whose answers had these tokens, settled one by one: the churn warnings logged."""
    run_id = await store.start_run(folder, "message", None, None)

    async def record(usage: Usage) -> None:
        await store.add_usage(run_id, usage)

    async def spent(since: datetime) -> Usage:
        return Usage()

    def clock() -> datetime:
        return at or datetime.now(UTC)

    guard = BudgetGuard(
        folder, Budget(), ZoneInfo("UTC"), spent, clock, book or BudgetBook(), run_id, calls=store
    )
    budget = RunBudget(guard, record)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="nanoclaw.proxy.budget"):
        for usage in calls:
            assert await budget.reserve(100) is None
            await budget.settle(usage)
            budget.release(100)
    return [r.getMessage() for r in caplog.records if "cache writes dominate" in r.getMessage()]


async def test_the_proxy_warns_of_cache_churn_once_and_not_when_reads_dominate(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    churning = [Usage(1, 10, 10, 100, 3000)] * 12
    warned = await churn_run(store, "churny", churning, caplog)
    assert warned == [
        "group churny: cache writes dominate over its last 5 model calls (15000 tokens "
        "written, 500 read): its cacheable prefix keeps changing (memory, tools or the "
        "system prompt change between calls)"
    ]
    steady = [Usage(1, 10, 10, 0, 3000)] + [Usage(1, 10, 10, 3000, 50)] * 11
    assert await churn_run(store, "steady", steady, caplog) == []
    # the daemon's book: the group's next runs within the hour stay quiet, later ones warn
    book, noon = BudgetBook(), datetime(2026, 1, 5, 12, tzinfo=UTC)
    assert len(await churn_run(store, "churny", churning[:1], caplog, book, noon)) == 1
    later = noon + timedelta(minutes=59)
    assert await churn_run(store, "churny", churning[:1], caplog, book, later) == []
    later = noon + timedelta(minutes=61)
    assert len(await churn_run(store, "churny", churning[:1], caplog, book, later)) == 1


def test_the_daemons_settings_carry_the_cost_budget_and_prices(tmp_path: Path) -> None:
    table = tmp_path / "prices.json"
    table.write_text(
        '{"models": {"m": {"input": 1, "output": 2, "cache_read": 0, "cache_write": 1}}}'
    )
    settings = load_settings(
        None, GROUP_DAILY_COST="2.5", NANOCLAW_PRICES=str(table), LLM_PROVIDER="openai"
    )
    agent = agent_settings(settings)
    assert agent.budget == Budget(500, 2_000_000, 2.5)
    assert agent.prices.models["m"] == Price(1, 2, 0, 1)
    assert "claude-sonnet-4-6" in agent.prices.models and agent.provider == "openai"
    table.write_text('{"models": {"m": {"input": 1}}}')
    with pytest.raises(ConfigError, match="NANOCLAW_PRICES"):
        agent_settings(settings)
