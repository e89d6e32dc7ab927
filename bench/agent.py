"""Figure 2: agent cold start (`Launcher.launch()` to the fake's first request) and
the resident memory of that agent once it answered and waits for input.

The launch is the daemon's own (real `Store`, `main` group, the model client and proxy,
bwrap sandbox). Before each launch its floor runs once in the group's own plan, started as
the runner is (cgroup, `--args FD`, seccomp, prlimit, the runner's interpreter and flags).
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from fake_anthropic import FakeAnthropic, Recorded
from pydantic import SecretStr

from bench.home import make_home, requests_at_least, run_log_tail
from bench.report import Figure, failed, median
from bench.spawn import (
    COLD_TARGET,
    STDLIB_IMPORT,
    anthropic_import_ms,
    stdlib_floor,
    time_to_output,
)
from bench.usage import SandboxMemory, sandbox_memory
from nanoclaw.home import ensure_main
from nanoclaw.ipc import files as ipcfs
from nanoclaw.layout import Layout
from nanoclaw.models import MAIN
from nanoclaw.proxy.upstream import upstream_client
from nanoclaw.sandbox.cgroup import RunCgroup
from nanoclaw.sandbox.launcher import AgentSettings, Launcher
from nanoclaw.sandbox.plan import SandboxPlan, agent_command
from nanoclaw.store.messages import Store

RUN_TIMEOUT_S = 60.0
IDLE_WAIT_S = 5.0  # for the runner to block in its wait for input after turn_done
MEMORY_TARGET_MIB = 25.0
COLD_NAME = "agent cold start -> first request"
MEMORY_NAME = "idle agent resident memory"


@dataclass
class ColdRuns:
    samples: list[dict[str, float]] = field(default_factory=list)  # ms to each milestone
    floors: list[float] = field(default_factory=list)  # ms to the imports done
    floors_exit: list[float] = field(default_factory=list)  # ms to the floor's exit
    memory: list[SandboxMemory] = field(default_factory=list)
    memory_error: str = ""


def _floor_ms(layout: Layout, plan: SandboxPlan) -> tuple[float, float]:
    """The floor once, ms from the cgroup's creation (a launch pays it too) until the imports
    are done (what an agent has to wait for), and until the sandbox has exited."""
    ipcfs.ensure_dirs(layout.ipc, MAIN)
    ipcfs.prepare_mounts(plan.ipc, plan.socket_dir)  # the llm.sock bwrap binds
    start = time.perf_counter()
    cgroup = RunCgroup.create(plan.limits, "bench-floor")
    try:
        made = time.perf_counter() - start
        imported, exited = time_to_output(stdlib_floor(plan, cgroup.prefix()))
        return (made + imported) * 1000, (made + exited) * 1000
    finally:
        cgroup.remove()


async def _answered(fake: FakeAnthropic, n: int, turn: asyncio.Event) -> list[Recorded]:
    reqs = await requests_at_least(fake, n, RUN_TIMEOUT_S)
    await asyncio.wait_for(turn.wait(), RUN_TIMEOUT_S)
    return reqs


async def _cold_runs(fake: FakeAnthropic, home: Path, n: int) -> ColdRuns:
    """n + 1 launches (the first warms the page cache), each after its floor so load
    drifts hit both alike; after each turn, the idle agent's memory."""
    store = await Store.open(home / "store" / "nanoclaw.db")
    out = ColdRuns()
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
        )
        async with upstream_client(SecretStr("k"), fake.base_url) as client:
            launcher = Launcher(store, Layout(home), agent, client)
            plan = await launcher.prepare(group)  # the group's own plan, as launch() makes it
            runner_argv = agent_command(plan.runtime)
            for i in range(n + 1):
                imported, exited = await asyncio.to_thread(_floor_ms, Layout(home), plan)
                if i:
                    out.floors.append(imported)
                    out.floors_exit.append(exited)
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
                if i and not out.memory_error:
                    try:  # the agent has answered its turn and waits for input
                        args = (os.getpid(), runner_argv, IDLE_WAIT_S)
                        out.memory.append(await asyncio.to_thread(sandbox_memory, *args))
                    except (OSError, RuntimeError, ValueError) as exc:
                        out.memory_error = f"{exc.__class__.__name__}: {exc}"
                run.close()
                outcome = await waiter
                if not outcome.ok:
                    raise RuntimeError(f"agent run {outcome.status}: {outcome.error}")
                if i == 0:
                    continue
                ready = (run.ready_at or float("nan")) - m0
                out.samples.append(
                    {
                        "first_request_ms": (reqs[before].at - t0) * 1000,
                        "launch_returned_ms": (launched - m0) * 1000,
                        "agent_ready_ms": ready * 1000,
                    }
                )
    finally:
        await store.close()
    return out


def _cold_figure(runs: ColdRuns, anthropic: list[float]) -> Figure:
    samples = runs.samples
    first = median([s["first_request_ms"] for s in samples])
    floor = median(runs.floors)
    ratio = first / floor
    extra = {
        "n": len(samples),
        "launch_returned_ms": median([s["launch_returned_ms"] for s in samples]),
        "agent_ready_ms": median([s["agent_ready_ms"] for s in samples]),
        "min_ms": min(s["first_request_ms"] for s in samples),
        "floor_min_ms": min(runs.floors),
        "floor_to_exit_ms": median(runs.floors_exit),
    }
    if anthropic:
        extra["anthropic_import_ms"] = median(anthropic)
    return Figure(
        "cold_start",
        COLD_NAME,
        first,
        "ms",
        f"<= {COLD_TARGET:g}x floor",
        ratio <= COLD_TARGET,
        floor=floor,
        ratio=ratio,
        extra=extra,
        floor_label="stdlib import in the same sandbox",
        note=f'floor: python -I -S -B -c "{STDLIB_IMPORT}" in the same sandbox, '
        'until the imports are done; anthropic_import: host python -c "import anthropic"',
    )


def _memory_figure(runs: ColdRuns) -> Figure:
    target = f"<= {MEMORY_TARGET_MIB:g} MiB"
    if runs.memory_error or not runs.memory:
        why = runs.memory_error or "no idle agent was measured"
        return failed("idle_rss", MEMORY_NAME, target, RuntimeError(why))

    def mib(values: list[int]) -> float:
        return median(values) / 1024

    rss = mib([m.runner.rss_kib for m in runs.memory])
    return Figure(
        "idle_rss",
        MEMORY_NAME,
        rss,
        "MiB",
        target,
        rss <= MEMORY_TARGET_MIB,
        extra={
            "n": len(runs.memory),
            "runner_pss_mib": mib([m.runner.pss_kib for m in runs.memory]),
            "runner_anon_mib": mib([m.runner.anon_kib for m in runs.memory]),
            "sandbox_rss_mib": mib([m.rss_kib for m in runs.memory]),
            "sandbox_pss_mib": mib([m.pss_kib for m in runs.memory]),
            "processes": len(runs.memory[-1].processes),
        },
        note="runner python's VmRSS after one turn, waiting for input; "
        "sandbox: its processes summed (bwrap's included)",
    )


def cold_start(fake: FakeAnthropic, n: int, anthropic_n: int) -> list[Figure]:
    """Cold start and idle memory from the same n launches; the SDK import as a reference."""
    with tempfile.TemporaryDirectory(prefix="nanoclaw-bench-") as tmp:
        home = make_home(Path(tmp))
        runs = asyncio.run(_cold_runs(fake, home, n))
    anthropic = anthropic_import_ms(anthropic_n) if anthropic_n else []
    return [_cold_figure(runs, anthropic), _memory_figure(runs)]
