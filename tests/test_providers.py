"""Providers through the real proxy on a unix socket: the runner's own client (streamed) and
the anthropic SDK (not streamed) on one side, the official SDKs' clients to the fake OpenAI
and Anthropic servers on the other. Tool use round trips, images, errors and retries,
fallback along a group's chain (noted once), usage counted, the keys where they belong."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
import pytest_asyncio
from anthropic import AsyncAnthropic, DefaultAsyncHttpxClient, InternalServerError
from fake_anthropic import FakeAnthropic, error_reply, text_reply
from fake_openai import ChatReply, FakeOpenAI, chat_error
from pydantic import SecretStr

from nanoclaw.agent.model import ModelClient, ModelError
from nanoclaw.agent.tools import TOOL_SPECS
from nanoclaw.layout import Layout
from nanoclaw.models import Group, ModelCall, Usage
from nanoclaw.proxy.openai_upstream import openai_client
from nanoclaw.proxy.providers import ProviderName, Upstreams
from nanoclaw.proxy.server import ModelProxy
from nanoclaw.proxy.upstream import upstream_client
from nanoclaw.sandbox.launcher import AgentSettings, Launcher
from nanoclaw.store.messages import Store

OPENAI_KEY = "sk-openai-upstream-SECRET-7"
ANTHROPIC_KEY = "sk-ant-upstream-SECRET-8"
SANDBOX_KEY = "sk-from-the-sandbox"
CHAT = "tg:42"
TOOLS = [{k: v for k, v in spec.items() if k != "cache_control"} for spec in TOOL_SPECS]


@pytest.fixture
def openai_fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        server.api_key = OPENAI_KEY
        yield server


@pytest_asyncio.fixture
async def clients(openai_fake: FakeOpenAI, fake: FakeAnthropic) -> AsyncIterator[Upstreams]:
    # No SDK retries against the Anthropic fake: an overloaded answer falls back at once.
    anthropic = upstream_client(SecretStr(ANTHROPIC_KEY), fake.base_url, max_retries=0)
    openai = openai_client(SecretStr(OPENAI_KEY), openai_fake.base_url)
    async with Upstreams(anthropic, openai, openai_client(None, openai_fake.base_url)) as c:
        yield c


async def serve(
    tmp_path: Path,
    store: Store,
    clients: Upstreams,
    provider: ProviderName = "openai",
    fallbacks: tuple[str, ...] = (),
    model: str = "gpt-test",
) -> tuple[ModelProxy, Path, int]:
    agent = AgentSettings("Andy", model, "UTC", 1, 1, provider=provider, fallback_models=fallbacks)
    launcher = Launcher(store, Layout(tmp_path / "home"), agent, clients)
    run_id = await store.start_run("work", "message", None, None)
    proxy = launcher.model_proxy(Group("work", "work"), run_id, CHAT)
    sock = tmp_path / "llm.sock"
    await proxy.start(sock)
    return proxy, sock, run_id


async def runner_ask(sock: Path, messages: list[dict[str, Any]], model: str = "gpt-test") -> Any:
    """The runner's own call: streamed, assembled; told not to retry, it asks once."""
    runner = ModelClient(sock, max_retries=0, sleep=lambda s: None)
    ask = {"model": model, "max_tokens": 200, "messages": messages, "tools": TOOLS}
    return await asyncio.to_thread(runner.create, **ask)


def sdk_client(sock: Path) -> AsyncAnthropic:
    """The anthropic SDK over the proxy's socket, with a credential of the sandbox's."""
    http = DefaultAsyncHttpxClient(transport=httpx2.AsyncHTTPTransport(uds=str(sock)))
    return AsyncAnthropic(api_key=SANDBOX_KEY, base_url="http://proxy", http_client=http)


async def usage_of_run(store: Store, run_id: int) -> Usage:
    [run] = [r for r in await store.runs("work") if r.id == run_id]
    return run.usage


