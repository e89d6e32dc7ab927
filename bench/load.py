"""Figure 7: load, messages per second through the whole pipeline at 1, 5 and 20 groups.

The real daemon (`python -m nanoclaw.cli.main run`, its own process) polls the fake Telegram Bot
API; each registered group is one conversation that sends a burst of 1-4 messages asking
the scripted model for `[[say: {ans-G-K}]]`, waits until the answers reach the fake's
sendMessage, then sends the next burst. So every message goes channel -> store ->
orchestrator -> bwrap agent -> model proxy -> fake model -> IPC file -> watcher -> outbox ->
router -> channel send, with the batching and follow-ups of real use. Reported per level:
msg/s over first push -> last answer against issue 15's targets (`TARGETS`), push -> answer
latency, the daemon's own CPU (its /proc utime + stime; the agents' is not in it) and its
RSS high-water mark.
"""

from __future__ import annotations

import asyncio
import math
import random
import re
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fake_anthropic import FakeAnthropic
from fake_telegram import FakeTelegram
from processes import stop_process

from bench.home import make_home, start_daemon
from bench.idle import _wait_ready
from bench.report import Figure, failed, percentile
from bench.usage import Usage, usage
from nanoclaw.config import Settings
from nanoclaw.models import Group
from nanoclaw.store.messages import Store

LEVELS = (1, 5, 20)
MAX_BURST = 4
GAP_S = (0.0, 0.03)  # between the messages of one burst
# Groups beyond MAX_CONCURRENT_AGENTS wait until a live agent has been idle this long;
# with the default (600 s) the 20-group level would wait ten minutes per wave.
IDLE_TIMEOUT_S = 2.0
SENDER = 111  # the fake's default user id, allowed as tg:111
ANSWER = re.compile(r"\{ans-(\d+)-(\d+)\}")


def chat_of(g: int) -> int:
    return -1_000_000 - g


class TimedTelegram(FakeTelegram):
    """The fake Bot API, resolving a future on the bench's loop when an answer is sent."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._loop = loop
        self._waiting: dict[str, asyncio.Future[float]] = {}
        self.sends = 0

    def expect(self, token: str) -> asyncio.Future[float]:
        """A future for perf_counter() at the first send carrying `token` (bench loop only)."""
        fut = self._loop.create_future()
        self._waiting[token] = fut
        return fut

    async def _m_sendmessage(self, params: Any) -> Any:
        msg = await super()._m_sendmessage(params)
        at = time.perf_counter()
        tokens = [f"ans-{g}-{k}" for g, k in ANSWER.findall(str(msg.get("text", "")))]
        self._loop.call_soon_threadsafe(self._arrived, tokens, at)
        return msg

    def _arrived(self, tokens: list[str], at: float) -> None:
        self.sends += 1
        for token in tokens:
            fut = self._waiting.pop(token, None)
            if fut is not None and not fut.done():
                fut.set_result(at)


async def _register(home: Path, groups: int) -> None:
    store = await Store.open(home / "store" / "nanoclaw.db")
    try:
        for g in range(groups):
            chats = (f"tg:{chat_of(g)}",)
            await store.save_group(Group(f"g{g}", f"g{g}", chats, requires_trigger=False))
            (home / "groups" / f"g{g}").mkdir(parents=True, exist_ok=True)
    finally:
        await store.close()


def _start(
    home: Path, groups: int, fake: FakeAnthropic, tg: FakeTelegram
) -> subprocess.Popen[bytes]:
    return start_daemon(
        home,
        fake.base_url,
        AGENT_IDLE_TIMEOUT_S=str(IDLE_TIMEOUT_S),
        GROUP_DAILY_REQUESTS="1000000",
        GROUP_DAILY_TOKENS="1000000000",
        TELEGRAM_BOT_TOKEN=tg.token,
        TELEGRAM_API_URL=tg.base_url,
        TELEGRAM_ALLOWED_CHAT_IDS=",".join(str(chat_of(g)) for g in range(groups)),
        ALLOWED_SENDERS=f"tg:{SENDER}",
    )


async def _conversation(
    tg: TimedTelegram, g: int, count: int, rng: random.Random, latencies: list[float]
) -> None:
    """Bursts of messages to group `g`, each burst's answers awaited before the next."""
    await asyncio.sleep(rng.uniform(0, 0.1))
    k = 0
    while k < count:
        burst: list[tuple[float, asyncio.Future[float]]] = []
        for _ in range(min(count - k, rng.randint(1, MAX_BURST))):
            if burst:
                await asyncio.sleep(rng.uniform(*GAP_S))
            token = f"ans-{g}-{k}"
            fut = tg.expect(token)
            t0 = time.perf_counter()
            tg.push_update(tg.text_message(chat_of(g), f"question {k} [[say: {{{token}}}]]"))
            burst.append((t0, fut))
            k += 1
        for t0, fut in burst:
            latencies.append(await fut - t0)


def _runs(home: Path) -> tuple[int, int, str]:
    """(agent runs, runs not ended ok, the first one's error) of the bench's groups."""
    uri = f"file:{home / 'store' / 'nanoclaw.db'}?mode=ro"
    with sqlite3.connect(uri, uri=True, timeout=10) as db:
        runs = db.execute("SELECT count(*) FROM runs WHERE folder != 'main'").fetchone()[0]
        bad = db.execute(
            "SELECT status, error FROM runs WHERE folder != 'main' "
            "AND status NOT IN ('ok', 'running') ORDER BY id"  # running: still idling at the end
        ).fetchall()
    return int(runs), len(bad), " ".join(bad[0])[:200] if bad else ""


