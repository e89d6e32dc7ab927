"""The model proxy's paths and per-group daily budget: the pure verdict, then the real proxy
on a unix socket forwarding to the fake Anthropic server, with a real store and the
agent's own model client."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import pytest_asyncio
from aiohttp import ClientSession, UnixConnector
from anthropic import AsyncAnthropic
from fake_anthropic import FakeAnthropic, text_reply
from pydantic import SecretStr

from nanoclaw.agent.model import ModelClient, ModelError
from nanoclaw.agent.protocol import LLM_SOCK
from nanoclaw.config import load_settings
from nanoclaw.errors import ConfigError
from nanoclaw.layout import Layout
from nanoclaw.models import Group, Usage
from nanoclaw.proxy.admission import Policy
from nanoclaw.proxy.budget import Budget, BudgetGuard, budget_tokens, budget_verdict, day_start
from nanoclaw.proxy.server import ModelProxy
from nanoclaw.proxy.upstream import upstream_client
from nanoclaw.proxy.usage import response_usage
from nanoclaw.sandbox.launcher import AgentSettings, Launcher
from nanoclaw.store.messages import Store

BERLIN = ZoneInfo("Europe/Berlin")
MESSAGE = {"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}


def test_verdict_under_budget_and_unlimited() -> None:
    now = datetime(2025, 3, 1, 12, tzinfo=UTC)
    used = Usage(499, 1_000_000, 900_000, 5_000_000, 99_999)
    assert budget_verdict("work", used, Budget(500, 2_000_000), now, BERLIN) is None
    assert budget_verdict("work", Usage(10**6, 10**9), Budget(0, 0), now, BERLIN) is None


def test_verdict_over_requests_names_group_counts_and_reset() -> None:
    now = datetime(2025, 3, 1, 22, 30, tzinfo=UTC)  # 23:30 in Berlin
    verdict = budget_verdict("work", Usage(requests=500), Budget(500, 0), now, BERLIN)
    assert verdict == (
        "nanoclaw: group work is over its daily request budget (500 of 500); resets at 00:00 CET"
    )


def test_verdict_over_tokens_counts_cache_writes_not_reads() -> None:
    now = datetime(2025, 7, 1, 9, tzinfo=UTC)
    budget = Budget(0, 1000)
    reads = Usage(1, input_tokens=10, output_tokens=10, cache_read_tokens=10_000)
    assert budget_tokens(reads) == 20
    assert budget_verdict("g", reads, budget, now, BERLIN) is None
    writes = Usage(1, input_tokens=400, output_tokens=300, cache_write_tokens=300)
    assert budget_verdict("g", writes, budget, now, BERLIN) == (
        "nanoclaw: group g is over its daily token budget (1000 of 1000); resets at 00:00 CEST"
    )


def test_day_is_the_calendar_day_in_the_zone() -> None:
    late = datetime(2025, 3, 29, 23, 30, tzinfo=UTC)  # already Sunday 00:30 in Berlin
    assert day_start(late, BERLIN) == datetime(2025, 3, 30, tzinfo=BERLIN)
    # the night clocks go forward: that day is 23 hours long
    hours = (day_start(late, BERLIN, 1).timestamp() - day_start(late, BERLIN).timestamp()) / 3600
    assert hours == 23
    assert day_start(late, ZoneInfo("UTC"), -1) == datetime(2025, 3, 28, tzinfo=UTC)


def test_usage_of_plain_and_streamed_responses() -> None:
    assert response_usage(500, "application/json", b"{}") == Usage(requests=1)
    body = b'{"usage": {"input_tokens": 5, "output_tokens": 7, "cache_read_input_tokens": 3}}'
    assert response_usage(200, "application/json", body) == Usage(1, 5, 7, 3, 0)
    events = (
        b"event: message_start\n"
        b'data: {"type": "message_start", "message": {"usage": {"input_tokens": 11, '
        b'"output_tokens": 1, "cache_creation_input_tokens": 4}}}\n\n'
        b'event: ping\ndata: {"type": "ping"}\n\n'
        b'data: {"type": "message_delta", "usage": {"output_tokens": 42}}\n\n'
    )
    assert response_usage(200, "text/event-stream; charset=utf-8", events) == Usage(1, 11, 42, 0, 4)


@pytest.mark.parametrize(
    ("name", "value"), [("GROUP_DAILY_TOKENS", "-1"), ("GROUP_DAILY_REQUESTS", "lots")]
)
def test_a_wrong_budget_setting_names_itself(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(None, **{name: value})
    assert str(info.value).startswith(f"setting {name}: ")
    assert "0 for no limit" in str(info.value) and "\n" not in str(info.value)


def test_budget_defaults_and_unlimited() -> None:
    settings = load_settings(None)
    assert (settings.group_daily_requests, settings.group_daily_tokens) == (500, 2_000_000)
    assert load_settings(None, GROUP_DAILY_TOKENS="0").group_daily_tokens == 0


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: dict[str, Any] = field(default_factory=dict)


async def call(sock: Path, path: str = "/v1/messages", method: str = "POST") -> Answer:
    async with (
        ClientSession(connector=UnixConnector(path=str(sock))) as client,
        client.request(method, "http://proxy" + path, json=MESSAGE) as resp,
    ):
        body = await resp.json(content_type=None)
        return Answer(resp.status, {k.lower(): v for k, v in resp.headers.items()}, body)


@dataclass
class Served:
    sock: Path
    store: Store
    run_id: int
    checks: list[datetime]  # one per request that reached the budget check


@pytest_asyncio.fixture
async def client(fake: FakeAnthropic) -> AsyncIterator[AsyncAnthropic]:
    """The daemon's model client, with the real key."""
    async with upstream_client(SecretStr("sk-real"), fake.base_url) as c:
        yield c