async def test_a_streamed_tool_round_trip_is_translated_and_counted(
    tmp_path: Path, store: Store, clients: Upstreams, openai_fake: FakeOpenAI
) -> None:
    openai_fake.script(
        ChatReply("Looking.", (("bash", {"command": "ls -la"}),), prompt_tokens=900,
                  completion_tokens=40, cached_tokens=800),
    )  # fmt: skip
    proxy, sock, run_id = await serve(tmp_path, store, clients)
    try:
        first = [{"role": "user", "content": "list files"}]
        reply = await runner_ask(sock, first)
        [text, tool] = reply["content"]
        then = [
            *first,
            {"role": "assistant", "content": reply["content"]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": tool["id"], "content": "a.txt b.txt"}]},
        ]  # fmt: skip
        second = await runner_ask(sock, then)
    finally:
        await proxy.stop()
    assert text == {"type": "text", "text": "Looking."} and reply["stop_reason"] == "tool_use"
    assert tool["name"] == "bash" and tool["input"] == {"command": "ls -la"}
    assert second["content"] == [{"type": "text", "text": "RESULT: a.txt b.txt"}]
    assert second["stop_reason"] == "end_turn"
    sent = openai_fake.requests
    assert [r.path for r in sent] == ["/v1/chat/completions"] * 2
    assert sent[0].body["stream"] is True and sent[0].body["stream_options"]["include_usage"]
    assert sent[0].body["max_completion_tokens"] == 200 and "max_tokens" not in sent[0].body
    assert {t["function"]["name"] for t in sent[0].body["tools"]} == {t["name"] for t in TOOLS}
    assert sent[1].body["messages"][-1] == {
        "role": "tool",
        "tool_call_id": tool["id"],
        "content": "a.txt b.txt",
    }
    second_usage = openai_fake.usages[1]
    assert await usage_of_run(store, run_id) == Usage(
        requests=2,
        input_tokens=100 + second_usage["prompt_tokens"],
        output_tokens=40 + second_usage["completion_tokens"],
        cache_read_tokens=800,
        cache_write_tokens=0,
    )
    assert proxy.last_answered == ModelCall("openai", "gpt-test", False)


async def test_the_sdk_gets_a_whole_answer_and_no_key_crosses(
    tmp_path: Path,
    store: Store,
    clients: Upstreams,
    openai_fake: FakeOpenAI,
    fake: FakeAnthropic,
) -> None:
    openai_fake.script(ChatReply("", (("send_message", {"text": "hi"}),)))
    proxy, sock, run_id = await serve(tmp_path, store, clients)
    try:
        async with sdk_client(sock) as sdk:
            message = await sdk.messages.create(
                model="gpt-test",
                max_tokens=100,
                messages=[{"role": "user", "content": "greet"}],
            )
    finally:
        await proxy.stop()
    assert message.stop_reason == "tool_use"
    [block] = message.content
    assert block.type == "tool_use" and block.input == {"text": "hi"}
    [sent] = openai_fake.requests
    assert sent.headers["authorization"] == f"Bearer {OPENAI_KEY}"
    assert SANDBOX_KEY not in str(sent.headers) and "stream" not in sent.body
    assert not any(k.startswith("openai-") or k == "x-api-key" for k in sent.headers)
    assert fake.requests == []  # the Anthropic endpoint never hears of it
    used = openai_fake.usages[0]
    assert (await usage_of_run(store, run_id)).output_tokens == used["completion_tokens"]


async def test_images_reach_the_endpoint_as_image_urls(
    tmp_path: Path, store: Store, clients: Upstreams, openai_fake: FakeOpenAI
) -> None:
    png = {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}
    content = [{"type": "image", "source": png}, {"type": "text", "text": "what is it?"}]
    proxy, sock, _ = await serve(tmp_path, store, clients)
    try:
        reply = await runner_ask(sock, [{"role": "user", "content": content}])
    finally:
        await proxy.stop()
    assert reply["content"] == [{"type": "text", "text": "echo: what is it?"}]
    [sent] = openai_fake.requests
    assert sent.body["messages"][-1]["content"][0] == {
        "type": "image_url",
        "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="},
    }


async def test_the_host_retries_as_asked_and_errors_reach_the_agent_as_anthropic_errors(
    tmp_path: Path, store: Store, clients: Upstreams, openai_fake: FakeOpenAI
) -> None:
    openai_fake.script(chat_error(429, retry_after="0.01"), ChatReply("after all"))
    openai_fake.script(chat_error(400, "bad image"))
    proxy, sock, run_id = await serve(tmp_path, store, clients)
    try:
        reply = await runner_ask(sock, [{"role": "user", "content": "hi"}])
        with pytest.raises(ModelError) as info:
            await runner_ask(sock, [{"role": "user", "content": "hi"}])
    finally:
        await proxy.stop()
    assert reply["content"] == [{"type": "text", "text": "after all"}]
    assert [r.headers.get("x-stainless-retry-count") for r in openai_fake.requests] == [
        "0",
        "1",
        "0",
    ]
    assert info.value.status == 400 and info.value.kind == "invalid_request_error"
    assert info.value.message == "bad image" and not info.value.retryable
    assert (await usage_of_run(store, run_id)).requests == 2  # one per agent request


async def test_an_error_inside_a_stream_cuts_the_answer_short(
    tmp_path: Path, store: Store, clients: Upstreams, openai_fake: FakeOpenAI
) -> None:
    openai_fake.script(ChatReply("a long answer " * 10, error_after=3))
    proxy, sock, run_id = await serve(tmp_path, store, clients)
    try:
        with pytest.raises(ModelError) as info:
            await runner_ask(sock, [{"role": "user", "content": "hi"}])
    finally:
        await proxy.stop()
    assert info.value.retryable  # a broken reply: the runner's to try again
    assert (await usage_of_run(store, run_id)).requests == 1


