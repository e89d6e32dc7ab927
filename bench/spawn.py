"""Figure 1 (sandbox spawn) and the process-start floors of figure 2.

Every command is started the same way, with `subprocess.run(env={})`, interleaved so
that a drift in machine load hits the measurement and its floor alike.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.home import make_home
from bench.report import Figure, median
from nanoclaw.sandbox.cgroup import RunCgroup
from nanoclaw.sandbox.launcher import AGENT_CODE
from nanoclaw.sandbox.plan import SandboxPlan, bwrap_argv, detect_runtime, write_etc
from nanoclaw.sandbox.seccomp import sandbox_filter
from nanoclaw.sandbox.spawn import CWD, bwrap_launch

MINIMAL_BWRAP = [
    "bwrap",
    "--unshare-user",
    "--ro-bind",
    "/usr",
    "/usr",
    "--symlink",
    "usr/bin",
    "/bin",
    "--symlink",
    "usr/lib",
    "/lib",
    "--symlink",
    "usr/lib64",
    "/lib64",
    "/bin/true",
]
SPAWN_TARGET = 2.0
COLD_TARGET = 1.3


@dataclass(frozen=True)
class Command:
    """An argv; with `plan`, started as the runner does (spawn.bwrap_launch: options via
    `--args FD`, the seccomp program via `--seccomp FD`), running `argv` in it."""

    argv: list[str]
    prefix: tuple[str, ...] = ()
    plan: SandboxPlan | None = None
    bpf: bytes = b""


def _plan(home: Path) -> SandboxPlan:
    make_home(home)
    return SandboxPlan(
        workspace=home / "groups" / "main",
        ipc=home / "store" / "ipc" / "main",
        global_dir=home / "groups" / "global",
        global_writable=True,
        skills=home / "skills",
        agent_code=AGENT_CODE,
        etc=write_etc(home / "store" / "sandbox" / "etc"),
        runtime=detect_runtime(),
        env=(("TZ", "UTC"),),
    )


def full_plan_commands(home: Path, cgroup: RunCgroup) -> tuple[Command, Command]:
    """bwrap with the whole mount plan for `main` running /bin/true (prlimit inside), joined
    to the run's cgroup: as the runner starts it (options through `--args FD`, the seccomp
    filter), and as one plain argv with no filter."""
    plan = _plan(home)
    prefix = tuple(cgroup.prefix())
    runner = Command(["/bin/true"], prefix, plan, sandbox_filter().bpf)
    return runner, Command([*prefix, *bwrap_argv(plan, ["/bin/true"])])


def time_once(cmd: Command) -> float:
    """Wall seconds of one run from fork to exit; a failing command is an error."""
    start = time.perf_counter()
    with contextlib.ExitStack() as stack:
        argv, fds = [*cmd.prefix, *cmd.argv], tuple[int, ...]()
        if cmd.plan is not None:
            short, fds = stack.enter_context(bwrap_launch(cmd.plan, cmd.argv, cmd.bpf))
            argv = [*cmd.prefix, *short]
        quiet, err = subprocess.DEVNULL, subprocess.PIPE
        done = subprocess.run(argv, env={}, cwd=CWD, stdout=quiet, stderr=err, pass_fds=fds)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        why = done.stderr.decode(errors="replace").strip().splitlines()[:1]
        raise RuntimeError(f"{argv[0]} exited {done.returncode}: {why}")
    return elapsed


def interleaved(cmds: list[Command], n: int, warmup: int = 2) -> list[list[float]]:
    """n timings of each command, taken in turn so load drifts hit them alike."""
    times: list[list[float]] = [[] for _ in cmds]
    for i in range(warmup + n):
        for out, cmd in zip(times, cmds, strict=True):
            elapsed = time_once(cmd)
            if i >= warmup:
                out.append(elapsed)
    return times


def sandbox_spawn(n: int) -> Figure:
    with tempfile.TemporaryDirectory(prefix="nanoclaw-bench-") as tmp:
        cgroup = RunCgroup.create(_plan(Path(tmp)).limits, "bench")
        try:
            runner, plain = full_plan_commands(Path(tmp), cgroup)
            floors, fulls, plains = interleaved([Command(MINIMAL_BWRAP), runner, plain], n)
        finally:
            cgroup.remove()
    floor_ms, full_ms = median(floors) * 1000, median(fulls) * 1000
    ratio = full_ms / floor_ms
    return Figure(
        "spawn",
        "sandbox spawn (full plan, /bin/true)",
        full_ms,
        "ms",
        f"<= {SPAWN_TARGET:g}x floor",
        ratio <= SPAWN_TARGET,
        floor=floor_ms,
        ratio=ratio,
        extra={
            "n": n,
            "full_min_ms": min(fulls) * 1000,
            "floor_min_ms": min(floors) * 1000,
            "plain_argv_ms": median(plains) * 1000,
        },
        note="floor = minimal bwrap of /bin/true; full = cgroup jail + bwrap --args FD + "
        "seccomp filter + prlimit inside, as the runner; plain argv: no --args, no filter",
    )


def import_anthropic_ms(n: int, warmup: int = 1, teardown: bool = True) -> list[float]:
    """The floor of figure 2: this interpreter importing the SDK, n runs. With `teardown`
    off the process leaves by os._exit, skipping the interpreter's (long) finalisation,
    which an agent that is still running has not paid either."""
    code = "import anthropic" if teardown else "import anthropic, os; os._exit(0)"
    cmd = Command([sys.executable, "-c", code])
    return [time_once(cmd) * 1000 for _ in range(warmup + n)][warmup:]
