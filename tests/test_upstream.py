"""The proxy's way upstream: the real proxy on a unix socket sending through the daemon's one
anthropic SDK client to the fake server, with the runner's own client on the other side.
Streamed answers arrive whole and are counted as they pass; the host retries as the answer
asks, once for all (the agent is told not to); errors, refused keys, an unreachable
endpoint and an answer cut short reach the agent as such; nothing of the sandbox's or the
daemon's environment goes upstream but the real key."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import ClientPayloadError, ClientSession, UnixConnector
from anthropic import AsyncAnthropic
from fake_anthropic import FakeAnthropic, Reply, error_reply, text_reply, tool_reply
from pydantic import SecretStr

from nanoclaw.agent.model import ModelClient, ModelError
from nanoclaw.layout import Layout
from nanoclaw.models import Group, Usage
from nanoclaw.proxy.budget import Budget
from nanoclaw.proxy.server import ModelProxy
from nanoclaw.proxy.upstream import sent_header, upstream_client
from nanoclaw.proxy.usage import UsageMeter
from nanoclaw.sandbox.launcher import AgentSettings, Launcher
from nanoclaw.store.messages import Store

KEY = "sk-ant-upstream-SECRET-31"
UNLIMITED = Budget()
ASK = {"model": "m", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]}


@pytest_asyncio.fixture
async def client(fake: FakeAnthropic) -> AsyncIterator[AsyncAnthropic]:
    async with upstream_client(SecretStr(KEY), fake.base_url) as c:
        yield c


async def serve(
    tmp_path: Path, store: Store, client: AsyncAnthropic, budget: Budget = UNLIMITED
) -> tuple[ModelProxy, Path, int]:
    agent = AgentSettings("Andy", "m", "UTC", 1, 1, budget)
    launcher = Launcher(store, Layout(tmp_path / "home"), agent, client)
    run_id = await store.start_run("work", "message", None, None)
    proxy = launcher.model_proxy(Group("work", "work"), run_id)
    sock = tmp_path / "llm.sock"
    await proxy.start(sock)
    return proxy, sock, run_id


async def ask(sock: Path, retries: int = 0) -> dict[str, Any]:
    """The runner's own call: streamed, assembled, its retries counted."""
    runner = ModelClient(sock, max_retries=retries, sleep=lambda s: None)
    return await asyncio.to_thread(runner.create, **ASK)


async def usage_of_run(store: Store, run_id: int) -> Usage:
    [run] = [r for r in await store.runs("work") if r.id == run_id]
    return run.usage


async def test_a_streamed_answer_reaches_the_agent_whole_and_is_counted(
    tmp_path: Path, store: Store, client: AsyncAnthropic, fake: FakeAnthropic
) -> None:
    tool = tool_reply("bash", {"command": "echo " + "y" * 3000}, text="Looking. " * 500)
    fake.script(tool)
    proxy, sock, run_id = await serve(tmp_path, store, client)
    try:
        reply = await ask(sock)
    finally:
        await proxy.stop()
    assert reply["content"] == list(tool.content) and reply["stop_reason"] == "tool_use"
    [sent] = fake.requests
    assert sent.body == {**ASK, "stream": True} and sent.api_key == KEY
    assert sent.headers["anthropic-version"] == "2023-06-01"
    used = fake.usages[0]
    assert used["input_tokens"] > 0 and used["output_tokens"] > 1
    assert await usage_of_run(store, run_id) == Usage(
        1, used["input_tokens"], used["output_tokens"], 0, 0
    )


@pytest.mark.parametrize("status", [429, 529])
async def test_the_host_retries_as_the_answer_asks_and_the_agent_asks_once(
    tmp_path: Path, store: Store, client: AsyncAnthropic, fake: FakeAnthropic, status: int
) -> None:
    fake.script(error_reply(status, headers={"retry-after": "0.01"}), text_reply("after all"))
    proxy, sock, run_id = await serve(tmp_path, store, client)
    try:
        reply = await ask(sock)  # the runner may not retry: the host must have
    finally:
        await proxy.stop()
    assert reply["content"] == [{"type": "text", "text": "after all"}]
    assert len(fake.requests) == 2
    assert fake.requests[1].headers["x-stainless-retry-count"] == "1"
    assert (await usage_of_run(store, run_id)).requests == 1  # one agent request


async def test_an_error_event_in_a_streamed_answer_reaches_the_runner(
    tmp_path: Path, store: Store, client: AsyncAnthropic, fake: FakeAnthropic
) -> None:
    fake.script(Reply(error_event="overloaded_error"), text_reply("second try"))
    proxy, sock, run_id = await serve(tmp_path, store, client)
    try:
        reply = await ask(sock, retries=1)  # a 200 that failed inside: the runner's to retry
    finally:
        await proxy.stop()
    assert reply["content"] == [{"type": "text", "text": "second try"}]
    assert len(fake.requests) == 2 and (await usage_of_run(store, run_id)).requests == 2


async def test_an_upstream_error_is_forwarded_with_no_retry_for_the_agent(
    tmp_path: Path, store: Store, client: AsyncAnthropic, fake: FakeAnthropic
) -> None:
    fake.script(*[error_reply(500, "api_error", "upstream broke")] * 6)
    proxy, sock, _ = await serve(tmp_path, store, client)
    try:
        async with (
            ClientSession(connector=UnixConnector(path=str(sock))) as http,
            http.post("http://proxy/v1/messages", json=ASK) as resp,
        ):
            status, headers, body = resp.status, resp.headers, await resp.json()
        with pytest.raises(ModelError) as info:
            await ask(sock, retries=3)  # told not to, it asks once
    finally:
        await proxy.stop()
    assert status == 500 and headers["x-should-retry"] == "false"
    assert headers["request-id"].startswith("req_")
    assert body["error"] == {"type": "api_error", "message": "upstream broke"}
    assert info.value.status == 500 and not info.value.retryable
    assert len(fake.requests) == 3 + 3  # each agent request: one try and the SDK's two retries


