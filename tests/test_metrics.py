"""Prometheus metrics: METRICS_LISTEN, and a real Core scraped over HTTP after a round trip."""

from __future__ import annotations

import asyncio
import io
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
from conftest import settings_for, wait_for
from fake_anthropic import FakeAnthropic
from ports import free_port
from prometheus_client.parser import text_string_to_metric_families

from channels.terminal import TerminalChannel
from nanoclaw.app import Core
from nanoclaw.config import Settings
from nanoclaw.errors import ConfigError
from nanoclaw.models import InboundMessage
from nanoclaw.store.db import now_ms
from nanoclaw.store.messages import Store

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    """Every sample as (name, sorted labels) -> value."""
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("127.0.0.1:9464", "127.0.0.1:9464"),
        (" localhost:80 ", "localhost:80"),
        ("[::1]:9464", "[::1]:9464"),
        ("off", None),
        ("", None),
    ],
)
def test_metrics_listen_is_host_port_or_off(given: str, kept: str | None) -> None:
    settings = settings_for(Path("/tmp"), "http://x", METRICS_LISTEN=given)
    assert settings.metrics_listen == kept


@pytest.mark.parametrize("bad", ["9464", "127.0.0.1", "host:0", "host:70000", "::1:9464", "a b:1"])
def test_bad_metrics_listen_names_the_setting(bad: str) -> None:
    with pytest.raises(ConfigError, match="METRICS_LISTEN") as info:
        settings_for(Path("/tmp"), "http://x", METRICS_LISTEN=bad)
    assert "host:port" in str(info.value)


def test_metrics_are_off_by_default(settings: Settings) -> None:
    assert settings.metrics_listen is None


@dataclass
class Served:
    core: Core
    store: Store
    url: str
    fake: FakeAnthropic
    out: io.StringIO

    async def scrape(self) -> Samples:
        async with aiohttp.ClientSession() as http, http.get(self.url) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("text/plain")
            return parse(await resp.text())

    async def say(self, text: str) -> None:
        msg = InboundMessage("term:main", f"p{now_ms()}", "term:local", "local", text, now_ms())
        assert await self.core.ingest.message(msg) is not None


@pytest_asyncio.fixture
async def served(fake: FakeAnthropic, home: Path) -> AsyncIterator[Served]:
    port = free_port()
    settings = settings_for(home, fake.base_url, METRICS_LISTEN=f"127.0.0.1:{port}")
    store = await Store.open(settings.layout.db)
    out = io.StringIO()
    channel = TerminalChannel(settings.assistant_name, out=out, received=settings.layout.received)
    cores: list[Core] = []

    async def serve() -> None:  # `nanoclaw run`'s path: serve() starts the metrics server
        async with Core.open(settings, store, {"term": channel}) as core:
            cores.append(core)
            await core.serve()

    task = asyncio.create_task(serve())
    await wait_for(lambda: cores)
    url = f"http://127.0.0.1:{port}/metrics"
    result = Served(cores[0], store, url, fake, out)

    async def answers() -> bool:
        try:
            await result.scrape()
        except aiohttp.ClientConnectionError:
            return False
        return True

    await wait_for(answers)
    try:
        yield result
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await store.close()


async def test_scrape_after_a_round_trip(served: Served) -> None:
    before = await served.scrape()
    assert before[("nanoclaw_live_agents", ())] == 0
    assert before[("nanoclaw_queue_depth", ())] == 0
    assert before[("nanoclaw_outbox_backlog", ())] == 0
    assert before[("nanoclaw_reply_latency_seconds_count", ())] == 0
    assert not any(name == "nanoclaw_runs_today" for name, _ in before)

    await served.say("hello [[say: hi there]]")
    await wait_for(lambda: "hi there" in served.out.getvalue())

    async def delivered() -> Samples | None:  # the row is marked sent just after the send
        samples = await served.scrape()
        return samples if samples[("nanoclaw_reply_latency_seconds_count", ())] else None

    live = await wait_for(delivered)
    assert live[("nanoclaw_live_agents", ())] == 1  # idle, waiting for a follow-up
    assert live[("nanoclaw_runs_today", (("outcome", "running"),))] == 1
    assert live[("nanoclaw_reply_latency_seconds_count", ())] == 1
    assert live[("nanoclaw_outbox_backlog", ())] == 0
    usage = served.fake.usages[0]
    assert (
        live[("nanoclaw_tokens_today", (("group", "main"), ("kind", "input")))]
        == (usage["input_tokens"])
    )
    assert (
        live[("nanoclaw_tokens_today", (("group", "main"), ("kind", "output")))]
        == (usage["output_tokens"])
    )

    served.core.orchestrator.close_live()
    await served.core.orchestrator.queue.wait_idle()
    done = await served.scrape()
    assert done[("nanoclaw_live_agents", ())] == 0
    assert done[("nanoclaw_runs_today", (("outcome", "ok"),))] == 1
    assert ("nanoclaw_runs_today", (("outcome", "running"),)) not in done


async def test_backlog_counts_undelivered_replies(served: Served) -> None:
    await served.store.enqueue_reply("main", "xmpp:nobody@example.org", "no channel for it")
    samples = await served.scrape()
    assert samples[("nanoclaw_outbox_backlog", ())] == 1


async def test_a_taken_port_is_a_config_error(store: Store, settings: Settings) -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        listen = f"127.0.0.1:{held.getsockname()[1]}"
        async with Core.open(settings, store, {}) as core:
            with pytest.raises(ConfigError, match="METRICS_LISTEN"):
                async with core.metrics.serving(listen):
                    pass
