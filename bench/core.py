"""Figures 3 and 4: the in-process pipeline of a running `Core`, as `nanoclaw chat` runs it.

Warm follow-up: a message goes in through `core.ingest` (which wakes the orchestrator)
while the group's agent is live; the clock stops when the fake server receives the model
request carrying it. Reply: an outbound IPC file is renamed into place; the clock stops
when the router calls the terminal channel's `send`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from fake_anthropic import FakeAnthropic, Recorded

from bench.home import (
    BenchChannel,
    bench_settings,
    make_home,
    requests_at_least,
    run_log_tail,
    terminal_message,
)
from bench.report import Figure, percentile
from nanoclaw.agent.ipcfiles import write_json
from nanoclaw.agent.protocol import NUDGE_SOCK
from nanoclaw.app import Core
from nanoclaw.models import MAIN
from nanoclaw.store.messages import Store

LATENCY_TARGET_MS = 25.0
STEP_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class PipelineResult:
    follow_up_ms: list[float]
    reply_ms: list[float]


@contextlib.asynccontextmanager
async def running_core(home: Path, base_url: str) -> AsyncIterator[tuple[Core, BenchChannel]]:
    settings = bench_settings(home, base_url)
    channel = BenchChannel(settings.assistant_name)
    store = await Store.open(settings.layout.db)
    try:
        async with Core.open(settings, store, {"term": channel}) as core:
            started = asyncio.Event()
            task = asyncio.create_task(core.run(started))
            try:
                await asyncio.wait_for(started.wait(), STEP_TIMEOUT_S)
                yield core, channel
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
    finally:
        await store.close()


def _carries(req: Recorded, token: str) -> bool:
    messages = req.body.get("messages") or []
    return bool(messages) and token in json.dumps(messages[-1])


async def _request_with(fake: FakeAnthropic, start: int, token: str) -> Recorded:
    """The first request from index `start` on whose last message carries `token`."""
    n = start + 1
    while True:
        reqs = await requests_at_least(fake, n, STEP_TIMEOUT_S)
        for req in reqs[start:]:
            if _carries(req, token):
                return req
        n = len(reqs) + 1


async def _turn_finished(core: Core, msg_id: int) -> None:
    """The agent reported the turn done and the orchestrator moved the cursor past it."""
    deadline = time.monotonic() + STEP_TIMEOUT_S
    while await core.store.cursor(MAIN) < msg_id:
        if time.monotonic() > deadline:
            raise TimeoutError(f"cursor never reached message {msg_id}")
        await asyncio.sleep(0.005)


async def _send(core: Core, channel: BenchChannel, fake: FakeAnthropic, text: str) -> float:
    """One message through ingest; ms until the model request carrying it; waits for the turn."""
    token = text.split()[-1]
    start = len(fake.requests)
    t0 = time.time()
    msg_id = await core.ingest.message(terminal_message(text))
    if msg_id is None:
        raise RuntimeError("ingest refused the message")
    req = await _request_with(fake, start, token)
    await channel.wait_for(token, STEP_TIMEOUT_S)
    await _turn_finished(core, msg_id)
    return (req.at - t0) * 1000


async def _first_failure(core: Core, home: Path) -> None:
    """Raise as soon as an agent run of the group ends badly (rather than time out later)."""
    while True:
        for run in await core.store.runs(MAIN, 5):
            if run.status not in ("running", "ok"):
                why = f"{run.status} {run.error}: {run_log_tail(home, run.id)}"
                raise RuntimeError(f"agent run {run.id} failed ({why})")
        await asyncio.sleep(0.2)


async def _reply(core: Core, channel: BenchChannel, text: str) -> float:
    outbound = core.layout.ipc / MAIN / "outbound"
    # As the agent does: a hidden temporary name, a rename to <ms>-<hex>.json, a nudge.
    payload = {"type": "send_message", "text": text}
    await asyncio.to_thread(write_json, outbound, payload, core.layout.sockets / MAIN / NUDGE_SOCK)
    t0 = time.perf_counter()  # the file is visible from here on
    sent = await channel.wait_for(text, STEP_TIMEOUT_S)
    return (sent.perf - t0) * 1000


async def _pipeline(
    fake: FakeAnthropic, home: Path, follow_ups: int, replies: int
) -> PipelineResult:
    fake.reset()
    rng = random.Random(7)
    async with running_core(home, fake.base_url) as (core, channel):
        first = asyncio.create_task(_send(core, channel, fake, "first turn starts it tok-start"))
        watch = asyncio.create_task(_first_failure(core, home))
        await asyncio.wait({first, watch}, return_when=asyncio.FIRST_COMPLETED)
        watch.cancel()
        if not first.done():
            first.cancel()
            await watch  # raises the run's failure
        await first
        live = core.orchestrator.live.get(MAIN)
        if live is None or live.run is None or not live.run.accepting:
            raise RuntimeError("the agent is not live after its first turn")
        follow = []
        for i in range(follow_ups):
            await asyncio.sleep(0.02 + rng.random() * 0.03)  # off the poll interval's phase
            follow.append(
                await _send(core, channel, fake, f"follow-up {i} tok-f{i}-{os.urandom(3).hex()}")
            )
        reply = []
        for i in range(replies):
            await asyncio.sleep(0.02 + rng.random() * 0.03)
            reply.append(await _reply(core, channel, f"reply tok-r{i}-{os.urandom(3).hex()}"))
        for live in list(core.orchestrator.live.values()):
            if live.run is not None:
                live.run.close()
        await asyncio.wait_for(core.settle(), STEP_TIMEOUT_S)
    return PipelineResult(follow, reply)


def _latency(key: str, name: str, values: list[float], note: str) -> Figure:
    p50 = percentile(values, 50)
    return Figure(
        key,
        name,
        p50,
        "ms",
        f"p50 <= {LATENCY_TARGET_MS:g} ms",
        p50 <= LATENCY_TARGET_MS,
        extra={"n": len(values), "p90_ms": percentile(values, 90), "max_ms": max(values)},
        note=note,
    )


def pipeline(fake: FakeAnthropic, follow_ups: int, replies: int) -> list[Figure]:
    with tempfile.TemporaryDirectory(prefix="nanoclaw-bench-") as tmp:
        home = make_home(Path(tmp))
        result = asyncio.run(_pipeline(fake, home, follow_ups, replies))
    return [
        _latency(
            "follow_up",
            "warm follow-up: stored -> agent request",
            result.follow_up_ms,
            "ingest.message() called -> fake server got the request carrying it",
        ),
        _latency(
            "reply",
            "reply: outbound file -> channel send",
            result.reply_ms,
            "rename into outbound/ -> TerminalChannel.send called",
        ),
    ]
