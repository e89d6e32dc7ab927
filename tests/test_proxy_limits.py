"""The model proxy's door, attacked as a sandbox would: the real proxy on a unix socket, built
by the launcher, forwarding to the fake Anthropic server, with a real store. Each attack is
refused with a clear 4xx and nothing of it reaches upstream; budgets are reserved before
forwarding; bodies are read within caps and timeouts; the key stays out of every repr."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import ClientError, ClientSession, UnixConnector
from anthropic import AsyncAnthropic
from fake_anthropic import FakeAnthropic, Reply
from pydantic import SecretStr

from nanoclaw.layout import Layout
from nanoclaw.models import Group, NetworkPolicy, Usage
from nanoclaw.proxy.admission import Policy
from nanoclaw.proxy.budget import Budget
from nanoclaw.proxy.intake import Limits
from nanoclaw.proxy.server import ModelProxy
from nanoclaw.proxy.upstream import upstream_client
from nanoclaw.sandbox.launcher import AgentSettings, Launcher
from nanoclaw.store.messages import Store

KEY = "sk-ant-proxy-SECRET-77"
ASK = {"model": "claude-x", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
UNLIMITED = Budget()
SLOW = Reply(({"type": "text", "text": "late"},), delay=5.0)  # holds a request in flight


@pytest_asyncio.fixture
async def client(fake: FakeAnthropic) -> AsyncIterator[AsyncAnthropic]:
    """The daemon's model client, with the real key."""
    async with upstream_client(SecretStr(KEY), fake.base_url) as c:
        yield c


def agent(budget: Budget = UNLIMITED) -> AgentSettings:
    return AgentSettings("Andy", "claude-x", "UTC", 1, 1, budget)


def launcher(
    tmp_path: Path, store: Store, client: AsyncAnthropic, settings: AgentSettings
) -> Launcher:
    return Launcher(store, Layout(tmp_path / "home"), settings, client)


async def post(
    sock: Path, body: Any = ASK, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], dict[str, Any]]:
    async with (
        ClientSession(connector=UnixConnector(path=str(sock))) as client,
        client.post("http://proxy/v1/messages", json=body, headers=headers) as resp,
    ):
        answer = await resp.json(content_type=None)
        return resp.status, {k.lower(): v for k, v in resp.headers.items()}, answer


async def raw(sock: Path, data: bytes, drip: bytes = b"") -> tuple[int, str]:
    """Send `data` as is (then `drip` a byte at a time), read the answer until the proxy
    closes: its status and error message."""
    reader, writer = await asyncio.open_unix_connection(str(sock))
    try:
        writer.write(data)
        await writer.drain()

        async def dribble() -> None:
            for byte in drip:
                writer.write(bytes([byte]))
                await asyncio.sleep(0.05)

        dripping = asyncio.create_task(dribble())
        answer = b""
        try:  # closing with a body unread, the proxy may reset the connection after answering
            while chunk := await asyncio.wait_for(reader.read(65536), 10):
                answer += chunk
        except ConnectionResetError:
            pass
        dripping.cancel()
    finally:
        writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)["error"]["message"]


