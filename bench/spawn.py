"""Figure 1 (sandbox spawn against its two floors) and the process-start floors of figure 2.

Every command is started the same way, with `subprocess.run(env={})`, interleaved so
that a drift in machine load hits the measurement and its floors alike.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bench.home import make_home
from bench.report import Figure, median
from nanoclaw.sandbox.cgroup import RunCgroup
from nanoclaw.sandbox.launcher import AGENT_CODE
from nanoclaw.sandbox.plan import SandboxPlan, agent_command, bwrap_argv, write_etc
from nanoclaw.sandbox.runtime import Host, detect_runtime
from nanoclaw.sandbox.seccomp import sandbox_filter
from nanoclaw.sandbox.spawn import CWD, bwrap_launch

# The cheapest bwrap there is: a mount namespace (and, for a normal user, the user
# namespace bwrap then needs) over the host's own root.
BARE_BWRAP = ["bwrap", "--bind", "/", "/", "/bin/true"]
# Options of the plan's argv that make namespaces or set up the process, kept in the
# namespaces floor (with the number of values each takes); every other option is skipped.
KEPT = {
    "--unshare-user": 0,
    "--unshare-pid": 0,
    "--unshare-ipc": 0,
    "--unshare-uts": 0,
    "--unshare-cgroup": 0,
    "--unshare-cgroup-try": 0,
    "--unshare-net": 0,
    "--disable-userns": 0,
    "--die-with-parent": 0,
    "--new-session": 0,
    "--clearenv": 0,
    "--cap-drop": 1,
    "--uid": 1,
    "--gid": 1,
    "--hostname": 1,
}
SKIPPED = {
    "--bind": 2,
    "--ro-bind": 2,
    "--dev-bind": 2,
    "--bind-try": 2,
    "--ro-bind-try": 2,
    "--dev-bind-try": 2,
    "--symlink": 2,
    "--setenv": 2,
    "--file": 2,
    "--tmpfs": 1,
    "--remount-ro": 1,
    "--proc": 1,
    "--dev": 1,
    "--dir": 1,
    "--size": 1,
    "--perms": 1,
    "--seccomp": 1,
    "--chdir": 1,
    "--unsetenv": 1,
}
STDLIB_IMPORT = "import json, socket, http.client, subprocess"
SPAWN_TARGET = 2.0
COLD_TARGET = 2.0


def namespace_floor(argv: list[str], host: Host, command: str = "/bin/true") -> list[str]:
    """bwrap with the namespaces and process options of the plan's `argv` and no mount but
    what runs `command`: /usr read-only and the host's top-level dirs beside it."""
    kept: list[str] = []
    i = 1
    while i < len(argv) and argv[i] != "--":
        opt = argv[i]
        if opt in KEPT:
            kept += argv[i : i + 1 + KEPT[opt]]
            i += 1 + KEPT[opt]
        elif opt in SKIPPED:
            i += 1 + SKIPPED[opt]
        else:  # a new option in the plan: decide here whether it belongs to the floor
            raise ValueError(f"namespace_floor does not know bwrap option {opt}")
    mounts = ["--ro-bind", "/usr", "/usr"]
    for path, target in host.top_dirs:
        mounts += ["--symlink", target, path] if target else ["--ro-bind", path, path]
    return ["bwrap", *kept, *mounts, command]


@dataclass(frozen=True)
class Command:
    """An argv; with `plan`, started as the runner does (spawn.bwrap_launch: options via
    `--args FD`, the seccomp program via `--seccomp FD`), running `argv` in it."""

    argv: list[str]
    prefix: tuple[str, ...] = ()
    plan: SandboxPlan | None = None
    bpf: bytes = b""


