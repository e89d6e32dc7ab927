"""Starting one sandbox process from its plan, and killing it whole (runs and gates alike).

bwrap's options travel through a pipe (`--args FD`, see `sandbox.hide_args`) so its command
line shows no host path; it starts with an empty environment (its own /proc/1/environ is
readable inside) and leads a session of its own, so the sandbox is one process group.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal

from nanoclaw.sandbox import SandboxPlan, bwrap_argv, hide_args

Process = asyncio.subprocess.Process
STREAM_LIMIT = 64 * 1024  # asyncio's own default line limit


async def start_sandbox(
    plan: SandboxPlan,
    command: list[str],
    prefix: list[str],
    *,
    stdin: int,
    limit: int = STREAM_LIMIT,
) -> Process:
    """`prefix` (the cgroup jail) + bwrap running `command`; stdout and stderr are pipes."""
    read_end, write_end = os.pipe()
    short, payload = hide_args(bwrap_argv(plan, command), read_end)
    try:
        os.write(write_end, payload)  # far below the pipe's buffer: never blocks
        os.close(write_end)
        write_end = -1
        return await asyncio.create_subprocess_exec(
            *prefix,
            *short,
            stdin=stdin,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={},
            start_new_session=True,
            pass_fds=(read_end,),
            limit=limit,
        )
    finally:
        os.close(read_end)
        if write_end >= 0:
            os.close(write_end)


def kill_sandbox(proc: Process | None) -> None:
    """SIGKILL the sandbox's whole process group, if it still runs."""
    if proc is not None and proc.returncode is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
