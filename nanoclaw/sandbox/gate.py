"""The gate of a scheduled task: a bash script run in the group's sandbox before the agent.

`parse_gate_output()` reads the verdict from the script's last stdout line (pure);
`run_gate()` runs the script under the agent's own plan and limits, with a timeout.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass

from nanoclaw.errors import SandboxError
from nanoclaw.ipc import files as ipcfs
from nanoclaw.sandbox.cgroup import RunCgroup
from nanoclaw.sandbox.plan import SandboxPlan
from nanoclaw.sandbox.spawn import kill_sandbox, start_sandbox

DATA_CAP = 16 * 1024
STDERR_TAIL = 2 * 1024
DECLINED = "script chose not to wake"


@dataclass(frozen=True)
class Gate:
    """Whether to wake the agent, what to hand it, and for the run log why not."""

    wake: bool
    data: object = None
    reason: str = ""


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def parse_gate_output(stdout: str, exit_code: int) -> Gate:
    """The verdict: the last non-empty line must be a JSON object with "wake": true."""
    if exit_code != 0:
        return Gate(False, reason=f"script exited with code {exit_code}")
    lines = [line.strip() for line in stdout.splitlines() if line.strip()]
    if not lines:
        return Gate(False, reason="script printed nothing")
    try:
        # NaN and Infinity would make the prompt's JSON invalid: refuse them here.
        verdict = json.loads(lines[-1], parse_constant=_no_constant)
    except (ValueError, RecursionError):
        return Gate(False, reason=f"last line is not JSON: {lines[-1][:200]!r}")
    if not isinstance(verdict, dict):
        return Gate(False, reason="last line is not a JSON object")
    wake = verdict.get("wake")
    if wake is False:
        return Gate(False, reason=DECLINED)
    if wake is not True:
        shown = json.dumps(wake)[:50] if "wake" in verdict else "missing"
        return Gate(False, reason=f'"wake" must be true or false, got {shown}')
    data = verdict.get("data")
    size = len(json.dumps(data, ensure_ascii=False).encode())
    if size > DATA_CAP:
        return Gate(False, reason=f"data is {size} bytes, over the {DATA_CAP} byte cap")
    return Gate(True, data=data)


async def _start(plan: SandboxPlan, script: str, cgroup: RunCgroup) -> asyncio.subprocess.Process:
    # bwrap binds llm.sock read-only, so its source must exist (a placeholder: the gate has
    # no model proxy), and its mount points in /ipc must be fresh files, not planted links.
    ipcfs.prepare_mounts(plan.ipc, plan.socket_dir)
    return await start_sandbox(
        plan, ["/bin/bash", "-c", script], cgroup.prefix(), stdin=asyncio.subprocess.DEVNULL
    )


async def _read_capped(proc: asyncio.subprocess.Process, cap: int) -> bytes | None:
    """Stdout up to `cap` bytes, or None past it: then the sandbox is killed and the rest
    drained unkept (on 3.11 `wait()` returns only once every pipe has reached EOF)."""
    assert proc.stdout is not None
    buf, over = bytearray(), False
    while chunk := await proc.stdout.read(65536):
        if not over:
            buf += chunk
            if len(buf) > cap:
                over = True
                kill_sandbox(proc)
    return None if over else bytes(buf)


async def _tail(stream: asyncio.StreamReader) -> bytes:
    tail = b""
    while chunk := await stream.read(65536):
        tail = (tail + chunk)[-STDERR_TAIL:]
    return tail


async def run_gate(
    plan: SandboxPlan, script: str, timeout_s: float = 60.0, output_cap: int = 64 * 1024
) -> Gate:
    """Run `script` with bash in /workspace of the sandbox; never raises for its behaviour."""
    try:  # the same cgroup caps as a run: as root, RLIMIT_NPROC binds nothing
        cgroup = await asyncio.to_thread(RunCgroup.create, plan.limits, "gate")
    except SandboxError as exc:
        return Gate(False, reason=str(exc))
    try:
        proc = await _start(plan, script, cgroup)
    except OSError as exc:
        await asyncio.to_thread(cgroup.remove)
        return Gate(False, reason=f"cannot start the sandbox: {exc}")
    assert proc.stderr is not None
    # Both pipes are read to the end whatever happens, so that `proc.wait()` can return.
    stdout = asyncio.create_task(_read_capped(proc, output_cap))
    stderr = asyncio.create_task(_tail(proc.stderr))
    try:
        async with asyncio.timeout(timeout_s):
            code = await proc.wait()
            out, tail = await stdout, (await stderr).decode(errors="replace").strip()
    except TimeoutError:
        return Gate(False, reason=f"script timed out after {timeout_s:g}s")
    finally:  # timeout, cancellation or done: nothing of the sandbox outlives the call
        kill_sandbox(proc)
        await proc.wait()
        stdout.cancel()
        stderr.cancel()
        await asyncio.to_thread(cgroup.remove)
    if out is None:
        return Gate(False, reason=f"output larger than {output_cap} bytes")
    gate = parse_gate_output(out.decode(errors="replace"), code)
    if not gate.wake and gate.reason != DECLINED and tail:
        return Gate(False, reason=f"{gate.reason}; stderr: {tail}")
    return gate
