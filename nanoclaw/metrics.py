"""Prometheus metrics (METRICS_LISTEN): one registry per Core, served over HTTP at /metrics.

State is read when Prometheus scrapes (queue, live runs, today's runs and tokens, the
outbox), never counted in hooks; the one hook is the router's "reply sent" (its latency).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sized
from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric

from nanoclaw.errors import ConfigError
from nanoclaw.models import OutboxItem, Usage
from nanoclaw.proxy.budget import add_usage, day_start
from nanoclaw.settingvalues import split_listen
from nanoclaw.store.db import now_ms
from nanoclaw.store.messages import Store

log = logging.getLogger(__name__)
# From a warm follow-up (tens of ms) to a cold run with tools or a retried delivery (minutes).
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0)
TOKEN_KINDS = ("input", "output", "cache_read", "cache_write")


@dataclass(frozen=True)
class Snapshot:
    """What one scrape read: the daemon's state at that moment."""

    queue_depth: int = 0
    live_agents: int = 0
    outbox_backlog: int = 0
    runs: dict[str, int] = field(default_factory=dict)  # status -> runs started today
    tokens: dict[str, Usage] = field(default_factory=dict)  # group -> usage of today's runs


def families(snap: Snapshot) -> list[Metric]:
    """Pure: the gauges of one snapshot, in exposition order."""
    queue = GaugeMetricFamily(
        "nanoclaw_queue_depth", "Groups waiting for a free agent slot (MAX_CONCURRENT_AGENTS)"
    )
    queue.add_metric([], snap.queue_depth)
    live = GaugeMetricFamily("nanoclaw_live_agents", "Agent runs (sandboxes) alive now")
    live.add_metric([], snap.live_agents)
    outbox = GaugeMetricFamily(
        "nanoclaw_outbox_backlog", "Replies in the outbox not yet delivered (due or backing off)"
    )
    outbox.add_metric([], snap.outbox_backlog)
    runs = GaugeMetricFamily(
        "nanoclaw_runs_today", "Agent runs started today (TZ) by outcome", labels=["outcome"]
    )
    for status, count in sorted(snap.runs.items()):
        runs.add_metric([status], count)
    tokens = GaugeMetricFamily(
        "nanoclaw_tokens_today",
        "Model tokens of the runs started today (TZ) by group and kind",
        labels=["group", "kind"],
    )
    for folder, usage in sorted(snap.tokens.items()):
        values = (
            usage.input_tokens,
            usage.output_tokens,
            usage.cache_read_tokens,
            usage.cache_write_tokens,
        )
        for kind, value in zip(TOKEN_KINDS, values, strict=True):
            tokens.add_metric([folder, kind], value)
    return [queue, live, outbox, runs, tokens]


class _Scraped:
    """A prometheus collector that yields the gauges of the last snapshot read."""

    def __init__(self) -> None:
        self.snapshot = Snapshot()

    def collect(self) -> Iterator[Metric]:
        yield from families(self.snapshot)

    def describe(self) -> Iterable[Metric]:
        return families(Snapshot())


class Metrics:
    """The registry of one Core. `queue_depth` and `live` are read at scrape time."""

    def __init__(
        self,
        store: Store,
        zone: ZoneInfo,
        live: Sized,
        queue_depth: Callable[[], int],
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self._store = store
        self._zone = zone
        self._live = live
        self._queue_depth = queue_depth
        self._clock = clock
        self.registry = CollectorRegistry(auto_describe=True)
        self.reply_latency = Histogram(
            "nanoclaw_reply_latency_seconds",
            "Time from a reply reaching the outbox to its channel accepting it",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._scraped = _Scraped()
        self.registry.register(self._scraped)

    def reply_sent(self, item: OutboxItem) -> None:
        """The router's hook: `item` was delivered now."""
        if item.created_ms > 0:
            self.reply_latency.observe(max(0, self._clock() - item.created_ms) / 1000)

    async def read(self) -> Snapshot:
        """The state now; the SQL is bounded by today's runs of registered groups."""
        today = day_start(datetime.fromtimestamp(self._clock() / 1000, self._zone), self._zone)
        since = int(today.timestamp())
        folders = [g.folder for g in await self._store.groups()]
        runs: dict[str, int] = {}
        tokens: dict[str, Usage] = {}
        for folder, status, count, usage in await self._store.runs_by_group_since(
            folders, since * 1000
        ):
            runs[status] = runs.get(status, 0) + count
            tokens[folder] = add_usage(tokens.get(folder, Usage()), usage)
        return Snapshot(
            queue_depth=self._queue_depth(),
            live_agents=len(self._live),
            outbox_backlog=await self._store.outbox_backlog(),
            runs=runs,
            tokens=tokens,
        )

    async def exposition(self) -> bytes:
        """The text format of one scrape."""
        self._scraped.snapshot = await self.read()
        return generate_latest(self.registry)

    async def _handle(self, request: web.Request) -> web.Response:
        try:
            body = await self.exposition()
        except Exception:  # a scrape must never take the daemon down; Prometheus sees a 500
            log.exception("metrics scrape failed")
            return web.Response(status=500, text="scrape failed; see the daemon's log\n")
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    @contextlib.asynccontextmanager
    async def serving(self, listen: str) -> AsyncIterator[None]:
        """Serve GET /metrics on `listen` (host:port) while the block runs."""
        host, port = split_listen(listen)
        app = web.Application()
        app.router.add_get("/metrics", self._handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        try:
            try:
                await web.TCPSite(runner, host, port).start()
            except OSError as exc:
                raise ConfigError(
                    f"setting METRICS_LISTEN: cannot listen on {listen}: {exc}"
                ) from exc
            log.info("metrics at http://%s/metrics", listen)
            yield
        finally:
            await runner.cleanup()
