"""The model proxy's added latency per request with translation (issue 18): a streamed
Messages request through a run's proxy (`Launcher.model_proxy`, provider openai) to the fake
Chat Completions server, against the same request sent straight to the fake, translated.

Both clients are aiohttp in this process, the fake serves from its own thread; the two kinds
of call alternate so drift hits both. The figure is p50(proxied) - p50(direct), whole
answers read; the same through Anthropic's way (no translation) is shown beside it
(`python -m bench.proxy_translate [--quick]`). A measurement, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from aiohttp import ClientSession, UnixConnector
from fake_anthropic import FakeAnthropic, text_reply
from fake_openai import ChatReply, FakeOpenAI
from pydantic import SecretStr

from bench.report import Figure, percentile, table
from nanoclaw.layout import Layout
from nanoclaw.models import Group
from nanoclaw.proxy.openai_request import chat_request
from nanoclaw.proxy.openai_upstream import openai_client
from nanoclaw.proxy.providers import ProviderName, Upstreams
from nanoclaw.proxy.upstream import upstream_client
from nanoclaw.sandbox.launcher import AgentSettings, Launcher
from nanoclaw.store.messages import Store

NAME = "model proxy: added latency with translation"
FULL, QUICK = 200, 40
MODEL = "bench-model"
WARMUP = 5
ASK = {
    "model": MODEL,
    "max_tokens": 200,
    "stream": True,
    "system": "You are a helpful assistant.",
    "messages": [{"role": "user", "content": "Say something of a few sentences. " * 20}],
}
ANSWER = ChatReply("A short answer of a few sentences, as a chat reply would be. " * 4)


@dataclass(frozen=True)
class Side:
    """One provider's way: the clients, the fake's URL and the body a direct call sends."""

    provider: ProviderName
    clients: Upstreams
    url: str
    body: bytes
    script: Callable[[], None]


def openai_side(fake: FakeOpenAI) -> Side:
    clients = Upstreams(
        upstream_client(SecretStr("unused"), "http://127.0.0.1:9"),
        openai_client(SecretStr("k"), fake.base_url),
    )
    body = json.dumps(chat_request(ASK, "openai", MODEL)).encode()
    url = fake.base_url + "/chat/completions"
    return Side("openai", clients, url, body, lambda: fake.script(ANSWER, ANSWER))


def anthropic_side(fake: FakeAnthropic) -> Side:
    clients = Upstreams(upstream_client(SecretStr("k"), fake.base_url))
    reply = text_reply(ANSWER.text)
    url = fake.base_url + "/v1/messages"
    return Side(
        "anthropic", clients, url, json.dumps(ASK).encode(), lambda: fake.script(reply, reply)
    )


async def _measure(root: Path, side: Side, n: int) -> tuple[list[float], list[float]]:
    """Direct and proxied milliseconds of `n` calls (after a warm-up), alternated."""
    store = await Store.open(root / "store.db")
    agent = AgentSettings("Andy", MODEL, "UTC", 1, 1, provider=side.provider)
    proxied_body = json.dumps(ASK).encode()
    headers = {"content-type": "application/json", "authorization": "Bearer k"}
    async with side.clients:
        launcher = Launcher(store, Layout(root / "home"), agent, side.clients)
        run_id = await store.start_run("work", "message", None, None)
        proxy = launcher.model_proxy(Group("work", "work"), run_id)
        sock = root / "llm.sock"
        await proxy.start(sock)
        direct_ms: list[float] = []
        proxied_ms: list[float] = []
        try:
            async with (
                ClientSession() as direct,
                ClientSession(connector=UnixConnector(path=str(sock))) as proxied,
            ):
                for i in range(n + WARMUP):
                    side.script()
                    start = time.perf_counter()
                    async with direct.post(side.url, data=side.body, headers=headers) as r:
                        await r.read()
                    middle = time.perf_counter()
                    async with proxied.post("http://proxy/v1/messages", data=proxied_body) as r:
                        body = await r.read()
                    end = time.perf_counter()
                    if r.status != 200 or b"message_stop" not in body:
                        raise RuntimeError(f"the proxy answered {r.status}: {body[:200]!r}")
                    if i >= WARMUP:
                        direct_ms.append((middle - start) * 1000)
                        proxied_ms.append((end - middle) * 1000)
        finally:
            await proxy.stop()
            await store.close()
    return direct_ms, proxied_ms


def _figure(key: str, name: str, direct: list[float], proxied: list[float], note: str) -> Figure:
    floor = percentile(direct, 50)
    added = percentile(proxied, 50) - floor
    return Figure(
        key,
        name,
        added,
        "ms",
        "reference (no SPEC target)",
        None,
        floor=floor,
        extra={"n": len(proxied), "proxied_p50_ms": percentile(proxied, 50)},
        note=note,
        floor_label="direct call to the fake",
    )


def proxy_translate(n: int) -> list[Figure]:
    """The figure: p50 added by the proxy with translation (the direct call to the fake its
    floor); beside it, for reference, the same without translation (Anthropic's way)."""
    with tempfile.TemporaryDirectory(prefix="nanoclaw-bench-") as tmp:
        with FakeOpenAI() as openai_fake:
            translated = asyncio.run(_measure(Path(tmp, "o"), openai_side(openai_fake), n))
        with FakeAnthropic() as anthropic_fake:
            passed = asyncio.run(_measure(Path(tmp, "a"), anthropic_side(anthropic_fake), n))
    return [
        _figure(
            "proxy_translate",
            NAME,
            *translated,
            "streamed Messages via the proxy (openai) minus the same call direct to the fake",
        ),
        _figure(
            "proxy_passthrough",
            "model proxy: added latency, no translation",
            *passed,
            "streamed Messages via the proxy (anthropic) minus the same call direct to the fake",
        ),
    ]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.proxy_translate")
    p.add_argument("--quick", action="store_true", help="fewer requests")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    print(table(proxy_translate(QUICK if args.quick else FULL)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