@dataclass(frozen=True)
class Level:
    groups: int
    latencies: list[float]  # seconds, push -> answer at the fake Bot API
    wall_s: float  # first push -> last answer
    before: Usage  # the daemon at the first push
    after: Usage  # the daemon at the last answer
    requests: int
    sends: int
    runs: tuple[int, int, str]


async def _level(fake: FakeAnthropic, groups: int, per_group: int, home: Path) -> Level:
    fake.reset()
    await _register(home, groups)
    rng = random.Random(groups)
    n = groups * per_group
    tg = TimedTelegram(asyncio.get_running_loop())
    with tg:
        proc = _start(home, groups, fake, tg)
        try:
            await asyncio.to_thread(_wait_ready, proc, home / "daemon.log", 60)
            while not tg.get_updates_offsets:  # the channel polls: no startup in the window
                await asyncio.sleep(0.02)
            latencies: list[float] = []
            before, t0 = usage(proc.pid), time.perf_counter()
            talks = [_conversation(tg, g, per_group, rng, latencies) for g in range(groups)]
            try:
                await asyncio.wait_for(asyncio.gather(*talks), 60 + 2.0 * n)
            except TimeoutError:
                raise TimeoutError(f"{len(latencies)} of {n} answered in time") from None
            wall, after = time.perf_counter() - t0, usage(proc.pid)
        finally:
            await asyncio.to_thread(stop_process, proc, 15, signal.SIGINT)
        sends = tg.sends
    return Level(groups, latencies, wall, before, after, len(fake.requests), sends, _runs(home))


def _name(groups: int) -> str:
    return f"load: {groups} group{'s' if groups > 1 else ''}, whole pipeline"


@dataclass(frozen=True)
class Target:
    """Issue 15's target for a level: `factor` x the msg/s of the runner built on the SDK
    (`sdk_rate`, same bench and machine), and a p50 latency bound if any."""

    sdk_rate: float
    factor: float
    p50_ms: float | None = None

    def text(self) -> str:
        rate = f">= {self.factor:g}x {self.sdk_rate:g} msg/s"
        return rate if self.p50_ms is None else f"{rate}, p50 <= {self.p50_ms / 1000:g} s"

    def met(self, rate: float, p50_ms: float) -> bool:
        fast = self.p50_ms is None or p50_ms <= self.p50_ms
        return rate >= self.sdk_rate * self.factor and fast


TARGETS = {5: Target(9.7, 2.0), 20: Target(1.5, 10.0, 2000.0)}


def _target_text(groups: int) -> str:
    target = TARGETS.get(groups)
    return "-" if target is None else target.text()


def _figure(level: Level, base_rate: float | None, max_agents: int) -> Figure:
    n, ms = len(level.latencies), [x * 1000 for x in level.latencies]
    rate, p50 = n / level.wall_s, percentile(ms, 50)
    runs, bad, error = level.runs
    cpu_s = level.after.cpu_s - level.before.cpu_s
    target = TARGETS.get(level.groups)
    notes: list[str] = []
    if base_rate is None:
        notes.append(f"MAX_CONCURRENT_AGENTS={max_agents}, AGENT_IDLE_TIMEOUT_S={IDLE_TIMEOUT_S:g}")
    if target is not None:
        notes.append("floor: the msg/s with the SDK runner (issue 15)")
    if level.groups > max_agents:
        notes.append(f"past {max_agents} groups one waits for an idle agent")
    if bad:
        notes.append(f"{bad} agent runs did not end ok, first: {error}")
    extra = {
        "n": n,
        "wall_s": level.wall_s,
        "p50_ms": p50,
        "p95_ms": percentile(ms, 95),
        "daemon_cpu_s": cpu_s,
        "daemon_cpu_pct": cpu_s / level.wall_s * 100,
        "peak_rss_mb": level.after.peak_mb,
        "start_rss_mb": level.before.rss_mb,
        "agent_runs": runs,
        "model_requests": level.requests,
        "sends": level.sends,
    }
    if base_rate is not None:
        extra["vs_1_group"] = rate / base_rate
    return Figure(
        f"load_{level.groups}",
        _name(level.groups),
        rate,
        "msg/s",
        _target_text(level.groups),
        None if target is None else target.met(rate, p50),
        floor=None if target is None else target.sdk_rate,
        ratio=None if target is None else rate / target.sdk_rate,
        extra=extra,
        note="; ".join(notes),
        floor_label="" if target is None else "with the SDK runner",
    )


def load(fake: FakeAnthropic, messages: int) -> list[Figure]:
    """Each level on a fresh daemon and home, with about `messages` messages in all."""
    max_agents = int(Settings.model_fields["max_concurrent_agents"].default)
    figures: list[Figure] = []
    base_rate: float | None = None
    for groups in LEVELS:
        print(f"  {groups} group(s) ...", file=sys.stderr, flush=True)
        try:
            with tempfile.TemporaryDirectory(prefix="nanoclaw-bench-") as tmp:
                home = make_home(Path(tmp))
                level = asyncio.run(_level(fake, groups, math.ceil(messages / groups), home))
        except Exception as exc:  # one level failing leaves the others measured
            figures.append(failed(f"load_{groups}", _name(groups), _target_text(groups), exc))
            continue
        figures.append(_figure(level, base_rate, max_agents))
        if groups == 1:
            base_rate = figures[-1].value
    return figures