async def served_again(sock: Path, within_s: float = 10.0) -> bool:
    """Whether a request is answered 200 before the deadline (the proxy sees a closed
    connection only when its loop reads the end of it)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while loop.time() < deadline:
        if (await post(sock))[0] == 200:
            return True
        await asyncio.sleep(0.05)
    return False


def head(length: int | None, extra: str = "") -> bytes:
    size = f"content-length: {length}\r\n" if length is not None else ""
    return (
        f"POST /v1/messages HTTP/1.1\r\nhost: proxy\r\ncontent-type: application/json\r\n"
        f"{size}{extra}\r\n"
    ).encode()


async def served(
    tmp_path: Path,
    store: Store,
    client: AsyncAnthropic,
    network: NetworkPolicy = "off",
    domains: tuple[str, ...] = (),
) -> tuple[ModelProxy, Path, int]:
    run_id = await store.start_run("work", "message", None, None)
    group = Group("work", "work", network=network, domains=domains)
    proxy = launcher(tmp_path, store, client, agent()).model_proxy(group, run_id)
    sock = tmp_path / "llm.sock"
    await proxy.start(sock)
    return proxy, sock, run_id


async def test_a_run_cannot_make_anthropic_reach_out_or_switch_model(
    client: AsyncAnthropic,
    tmp_path: Path,
    store: Store,
    fake: FakeAnthropic,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fetch = {"type": "web_fetch_20250910", "name": "web_fetch"}
    image = {"type": "image", "source": {"type": "url", "url": "https://evil.test/a.png"}}
    attacks: list[tuple[dict[str, Any], dict[str, str] | None, str]] = [
        ({**ASK, "tools": [fetch]}, None, "server tool web_fetch is not allowed"),
        ({**ASK, "model": "claude-opus-big"}, None, "model claude-opus-big is not allowed"),
        (ASK, {"anthropic-beta": "context-1m-2025-08-07"}, "anthropic-beta context-1m"),
        ({**ASK, "mcp_servers": [{"type": "url", "url": "https://evil.test/mcp"}]}, None, "mcp"),
        ({**ASK, "messages": [{"role": "user", "content": [image]}]}, None, "url source"),
    ]
    proxy, sock, run_id = await served(tmp_path, store, client)
    try:
        with caplog.at_level(logging.WARNING, logger="nanoclaw.proxy.server"):
            answers = [await post(sock, body, hdrs) for body, hdrs, _ in attacks for _ in (1, 2)]
        ok = await post(sock)
    finally:
        await proxy.stop()
    for (status, headers, body), (_, _, words) in zip(answers[::2], attacks, strict=True):
        assert status == 403 and headers["x-should-retry"] == "false"
        assert body["error"]["type"] == "permission_error" and words in body["error"]["message"]
    assert ok[0] == 200  # the same proxy forwards what the run may ask, and only that
    assert [r.body for r in fake.requests] == [ASK]
    assert fake.requests[0].api_key == KEY
    refused = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(refused) == len(attacks)  # once per run and reason, though each came twice
    assert all(f"group=work run={run_id}" in line for line in refused)


async def test_allowlist_web_search_keeps_to_the_groups_domains(
    client: AsyncAnthropic, tmp_path: Path, store: Store, fake: FakeAnthropic
) -> None:
    search = {"type": "web_search_20250305", "name": "web_search", "allowed_domains": ["x.test"]}
    proxy, sock, _ = await served(tmp_path, store, client, "allowlist", ("example.org",))
    try:
        status, _, _ = await post(sock, {**ASK, "tools": [search]})
    finally:
        await proxy.stop()
    assert status == 200
    [sent] = fake.requests
    assert sent.body["tools"] == [{**search, "allowed_domains": ["example.org"]}]


async def test_concurrent_requests_of_a_group_do_not_pass_its_budget_together(
    client: AsyncAnthropic, tmp_path: Path, store: Store, fake: FakeAnthropic
) -> None:
    """40 requests at once, 4 from each of 10 runs of one group, against 5 a day."""
    fake.responder = lambda body: Reply(({"type": "text", "text": "x"},), delay=0.2)
    shared = launcher(tmp_path, store, client, agent(Budget(5, 0)))
    proxies = []
    for i in range(10):
        run_id = await store.start_run("work", "message", None, None)
        proxies.append(shared.model_proxy(Group("work", "work"), run_id))
        await proxies[-1].start(tmp_path / f"llm{i}.sock")
    try:
        answers = await asyncio.gather(
            *(post(tmp_path / f"llm{i}.sock") for i in range(10) for _ in range(4))
        )
    finally:
        for proxy in proxies:
            await proxy.stop()
    statuses = sorted(status for status, _, _ in answers)
    assert statuses == [200] * 5 + [429] * 35
    assert len(fake.requests) == 5
    assert (await store.group_usage("work", 0)).requests == 5


async def test_requests_in_flight_count_their_max_tokens_against_the_token_budget(
    client: AsyncAnthropic, tmp_path: Path, store: Store, fake: FakeAnthropic
) -> None:
    """25 tokens a day, 4 requests at once each allowed 10 (and using them): the fourth
    sees 30 reserved or spent and is refused, whichever of the others has answered."""
    text = ({"type": "text", "text": "x"},)
    fake.responder = lambda body: Reply(text, input_tokens=0, output_tokens=10, delay=0.2)
    run_id = await store.start_run("work", "message", None, None)
    settings = agent(Budget(0, 25))
    proxy = launcher(tmp_path, store, client, settings).model_proxy(Group("work", "work"), run_id)
    await proxy.start(tmp_path / "llm.sock")
    try:
        answers = await asyncio.gather(*(post(tmp_path / "llm.sock") for _ in range(4)))
    finally:
        await proxy.stop()
    assert sorted(status for status, _, _ in answers) == [200, 200, 200, 429]
    assert len(fake.requests) == 3
    assert (await store.group_usage("work", 0)) == Usage(3, 0, 30)


async def test_a_request_in_flight_when_the_run_ends_stays_counted(
    client: AsyncAnthropic, tmp_path: Path, store: Store, fake: FakeAnthropic
) -> None:
    fake.script(SLOW)
    proxy, sock, run_id = await served(tmp_path, store, client)
    asking = asyncio.create_task(post(sock))
    try:
        await fake.await_requests(1)  # upstream has it
    finally:
        await proxy.stop()  # the run ends: its answer will never come
    with pytest.raises(ClientError):
        await asyncio.wait_for(asking, 10)
    [run] = [r for r in await store.runs("work") if r.id == run_id]
    assert run.usage == Usage(requests=1)


async def test_a_fifth_request_at_once_is_refused_unread(
    client: AsyncAnthropic, tmp_path: Path, store: Store, fake: FakeAnthropic
) -> None:
    fake.script(*[SLOW] * 5)
    proxy, sock, _ = await served(tmp_path, store, client)
    held = [asyncio.create_task(post(sock)) for _ in range(4)]
    try:
        await fake.await_requests(4)
        status, headers, body = await post(sock)
        assert status == 429 and headers["x-should-retry"] == "false"
        assert body["error"]["message"] == "nanoclaw: more than 4 requests in flight for this run"
        assert len(fake.requests) == 4  # the fifth was answered without being forwarded
    finally:
        await proxy.stop()
        await asyncio.gather(*held, return_exceptions=True)


async def test_connections_past_the_cap_are_refused(
    client: AsyncAnthropic, tmp_path: Path, store: Store, fake: FakeAnthropic
) -> None:
    proxy, sock, _ = await served(tmp_path, store, client)
    idle = [await asyncio.open_unix_connection(str(sock)) for _ in range(8)]
    try:
        status, message = await raw(sock, head(len(json.dumps(ASK))) + json.dumps(ASK).encode())
        idle[0][1].close()  # one slot comes free: a connection is served again
        assert await served_again(sock)
    finally:
        for _, writer in idle:
            writer.close()
        await proxy.stop()
    assert (status, message) == (429, "nanoclaw: more than 8 connections open for this run")
    assert len(fake.requests) == 1


@pytest.mark.parametrize(
    ("data", "drip", "status", "words"),
    [
        (head(1000) + b'{"model": ', b"", 408, "came too slowly: 10 of 1000 bytes"),
        (head(1000) + b"{", b" " * 60, 408, "came too slowly"),  # each byte in time, the whole not
        (head(32 * 1024 * 1024) + b"{" * 65536, b"", 413, "at most 4194304 bytes"),
        (head(None, "transfer-encoding: chunked\r\n") + b"10\r\n", b"", 411, "content-length"),
    ],
    ids=["stalled", "dripping", "huge", "chunked"],
)
async def test_bodies_too_slow_or_too_big_are_refused_unforwarded(
    client: AsyncAnthropic,
    tmp_path: Path,
    store: Store,
    fake: FakeAnthropic,
    data: bytes,
    drip: bytes,
    status: int,
    words: str,
) -> None:
    run_id = await store.start_run("work", "message", None, None)

    async def record(usage: Usage) -> None:
        await store.add_usage(run_id, usage)

    limits = Limits(chunk_timeout_s=0.5, body_timeout_s=1.0)
    proxy = ModelProxy(
        client,
        record,
        "run=1",
        policy=Policy(frozenset({"claude-x"})),
        limits=limits,
    )
    sock = tmp_path / "llm.sock"
    await proxy.start(sock)
    try:
        answer = await raw(sock, data, drip)
        assert (await post(sock))[0] == 200  # the proxy itself is unharmed
    finally:
        await proxy.stop()
    assert answer[0] == status and words in answer[1]
    assert [r.body for r in fake.requests] == [ASK]


async def test_the_key_is_in_no_repr(
    client: AsyncAnthropic, tmp_path: Path, store: Store, fake: FakeAnthropic
) -> None:
    settings = agent()
    proxy = launcher(tmp_path, store, client, settings).model_proxy(Group("work", "work"), 1)
    shown = [repr(settings), str(settings), repr(proxy), repr(vars(proxy)), repr(client)]
    assert all(KEY not in text for text in shown)
    assert client.api_key == KEY  # the daemon's one client holds it, and only it