async def test_an_overloaded_anthropic_model_falls_back_and_the_chat_is_told_once(
    tmp_path: Path,
    store: Store,
    clients: Upstreams,
    openai_fake: FakeOpenAI,
    fake: FakeAnthropic,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake.script(error_reply(529), error_reply(503))
    openai_fake.script(ChatReply("from the fallback"), ChatReply("again"))
    chain = ("claude-spare", "openai:gpt-spare")
    proxy, sock, run_id = await serve(tmp_path, store, clients, "anthropic", chain, "claude-main")
    caplog.set_level(logging.INFO, "nanoclaw.proxy.server")
    try:
        first = await runner_ask(sock, [{"role": "user", "content": "hi"}], "claude-main")
        fake.script(error_reply(529), text_reply("spare answers"))
        second = await runner_ask(sock, [{"role": "user", "content": "hi"}], "claude-main")
    finally:
        await proxy.stop()
    assert first["content"] == [{"type": "text", "text": "from the fallback"}]
    assert second["content"] == [{"type": "text", "text": "spare answers"}]
    assert [r.body["model"] for r in fake.requests] == ["claude-main", "claude-spare"] * 2
    assert [r.body["model"] for r in openai_fake.requests] == ["gpt-spare"]
    assert proxy.last_answered == ModelCall("anthropic", "claude-spare", True)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert (
        len(warnings) == 1
        and "a fallback answered: openai model gpt-spare" in warnings[0].getMessage()
    )
    items = await store.claim_outbox(["tg"])
    assert [i.text for i in items] == [
        "(my usual model is unavailable right now; answering with gpt-spare)"
    ]
    assert (await usage_of_run(store, run_id)).requests == 2


async def test_a_failing_openai_model_falls_back_but_a_refusal_does_not(
    tmp_path: Path, store: Store, clients: Upstreams, openai_fake: FakeOpenAI
) -> None:
    # 500 three times: the SDK's try and its two retries, then the next model.
    openai_fake.script(*[chat_error(500, retry_after="0.01")] * 3, ChatReply("spare"))
    openai_fake.script(chat_error(400, "no such thing"))
    proxy, sock, _ = await serve(tmp_path, store, clients, fallbacks=("gpt-spare",))
    try:
        reply = await runner_ask(sock, [{"role": "user", "content": "hi"}])
        with pytest.raises(ModelError) as info:
            await runner_ask(sock, [{"role": "user", "content": "hi"}])
    finally:
        await proxy.stop()
    assert reply["content"] == [{"type": "text", "text": "spare"}]
    models = [r.body["model"] for r in openai_fake.requests]
    assert models == ["gpt-test"] * 3 + ["gpt-spare", "gpt-test"]
    assert info.value.status == 400


async def test_the_last_of_the_chain_failing_is_the_agents_error(
    tmp_path: Path, store: Store, clients: Upstreams, fake: FakeAnthropic
) -> None:
    fake.script(error_reply(529), error_reply(529, message="still overloaded"))
    proxy, sock, _ = await serve(tmp_path, store, clients, "anthropic", ("claude-b",), "claude-a")
    try:
        async with sdk_client(sock) as sdk:
            with pytest.raises(InternalServerError) as info:
                await sdk.messages.create(
                    model="claude-a", max_tokens=10, messages=[{"role": "user", "content": "x"}]
                )
    finally:
        await proxy.stop()
    assert info.value.status_code == 529
    assert info.value.response.headers["x-should-retry"] == "false"
    assert len(fake.requests) == 2  # the SDK told not to retry: one try per model
    assert all(r.api_key == ANTHROPIC_KEY for r in fake.requests)


async def test_count_tokens_under_openai_is_a_clear_not_found(
    tmp_path: Path, store: Store, clients: Upstreams, openai_fake: FakeOpenAI
) -> None:
    proxy, sock, _ = await serve(tmp_path, store, clients)
    try:
        async with sdk_client(sock) as sdk:
            with pytest.raises(Exception) as info:
                await sdk.messages.count_tokens(
                    model="gpt-test", messages=[{"role": "user", "content": "x"}]
                )
    finally:
        await proxy.stop()
    assert getattr(info.value, "status_code", None) == 404
    assert "count_tokens is not available with openai" in str(info.value)
    assert openai_fake.requests == []


async def test_a_keyless_compatible_endpoint_gets_no_authorization(
    tmp_path: Path, store: Store, clients: Upstreams, openai_fake: FakeOpenAI
) -> None:
    openai_fake.api_key = None
    proxy, sock, _ = await serve(tmp_path, store, clients, "openai-compatible")
    try:
        reply = await runner_ask(sock, [{"role": "user", "content": "hello"}])
    finally:
        await proxy.stop()
    assert reply["content"] == [{"type": "text", "text": "echo: hello"}]
    [sent] = openai_fake.requests
    assert "authorization" not in sent.headers
    assert sent.body["max_tokens"] == 200 and "max_completion_tokens" not in sent.body
