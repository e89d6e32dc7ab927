"""One agent run on the host side: model proxy up, bwrap started, progress read, limits kept.

The sandbox is started with an empty environment (bwrap's own /proc/1/environ is readable
inside), reports progress as JSON lines on stdout, and is killed whole on timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from nanoclaw.agent.protocol import EGRESS_SOCK, LLM_SOCK, Event, RunConfig, follow_up, parse_event
from nanoclaw.errors import SandboxError
from nanoclaw.ipc import files as ipcfs
from nanoclaw.progress import Activity, Watch, tool_step
from nanoclaw.proxy.server import ModelProxy
from nanoclaw.sandbox.cgroup import RunCgroup
from nanoclaw.sandbox.egress import EgressProxy
from nanoclaw.sandbox.plan import SandboxPlan, agent_command
from nanoclaw.sandbox.spawn import kill_sandbox, start_sandbox

log = logging.getLogger(__name__)
STDERR_CAP = 1024 * 1024
LINE_CAP = 1024 * 1024
EVENTS_CAP = 100_000
KEY_REFUSED = "the model refused the key: check {setting}"
KEY_SETTINGS = {"openai": "OPENAI_API_KEY", "openai-compatible": "OPENAI_API_KEY"}


def key_refused(provider: str) -> str:
    """The chat's and the log's words for a refused key, naming the provider's setting."""
    return KEY_REFUSED.format(setting=KEY_SETTINGS.get(provider, "ANTHROPIC_API_KEY"))


# stopped: by the owner (/stop); auth: the model endpoint refused the key (401/403 upstream).
# "env": the group's Nix environment could not be built (the run never started)
RunStatus = Literal["ok", "failed", "timeout", "killed", "stopped", "over_budget", "auth", "env"]
# Not retried: the batch waits for the group's next message (a new key, a fixed package list).
HELD: frozenset[RunStatus] = frozenset({"auth", "env"})


@dataclass(frozen=True)
class Outcome:
    status: RunStatus
    error: str = ""
    turns: int = 0

    @property
    def ok(self) -> bool:
        return self.status == "ok"