async def serve(
    tmp_path: Path,
    store: Store,
    client: AsyncAnthropic,
    budget: Budget,
    clock: datetime | None = None,
    folder: str = "work",
) -> tuple[ModelProxy, Served]:
    """A proxy wired as the launcher wires it, with a clock and a count of budget checks."""
    run_id = await store.start_run(folder, "message", None, None)
    served = Served(tmp_path / "llm.sock", store, run_id, [])

    async def record(usage: Usage) -> None:
        await store.add_usage(run_id, usage)

    async def spent(since: datetime) -> Usage:
        served.checks.append(since)
        return await store.group_usage(folder, int(since.timestamp() * 1000), run_id)

    def now() -> datetime:
        return clock or datetime.now(UTC)

    guard = BudgetGuard(folder, budget, ZoneInfo("UTC"), spent, now)
    proxy = ModelProxy(
        client,
        record,
        f"run={run_id}",
        guard,
        policy=Policy(frozenset({"m"})),
    )
    await proxy.start(served.sock)
    return proxy, served


async def spend(store: Store, folder: str, usage: Usage) -> int:
    run_id = await store.start_run(folder, "message", None, None)
    await store.add_usage(run_id, usage)
    await store.finish_run(run_id, "ok")
    return run_id


async def test_under_budget_is_forwarded_and_recorded(
    tmp_path: Path, store: Store, client: AsyncAnthropic, fake: FakeAnthropic
) -> None:
    await spend(store, "work", Usage(3, 100, 50))
    fake.script(text_reply("hello", input_tokens=20, output_tokens=5))
    proxy, served = await serve(tmp_path, store, client, Budget(5, 1000))
    try:
        answer = await call(served.sock)
    finally:
        await proxy.stop()
    assert answer.status == 200 and answer.body["content"][0]["text"] == "hello"
    assert len(fake.requests) == 1 and fake.requests[0].api_key == "sk-real"
    [run] = [r for r in await store.runs("work") if r.id == served.run_id]
    assert run.usage == Usage(1, 20, 5, 0, 0)


async def test_over_token_budget_is_refused_and_nothing_forwarded(
    tmp_path: Path, store: Store, client: AsyncAnthropic, fake: FakeAnthropic
) -> None:
    await spend(store, "work", Usage(2, 600, 300, cache_read_tokens=10_000))
    await spend(store, "work", Usage(1, 50, 50))
    await spend(store, "other", Usage(1, 10**6, 10**6))  # another group's spending
    proxy, served = await serve(tmp_path, store, client, Budget(0, 1000))
    try:
        answer = await call(served.sock)
    finally:
        await proxy.stop()
    assert answer.status == 429
    assert answer.body == {
        "type": "error",
        "error": {
            "type": "rate_limit_error",
            "message": "nanoclaw: group work is over its daily token budget (1000 of 1000); "
            "resets at 00:00 UTC",
        },
    }
    assert answer.headers["x-should-retry"] == "false"
    assert "retry-after" not in answer.headers and "retry-after-ms" not in answer.headers
    assert fake.requests == []


async def test_over_request_budget_counts_this_runs_own_requests(
    tmp_path: Path, store: Store, client: AsyncAnthropic, fake: FakeAnthropic
) -> None:
    await spend(store, "work", Usage(requests=1))
    proxy, served = await serve(tmp_path, store, client, Budget(3, 0))
    try:
        first, second, third = [await call(served.sock) for _ in range(3)]
    finally:
        await proxy.stop()
    assert (first.status, second.status, third.status) == (200, 200, 429)
    assert "daily request budget (3 of 3)" in third.body["error"]["message"]
    assert len(fake.requests) == 2