@contextlib.contextmanager
def _started(cmd: Command) -> Iterator[subprocess.Popen[bytes]]:
    """The command running, stdout and stderr piped; waited for, and checked, on leaving."""
    with contextlib.ExitStack() as stack:
        argv, fds = [*cmd.prefix, *cmd.argv], tuple[int, ...]()
        if cmd.plan is not None:
            short, fds = stack.enter_context(bwrap_launch(cmd.plan, cmd.argv, cmd.bpf))
            argv = [*cmd.prefix, *short]
        pipe = subprocess.PIPE
        proc = subprocess.Popen(argv, env={}, cwd=CWD, stdout=pipe, stderr=pipe, pass_fds=fds)
    with proc:
        yield proc
        _, err = proc.communicate()
    if proc.returncode != 0:
        why = err.decode(errors="replace").strip().splitlines()[:1]
        raise RuntimeError(f"{argv[0]} exited {proc.returncode}: {why}")


def time_once(cmd: Command) -> float:
    """Wall seconds of one run from fork to exit; a failing command is an error."""
    start = time.perf_counter()
    with _started(cmd) as proc:
        proc.wait()
        elapsed = time.perf_counter() - start
    return elapsed


def time_to_output(cmd: Command) -> tuple[float, float]:
    """Wall seconds from fork to the command's first byte on stdout, and to its exit."""
    start = time.perf_counter()
    with _started(cmd) as proc:
        assert proc.stdout is not None
        proc.stdout.read(1)
        first = time.perf_counter() - start
        proc.wait()
        exited = time.perf_counter() - start
    return first, exited


def interleaved(cmds: list[Command], n: int, warmup: int = 2) -> list[list[float]]:
    """n timings of each command, taken in turn so load drifts hit them alike."""
    times: list[list[float]] = [[] for _ in cmds]
    for i in range(warmup + n):
        for out, cmd in zip(times, cmds, strict=True):
            elapsed = time_once(cmd)
            if i >= warmup:
                out.append(elapsed)
    return times


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


def stdlib_floor(plan: SandboxPlan, prefix: list[str]) -> Command:
    """The floor of figure 2: the runner's interpreter and flags importing what it needs of
    the standard library, in `plan` as the runner is started (jail `prefix`, seccomp). It
    prints a line once the imports are done, the moment an agent could send its request."""
    code = f"{STDLIB_IMPORT}; print(flush=True)"
    argv = [*agent_command(plan.runtime)[:-1], code]  # the runner's -c code replaced
    return Command(argv, tuple(prefix), plan, sandbox_filter().bpf)


def sandbox_spawn(n: int) -> Figure:
    with tempfile.TemporaryDirectory(prefix="nanoclaw-bench-") as tmp:
        plan = _plan(Path(tmp))
        cgroup = RunCgroup.create(plan.limits, "bench")
        try:
            prefix = tuple(cgroup.prefix())
            runner = Command(["/bin/true"], prefix, plan, sandbox_filter().bpf)
            plain = Command([*prefix, *bwrap_argv(plan, ["/bin/true"])])
            floor = Command(namespace_floor(bwrap_argv(plan, ["/bin/true"]), plan.runtime.host))
            cmds = [Command(BARE_BWRAP), floor, runner, plain]
            bares, floors, fulls, plains = interleaved(cmds, n)
        finally:
            cgroup.remove()
    bare_ms, floor_ms, full_ms = (median(x) * 1000 for x in (bares, floors, fulls))
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
            "bare_bwrap_ms": bare_ms,
            "ratio_vs_bare": full_ms / bare_ms,
            "plain_argv_ms": median(plains) * 1000,
            "full_min_ms": min(fulls) * 1000,
            "floor_min_ms": min(floors) * 1000,
        },
        floor_label="bwrap, same namespaces, no mounts",
        note="floor: the plan's namespaces, /usr only; bare: bwrap --bind / / /bin/true; "
        "full: as the runner (cgroup, --args, seccomp, prlimit); plain: one argv, no seccomp",
    )


def anthropic_import_ms(n: int) -> list[float]:
    """`python -c "import anthropic"` on the host with this interpreter, n runs after one
    warm-up: what a runner built on the SDK paid before it could send anything."""
    cmd = Command([sys.executable, "-c", "import anthropic"])
    return [time_once(cmd) * 1000 for _ in range(1 + n)][1:]