class AgentRun:
    """A live sandbox for one group. `start()`, then `follow_up()` as needed, then `wait()`."""

    def __init__(
        self,
        *,
        folder: str,
        run_id: int,
        plan: SandboxPlan,
        ipc_root: Path,
        config: RunConfig,
        proxy: ModelProxy,
        timeout_s: float,
        log_path: Path,
        on_turn_done: Callable[[str], Awaitable[None]],
        egress: EgressProxy | None = None,
    ) -> None:
        self.folder = folder
        self.run_id = run_id
        self._plan = plan
        self._ipc_root = ipc_root
        self._config = config
        self._proxy = proxy
        self._egress = egress  # the allowlist policy's proxy, served beside the model's
        self._timeout_s = timeout_s
        self._log_path = log_path
        self._on_turn_done = on_turn_done
        self._proc: asyncio.subprocess.Process | None = None
        self._cgroup = RunCgroup()
        self._closing = False
        self._turns = 0
        self._last_error = ""
        self.started = time.monotonic()
        self.ready_at: float | None = None
        self.activity = Activity()
        self._watch: Watch | None = None

    @property
    def turns(self) -> int:
        """Turns the agent reported done so far."""
        return self._turns

    @property
    def accepting(self) -> bool:
        """Whether a follow-up may still be handed to this run."""
        if self._proc is None or self._proc.returncode is not None or self._closing:
            return False
        # A run close to its hard limit takes no more work; the next message starts afresh.
        return time.monotonic() - self.started < self._timeout_s / 2

    async def start(self) -> None:
        ipcfs.ensure_dirs(self._ipc_root, self.folder)
        ipcfs.clear_input(self._ipc_root, self.folder)
        sockets = self._plan.socket_dir  # host-only: bwrap binds them over /ipc's names
        ipcfs.prepare_mounts(self._plan.ipc, sockets)
        await self._proxy.start(sockets / LLM_SOCK)
        label = f"{self.folder}-{self.run_id}"
        try:  # caps processes and memory as a whole; required when the daemon is root
            if self._egress is not None:
                await self._egress.start(sockets / EGRESS_SOCK)
            self._cgroup = await asyncio.to_thread(RunCgroup.create, self._plan.limits, label)
        except SandboxError:
            await self._stop_proxies()
            raise
        try:
            self._proc = await start_sandbox(
                self._plan,
                agent_command(self._plan.runtime),
                self._cgroup.prefix(),
                stdin=asyncio.subprocess.PIPE,
                limit=LINE_CAP,
            )
        except OSError as exc:
            await self._stop_proxies()
            await asyncio.to_thread(self._cgroup.remove)
            raise SandboxError(f"cannot start bwrap: {exc}") from exc
        assert self._proc.stdin is not None
        self._proc.stdin.write(self._config.to_json().encode())
        await self._proc.stdin.drain()
        self._proc.stdin.close()

    async def _stop_proxies(self) -> None:
        await self._proxy.stop()
        if self._egress is not None:
            await self._egress.stop()

    def follow_up(self, name: str, prompt: str) -> None:
        ipcfs.write_input(self._ipc_root, self.folder, name, follow_up(prompt))

    def close(self) -> None:
        """Ask the agent to finish its current turn and exit."""
        if self._closing or self._proc is None or self._proc.returncode is not None:
            return
        self._closing = True
        try:  # never Path.touch(): it would follow a link the agent planted at that name
            ipcfs.signal_close(self._ipc_root, self.folder)
        except OSError as exc:  # the agent broke its own input/: it cannot be asked, so stop it
            log.warning("run=%s group=%s cannot ask to close: %s", self.run_id, self.folder, exc)
            self.kill()

    def watch(self, listener: Watch) -> None:
        """Tell `listener` of each tool call as the agent reports it (before `wait`)."""
        self._watch = listener

    def pause(self, on: bool) -> bool:
        """Pause (or resume) the agent before its next model call or tool; False when the
        run is over or its input dir cannot take the marker."""
        if self._proc is None or self._proc.returncode is not None:
            return False
        try:
            ipcfs.signal_pause(self._ipc_root, self.folder, on)
        except OSError as exc:
            log.warning("run=%s group=%s cannot pause=%s: %s", self.run_id, self.folder, on, exc)
            return False
        self.activity.paused = on
        return True

    def kill(self) -> None:
        self._closing = True  # a killed run takes no follow-up while it is being reaped
        kill_sandbox(self._proc)

    async def wait(self) -> Outcome:
        proc = self._proc
        if proc is None:
            raise SandboxError("run was not started")
        readers = [
            asyncio.create_task(self._read_events()),
            asyncio.create_task(self._read_stderr()),
        ]
        status: RunStatus = "ok"
        error = ""
        try:  # asyncio.timeout, not wait_for: on 3.11 that can drop a cancel (see Waker)
            async with asyncio.timeout(self._timeout_s):
                await proc.wait()
        except TimeoutError:
            status, error = "timeout", f"killed after {self._timeout_s:.0f}s"
            self.kill()
            await proc.wait()
        except asyncio.CancelledError:
            self.kill()
            await proc.wait()
            raise
        finally:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5):
                    await asyncio.gather(*readers)
            for task in readers:
                task.cancel()
            await self._stop_proxies()
            await asyncio.to_thread(self._cgroup.remove)  # kills whatever escaped the group
        if status == "ok" and proc.returncode != 0:
            status = "failed"
            error = self._last_error or f"agent exited with code {proc.returncode}"
        if status == "failed":
            status, error = self._failure(error)
        return Outcome(status, error, self._turns)

    def _failure(self, error: str) -> tuple[RunStatus, str]:
        """What a failed run means, from what the host's proxy saw (the agent's own report is
        written inside the sandbox: it only gives the words). Over budget or with a refused
        key, a retry would be refused too."""
        proxy = self._proxy
        if proxy.refusal is not None:
            return "over_budget", proxy.refusal
        if proxy.key_refused is not None:
            why = key_refused(proxy.key_provider)
            return "auth", f"{why} (the model endpoint answered {proxy.key_refused})"
        if proxy.unreachable:
            return "failed", f"cannot reach the model endpoint: {proxy.unreachable}"
        return "failed", error

    async def _read_events(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        seen = 0
        while True:
            try:
                line = await self._proc.stdout.readline()
            except ValueError:  # a line over LINE_CAP: drop it, keep reading
                continue
            if not line:
                return
            seen += 1
            event = parse_event(line) if seen <= EVENTS_CAP else None
            if event is not None:
                await self._event(*event)

    async def _event(self, kind: Event, ev: dict[str, Any]) -> None:
        if kind == "ready":
            self.ready_at = time.monotonic()
        elif kind == "turn_done":
            self._turns += 1
            try:
                await self._on_turn_done(str(ev.get("input", "")))
            except Exception:
                log.exception("run=%s group=%s turn_done handling failed", self.run_id, self.folder)
        elif kind == "progress":
            step = tool_step(ev)
            if step is not None:
                self.activity.apply(step)
                try:
                    if self._watch is not None:
                        await self._watch(step)
                except Exception:
                    log.exception(
                        "run=%s group=%s progress handling failed", self.run_id, self.folder
                    )
        elif kind == "paused":
            self.activity.held = ev.get("on") is True
        elif kind == "error":
            self._last_error = str(ev.get("error", ""))[:1000]
            # The run's outcome line (orchestrator) carries it: one line per failure.
            log.debug("run=%s group=%s agent error: %s", self.run_id, self.folder, self._last_error)

    async def _read_stderr(self) -> None:
        """The sandbox's stderr into the run's log, created at its first byte: a run that
        wrote nothing leaves no empty file behind."""
        assert self._proc is not None and self._proc.stderr is not None
        chunk = await self._proc.stderr.read(65536)
        if not chunk:
            return
        written = 0
        await asyncio.to_thread(self._log_path.parent.mkdir, parents=True, exist_ok=True)
        with open(self._log_path, "ab") as fh:  # noqa: ASYNC230 (small appends)
            while chunk:
                if written < STDERR_CAP:
                    fh.write(chunk[: STDERR_CAP - written])
                    written += len(chunk)
                chunk = await self._proc.stderr.read(65536)
            if written >= STDERR_CAP:
                fh.write(b"\n[stderr cut at 1 MiB]\n")