async def test_the_budget_resets_on_the_next_day(
    tmp_path: Path, store: Store, client: AsyncAnthropic, fake: FakeAnthropic
) -> None:
    await spend(store, "work", Usage(1, 5000, 5000))
    today = datetime.now(UTC)
    proxy, served = await serve(tmp_path, store, client, Budget(0, 1000), today)
    try:
        assert (await call(served.sock)).status == 429
    finally:
        await proxy.stop()
    assert fake.requests == []
    tomorrow = day_start(today, ZoneInfo("UTC"), 1) + timedelta(minutes=1)
    proxy, served = await serve(tmp_path, store, client, Budget(0, 1000), tomorrow)
    try:
        assert (await call(served.sock)).status == 200
    finally:
        await proxy.stop()
    assert served.checks == [day_start(tomorrow, ZoneInfo("UTC"))]
    assert len(fake.requests) == 1


async def test_only_the_messages_endpoints_are_forwarded(
    tmp_path: Path, store: Store, client: AsyncAnthropic, fake: FakeAnthropic
) -> None:
    proxy, served = await serve(tmp_path, store, client, Budget(100, 0))
    try:
        refused = [
            await call(served.sock, "/v1/complete"),
            await call(served.sock, "/v1/models", "GET"),
            await call(served.sock, "/v1/messages/batches"),
            await call(served.sock, "/v1/files", "POST"),
            await call(served.sock, "/v1/messages/../models"),
            await call(served.sock, "/v1/messages", "GET"),
            await call(served.sock, "/v1/messages", "PUT"),
            await call(served.sock, "/v1/messages/count_tokens", "DELETE"),
        ]
        counted = await call(served.sock, "/v1/messages/count_tokens")
    finally:
        await proxy.stop()
    assert [a.status for a in refused] == [404] * 5 + [405] * 3
    assert all(a.body["type"] == "error" for a in refused)
    assert refused[-1].headers["allow"] == "POST"
    # count_tokens is forwarded and answered upstream
    assert [r.path for r in fake.requests] == ["/v1/messages/count_tokens"]
    assert counted.status == 200 and "input_tokens" in counted.body
    [run] = [r for r in await store.runs("work") if r.id == served.run_id]
    assert run.usage == Usage()  # count_tokens is free: no request counted


async def test_the_agents_client_surfaces_the_refusal_without_retrying(
    tmp_path: Path,
    store: Store,
    client: AsyncAnthropic,
    fake: FakeAnthropic,
    caplog: pytest.LogCaptureFixture,
) -> None:
    await spend(store, "work", Usage(requests=500))
    proxy, served = await serve(tmp_path, store, client, Budget(500, 0))
    runner = ModelClient(tmp_path / LLM_SOCK, max_retries=5)

    def ask() -> None:
        runner.create(model="m", max_tokens=10, messages=[{"role": "user", "content": "q"}])

    try:
        with caplog.at_level(logging.WARNING, logger="nanoclaw.proxy.server"):
            for _ in range(2):
                with pytest.raises(ModelError) as info:
                    await asyncio.to_thread(ask)
    finally:
        await proxy.stop()
    assert info.value.status == 429 and not info.value.retryable
    assert "group work is over its daily request budget (500 of 500)" in str(info.value)
    assert len(served.checks) == 2  # one request per call reached the proxy: no retries
    assert fake.requests == []
    refusals = [r for r in caplog.records if "refused" in r.getMessage()]
    assert len(refusals) == 1 and f"run={served.run_id}" in refusals[0].getMessage()


async def test_the_launchers_proxy_counts_the_group_today_once(
    tmp_path: Path, store: Store, client: AsyncAnthropic, fake: FakeAnthropic
) -> None:
    """Wired by the launcher: the run's recorded usage is not counted twice."""
    agent = AgentSettings("Andy", "m", "UTC", 1, 1, Budget(0, 100))
    launcher = Launcher(store, Layout(tmp_path / "home"), agent, client)
    await spend(store, "work", Usage(1, 30, 0))
    run_id = await store.start_run("work", "message", None, None)
    proxy = launcher.model_proxy(Group("work", "work"), run_id)
    sock = tmp_path / "llm.sock"
    fake.script(*(text_reply("x", input_tokens=20, output_tokens=10) for _ in range(3)))
    await proxy.start(sock)
    try:
        statuses = [(await call(sock)).status for _ in range(4)]
    finally:
        await proxy.stop()
    # 30 earlier, 30 a request: 30, 60, 90 pass, 120 is over (counted twice, 150 at the third)
    assert statuses == [200, 200, 200, 429]
    [run] = [r for r in await store.runs("work") if r.id == run_id]
    assert run.usage == Usage(3, 60, 30)
