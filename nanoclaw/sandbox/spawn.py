"""Starting one sandbox process from its plan, and killing it whole (runs and gates alike).

bwrap's options travel through a memfd (`--args FD`, see `sandbox.hide_args`) so its command
line shows no host path, and the seccomp program through a pipe (`--seccomp FD`); no
sandbox starts without it. bwrap starts with an empty environment and cwd `/` (its own
/proc/1/environ is readable inside; the cgroup jail's shell would export PWD) and leads a
session of its own, so the sandbox is one process group.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Iterator

from nanoclaw.sandbox.plan import SandboxPlan, bwrap_argv, hide_args
from nanoclaw.sandbox.seccomp import sandbox_filter

Process = asyncio.subprocess.Process
STREAM_LIMIT = 64 * 1024  # asyncio's own default line limit
CWD = "/"  # no host path for the jail's shell to export as PWD


def _pipe_with(data: bytes) -> int:
    """The read end of a pipe that holds `data` and is closed for writing. The payloads (a
    few KiB of options, a BPF program of at most 32 KiB) fit the pipe's 64 KiB buffer, so
    the write never blocks."""
    read_end, write_end = os.pipe()
    try:
        os.write(write_end, data)
    except BaseException:
        os.close(read_end)
        raise
    finally:
        os.close(write_end)
    return read_end


def _fill(fd: int, data: bytes) -> None:
    """Write `data` into a memory file and rewind it for bwrap. Not a pipe: the options of a
    plan with a Nix environment grow with its closure (hundreds of store paths) past a
    pipe's 64 KiB, and a write before bwrap reads would then block forever."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
    os.lseek(fd, 0, os.SEEK_SET)


@contextlib.contextmanager
def bwrap_launch(
    plan: SandboxPlan, command: list[str], bpf: bytes
) -> Iterator[tuple[list[str], tuple[int, int]]]:
    """bwrap's short argv and the fds it reads (options, seccomp program), open for the
    block: start the process inside it, passing both."""
    args_fd = filter_fd = -1
    try:
        filter_fd = _pipe_with(bpf)
        argv = bwrap_argv(plan, command, seccomp_fd=filter_fd)
        args_fd = os.memfd_create("bwrap-args", os.MFD_CLOEXEC)
        short, payload = hide_args(argv, args_fd)
        _fill(args_fd, payload)
        yield short, (args_fd, filter_fd)
    finally:
        for fd in (args_fd, filter_fd):
            if fd >= 0:
                os.close(fd)


async def start_sandbox(
    plan: SandboxPlan,
    command: list[str],
    prefix: list[str],
    *,
    stdin: int,
    limit: int = STREAM_LIMIT,
) -> Process:
    """`prefix` (the cgroup jail) + bwrap running `command`; stdout and stderr are pipes.
    seccomp.FilterUnavailable (an OSError) when the filter cannot be built."""
    bpf = sandbox_filter().bpf
    with bwrap_launch(plan, command, bpf) as (short, fds):
        return await asyncio.create_subprocess_exec(
            *prefix,
            *short,
            stdin=stdin,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={},
            cwd=CWD,
            start_new_session=True,
            pass_fds=fds,
            limit=limit,
        )


def kill_sandbox(proc: Process | None) -> None:
    """SIGKILL the sandbox's whole process group, if it still runs."""
    if proc is not None and proc.returncode is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
