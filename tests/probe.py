"""Scripts run in a real sandbox, started as the runner starts one, for the escape and
limit probes: the plan's argv hidden in an fd, the seccomp filter, an empty environment,
cwd /, a session of its own, the run's cgroup in front. `user=NOBODY` starts it as an
ordinary daemon user would.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from nanoclaw.sandbox.cgroup import RunCgroup
from nanoclaw.sandbox.plan import Limits, SandboxPlan, write_etc
from nanoclaw.sandbox.runtime import Runtime, detect_host
from nanoclaw.sandbox.seccomp import sandbox_filter
from nanoclaw.sandbox.spawn import CWD, bwrap_launch

NOBODY = 65534
SYSTEM_RUNTIME = Runtime(mounts=(), python="/usr/bin/python3", masked=(), host=detect_host())
MODES = ("root", "user")  # the daemon as root (RLIMIT_NPROC void: a cgroup), or not


@contextlib.contextmanager
def plan_dir() -> Iterator[Path]:
    """A directory for a plan; an ordinary user must be able to reach it, so not tmp_path."""
    base = Path(tempfile.mkdtemp(prefix="nanoclaw-probe-"))
    os.chmod(base, 0o755)
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


def make_plan(base: Path, mode: str, limits: Limits | None = None, **kw: Any) -> SandboxPlan:
    for sub in ("ws", "ipc/probe/errors", "global", "skills", "etc", "agent"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    (base / "ipc" / "probe" / "llm.sock").touch()
    write_etc(base / "etc")
    if mode == "user":
        subprocess.run(["chown", "-R", f"{NOBODY}:{NOBODY}", str(base)], check=True)
    return SandboxPlan(
        workspace=base / "ws",
        ipc=base / "ipc" / "probe",
        global_dir=base / "global",
        global_writable=False,
        skills=base / "skills",
        agent_code=base / "agent",
        etc=base / "etc",
        runtime=SYSTEM_RUNTIME,
        limits=limits or Limits(),
        **kw,
    )


class Sandbox:
    """`script` run by bash in a started sandbox; leaving the block kills it whole."""

    def __init__(self, plan: SandboxPlan, script: str, mode: str = "root") -> None:
        self.mode = mode
        self.cgroup = RunCgroup.create(plan.limits, "probe") if mode == "root" else RunCgroup()
        user = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
        try:
            command, bpf = ["/bin/bash", "-c", script], sandbox_filter().bpf
            with bwrap_launch(plan, command, bpf) as (short, fds):
                self.proc = subprocess.Popen(
                    [*self.cgroup.prefix(), *(user if mode == "user" else []), *short],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    env={},
                    cwd=CWD,
                    start_new_session=True,
                    pass_fds=fds,
                    text=True,
                    errors="replace",
                )
        except BaseException:
            self.cgroup.remove()
            raise

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()
        self.proc.communicate()
        self.cgroup.remove()

    def kill(self) -> None:
        """What the runner does on timeout: SIGKILL to the process group bwrap leads."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)

    def output(self, timeout: float = 60) -> tuple[int, str]:
        out, _ = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, out

    def readline(self) -> str:
        assert self.proc.stdout is not None
        return self.proc.stdout.readline()


def run(plan: SandboxPlan, script: str, mode: str = "root", timeout: float = 60) -> str:
    """The script's output (stdout and stderr); its exit code is printed as a last line."""
    with Sandbox(plan, f"{{ {script}\n}} 2>&1; echo exit=$?", mode) as box:
        return box.output(timeout)[1]


def descendants(pid: int) -> set[int]:
    """`pid` and every process below it now (sandbox processes reparent inside the tree)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    found, todo = set(), [pid]
    while todo:
        current = todo.pop()
        found.add(current)
        todo.extend(children.get(current, ()))
    return found


def alive(pid: int) -> bool:
    """Running, not a zombie waiting to be reaped."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def peak_processes(pid: int, seconds: float) -> int:
    """The most processes seen at once in `pid`'s tree over `seconds`."""
    peak, deadline = 0, time.monotonic() + seconds
    while time.monotonic() < deadline:
        peak = max(peak, len(descendants(pid)))
        time.sleep(0.05)
    return peak