async def test_a_refused_key_is_told_to_the_run(
    tmp_path: Path, store: Store, client: AsyncAnthropic, fake: FakeAnthropic
) -> None:
    fake.api_key = "sk-ant-another-key"
    proxy, sock, _ = await serve(tmp_path, store, client)
    try:
        with pytest.raises(ModelError) as info:
            await ask(sock, retries=3)
    finally:
        await proxy.stop()
    assert info.value.status == 401 and info.value.kind == "authentication_error"
    assert proxy.key_refused == 401 and len(fake.requests) == 1


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_an_unreachable_endpoint_is_a_502_and_the_request_is_refunded(
    tmp_path: Path, store: Store
) -> None:
    async with upstream_client(SecretStr(KEY), f"http://127.0.0.1:{_closed_port()}", 1) as c:
        proxy, sock, run_id = await serve(tmp_path, store, c, Budget(10, 0))
        try:
            with pytest.raises(ModelError) as info:
                await ask(sock)
        finally:
            await proxy.stop()
    assert info.value.status == 502 and "unreachable: ConnectError" in info.value.message
    assert proxy.unreachable
    assert await usage_of_run(store, run_id) == Usage()  # reserved, then refunded


async def test_an_answer_cut_short_upstream_is_cut_short_for_the_agent(
    tmp_path: Path, store: Store, client: AsyncAnthropic, fake: FakeAnthropic
) -> None:
    cut = Reply(text_reply("half " * 100).content, cut_after=4)
    fake.script(cut, cut, text_reply("whole"))
    proxy, sock, run_id = await serve(tmp_path, store, client)
    try:
        async with (
            ClientSession(connector=UnixConnector(path=str(sock))) as http,
            http.post("http://proxy/v1/messages", json={**ASK, "stream": True}) as resp,
        ):
            assert resp.status == 200
            with pytest.raises(ClientPayloadError):  # the body has no end: not an answer
                await resp.read()
        with pytest.raises(ModelError) as info:
            await ask(sock)
        again = await ask(sock)
    finally:
        await proxy.stop()
    assert info.value.retryable  # the runner's own retry is what follows
    assert again["content"] == [{"type": "text", "text": "whole"}]
    used = await usage_of_run(store, run_id)
    assert used.requests == 3 and used.input_tokens == sum(u["input_tokens"] for u in fake.usages)


async def test_no_credential_or_header_but_the_keys_goes_upstream(
    tmp_path: Path, store: Store, fake: FakeAnthropic, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sandbox's own credentials are dropped; the daemon's environment adds nothing."""
    monkeypatch.setenv("ANTHROPIC_CUSTOM_HEADERS", "x-leak: from-the-environment")
    monkeypatch.setenv("ANTHROPIC_AUTH_TOKEN", "sk-ant-env-token")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", "http://127.0.0.1:9")
    sandbox = {"x-api-key": "sk-sandbox", "authorization": "Bearer sk-sandbox", "x-leak": "2"}
    async with upstream_client(SecretStr(KEY), fake.base_url) as c:
        proxy, sock, _ = await serve(tmp_path, store, c)
        try:
            async with (
                ClientSession(connector=UnixConnector(path=str(sock))) as http,
                http.post("http://proxy/v1/messages", json=ASK, headers=sandbox) as resp,
            ):
                assert resp.status == 200
        finally:
            await proxy.stop()
    [sent] = fake.requests
    assert sent.headers["x-api-key"] == KEY and sent.headers["authorization"] == f"Bearer {KEY}"
    assert all(sent_header(name) for name in sent.headers)
    assert "x-leak" not in sent.headers
    assert not any("sandbox" in value or "env" in value for value in sent.headers.values())


def test_usage_is_counted_from_events_as_they_pass_in_any_chunking() -> None:
    events = (
        b"event: message_start\n"
        b'data: {"type": "message_start", "message": {"usage": {"input_tokens": 11, '
        b'"output_tokens": 1, "cache_creation_input_tokens": 4}}}\n\n'
        b'event: content_block_delta\ndata: {"type": "content_block_delta", "delta": '
        b'{"type": "text_delta", "text": "' + b"z" * 100_000 + b'"}}\n\n'
        b'data: {"type": "message_delta", "usage": {"output_tokens": 42}}\r\n\r\n'
        b'data: {"type": "message_delta", "usage": {"output_tokens": -3, "input_tokens": "x"}}\n'
    )
    for size in (1, 7, 4096, len(events)):
        meter = UsageMeter("text/event-stream; charset=utf-8")
        for i in range(0, len(events), size):
            meter.feed(events[i : i + size])
        assert meter.usage() == Usage(1, 11, 42, 0, 4), size
    held = UsageMeter("application/json")
    held.feed(b'{"usage": {"input_tokens": 5, "output_tokens": 7, "cache_read_input_tokens": 3}}')
    assert held.usage() == Usage(1, 5, 7, 3, 0)
    broken = UsageMeter("application/json")
    broken.feed(b'{"usage": {"input_tokens": "many"}}')
    assert broken.usage() == Usage(requests=1)
