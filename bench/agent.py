"""Figure 2: agent cold start, from `Launcher.launch()` to the first model request.

The launch is the daemon's own: a real `Store`, the registered `main` group, an aiohttp
session, the host-side model proxy and a bwrap sandbox; the fake Anthropic server is the
model endpoint. The clock stops at the server's arrival stamp (`Recorded.at`).
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

from aiohttp import ClientSession
from fake_anthropic import FakeAnthropic, Recorded
from pydantic import SecretStr

from bench.home import make_home, requests_at_least, run_log_tail
from bench.report import Figure, median
from bench.spawn import COLD_TARGET, import_anthropic_ms
from nanoclaw.home import ensure_main
from nanoclaw.layout import Layout
from nanoclaw.models import MAIN
from nanoclaw.sandbox.launcher import AgentSettings, Launcher
from nanoclaw.store.messages import Store

RUN_TIMEOUT_S = 60.0


async def _answered(fake: FakeAnthropic, n: int, turn: asyncio.Event) -> list[Recorded]:
    reqs = await requests_at_least(fake, n, RUN_TIMEOUT_S)
    await asyncio.wait_for(turn.wait(), RUN_TIMEOUT_S)
    return reqs


async def _cold_runs(
    fake: FakeAnthropic, home: Path, n: int, floor_n: int
) -> tuple[list[dict[str, float]], list[float], list[float]]:
    """n + 1 launches (the first warms the page cache), each after the floor commands so
    load drifts hit all alike; per launch: ms to each milestone. Also the floors in ms:
    the SPEC's (import, then exit) and the import alone (no interpreter teardown)."""
    store = await Store.open(home / "store" / "nanoclaw.db")
    samples: list[dict[str, float]] = []
    floors: list[float] = []
    imports: list[float] = []
    try:
        await ensure_main(store)
        group = await store.group(MAIN)
        assert group is not None
        agent = AgentSettings(
            assistant_name="Andy",
            model="claude-bench",
            tz="UTC",
            idle_timeout_s=RUN_TIMEOUT_S,
            timeout_s=RUN_TIMEOUT_S * 2,
            api_key=SecretStr("k"),
            base_url=fake.base_url,
        )
        async with ClientSession() as session:
            launcher = Launcher(store, Layout(home), agent, session)
            for i in range(n + 1):
                floor = await asyncio.to_thread(import_anthropic_ms, 1, 0)
                only = await asyncio.to_thread(import_anthropic_ms, 1, 0, False)
                floors += floor if i else []
                imports += only if i else []
                before = len(fake.requests)
                run_id = await store.start_run(MAIN, "message", None, None)
                turn = asyncio.Event()

                async def done(_name: str, turn: asyncio.Event = turn) -> None:
                    turn.set()

                t0, m0 = time.time(), time.monotonic()
                run = await launcher.launch(group, run_id, "[[say: cold start ok]]", done)
                launched = time.monotonic()
                waiter = asyncio.create_task(run.wait())
                answered = asyncio.create_task(_answered(fake, before + 1, turn))
                await asyncio.wait({waiter, answered}, return_when=asyncio.FIRST_COMPLETED)
                if not answered.done() or answered.exception() is not None:
                    answered.cancel()
                    run.kill()
                    outcome = await waiter
                    why = f"{outcome.status} {outcome.error}: {run_log_tail(home, run_id)}"
                    raise RuntimeError(f"agent never answered ({why})")
                reqs = answered.result()
                run.close()
                outcome = await waiter
                if not outcome.ok:
                    raise RuntimeError(f"agent run {outcome.status}: {outcome.error}")
                if i == 0:
                    continue
                ready = (run.ready_at or float("nan")) - m0
                samples.append(
                    {
                        "first_request_ms": (reqs[before].at - t0) * 1000,
                        "launch_returned_ms": (launched - m0) * 1000,
                        "agent_ready_ms": ready * 1000,
                    }
                )
    finally:
        await store.close()
    if floor_n > n:
        floors += await asyncio.to_thread(import_anthropic_ms, floor_n - n, 0)
    return samples, floors, imports


def cold_start(fake: FakeAnthropic, n: int, floor_n: int) -> Figure:
    with tempfile.TemporaryDirectory(prefix="nanoclaw-bench-") as tmp:
        home = make_home(Path(tmp))
        samples, floors, imports = asyncio.run(_cold_runs(fake, home, n, floor_n))
    first = median([s["first_request_ms"] for s in samples])
    floor = median(floors)
    ratio = first / floor
    return Figure(
        "cold_start",
        "agent cold start -> first request",
        first,
        "ms",
        f"<= {COLD_TARGET:g}x floor",
        ratio <= COLD_TARGET,
        floor=floor,
        ratio=ratio,
        extra={
            "n": n,
            "launch_returned_ms": median([s["launch_returned_ms"] for s in samples]),
            "agent_ready_ms": median([s["agent_ready_ms"] for s in samples]),
            "min_ms": min(s["first_request_ms"] for s in samples),
            "floor_n": len(floors),
            "import_only_ms": median(imports),
            "ratio_vs_import_only": first / median(imports),
        },
        note='floor = python -c "import anthropic"; agent_ready = "ready" event read by host',
    )
