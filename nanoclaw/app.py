"""The composition root: builds store, router, orchestrator, IPC handler and watcher, runs them.

`Core` is shared by `nanoclaw run` (network channels) and a `nanoclaw chat` that finds no
daemon (terminal only). One process at a time holds the store's daemon lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import IO

from aiohttp import ClientSession
from pydantic import SecretStr

from nanoclaw.budget import Budget
from nanoclaw.channel import Channel, Ingest, welcome_of
from nanoclaw.config import Settings
from nanoclaw.errors import SandboxError
from nanoclaw.gate import Gate, run_gate
from nanoclaw.ipc import IpcHandler
from nanoclaw.launcher import AgentSettings, Launcher, RunOptions
from nanoclaw.models import MAIN, Group
from nanoclaw.orchestrator import Orchestrator, Rules
from nanoclaw.router import Router
from nanoclaw.runner import AgentRun
from nanoclaw.scheduler import Scheduler
from nanoclaw.store import Store
from nanoclaw.taskfile import TaskFile
from nanoclaw.watcher import IpcWatcher

log = logging.getLogger(__name__)
CLOSE_GRACE_S = 5.0
GATE_TIMEOUT_S = 60.0


def try_lock(path: Path) -> IO[str] | None:
    """Take the daemon lock without waiting; None when another process holds it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fh = open(path, "a+")  # noqa: SIM115 (held for the process lifetime)
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.close()
        return None
    fh.seek(0)
    fh.truncate()
    fh.write(str(os.getpid()))
    fh.flush()
    return fh


async def ensure_main(store: Store) -> None:
    """The admin group exists from the first start, bound to the terminal chat."""
    if await store.group(MAIN) is None:
        await store.save_group(
            Group(folder=MAIN, name="main", chats=("term:main",), requires_trigger=False)
        )


def agent_settings(settings: Settings) -> AgentSettings:
    return AgentSettings(
        assistant_name=settings.assistant_name,
        model=settings.nanoclaw_model,
        tz=settings.tz,
        idle_timeout_s=settings.agent_idle_timeout_s,
        timeout_s=settings.agent_timeout_s,
        api_key=settings.anthropic_api_key or SecretStr(""),
        base_url=settings.anthropic_base_url,
        budget=Budget(settings.group_daily_requests, settings.group_daily_tokens),
    )


class Core:
    def __init__(self, settings: Settings, store: Store, channels: Mapping[str, Channel]) -> None:
        self.settings = settings
        self.store = store
        self.channels = channels
        self.layout = settings.layout
        # Replies are queued in this process (the IPC handler wakes the router at once) and
        # retries carry their due time, so the router's own poll is only a safety net.
        self.router = Router(store, channels, max(settings.poll_interval_ms / 1000, 2.0))
        self.launcher: Launcher | None = None
        self._stopping_on = ""  # the signal that stopped `serve`
        rules = Rules(
            allowed_senders=tuple(settings.allowed_senders),
            default_trigger=settings.trigger,
            zone=settings.zone,
        )
        self.orchestrator = Orchestrator(
            store,
            rules,
            max_concurrent=settings.max_concurrent_agents,
            poll_s=settings.poll_interval_ms / 1000,
            launch=self._launch,
            drain=self._drain,
            typing=self.router.typing,
            gate=self._gate,
            tasks_changed=self._tasks_changed,
        )
        self.scheduler = Scheduler(
            store, self.layout.ipc, settings.zone, submit=self.orchestrator.task_due
        )
        self.taskfile = TaskFile(store, self.layout.groups, settings.zone, self._tasks_changed)
        self.ipc = IpcHandler(
            store,
            self.layout.ipc,
            self.layout.groups,
            settings.zone,
            current_run=self.orchestrator.current_run,
            on_reply=self.router.wake,
            on_groups_changed=self._groups_changed,
            on_tasks_changed=self._tasks_changed,
            files_root=self.layout.files,
        )
        self.watcher = IpcWatcher(self.ipc, store, self.layout.ipc)
        self.ingest = Ingest(store, self.orchestrator.wake, welcome_of(settings), self.router.wake)

    def _groups_changed(self) -> None:
        self.watcher.refresh()
        self.taskfile.refresh()
        self.orchestrator.wake()

    def _tasks_changed(self, folder: str) -> None:
        self.scheduler.changed(folder)

    async def _launch(
        self,
        group: Group,
        run_id: int,
        prompt: str,
        done: Callable[[str], Awaitable[None]],
        options: RunOptions,
    ) -> AgentRun:
        if self.launcher is None:
            raise SandboxError("the daemon is not running")
        return await self.launcher.launch(group, run_id, prompt, done, options)

    async def _gate(self, group: Group, script: str) -> Gate:
        if self.launcher is None:
            raise SandboxError("the daemon is not running")
        return await run_gate(await self.launcher.prepare(group), script, GATE_TIMEOUT_S)

    async def _drain(self, folder: str) -> int:
        return await self.ipc.drain(folder)

    async def serve(self) -> None:
        """`nanoclaw run`: run until SIGTERM or SIGINT, then shut down as on a cancel."""
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        signals = (signal.SIGTERM, signal.SIGINT)

        def stop(sig: signal.Signals) -> None:
            if not self._stopping_on:  # a second signal changes nothing: the grace is short
                self._stopping_on = sig.name
                task.cancel()

        for sig in signals:
            loop.add_signal_handler(sig, stop, sig)
        try:
            await self.run()
        except asyncio.CancelledError:
            if not self._stopping_on or task.uncancel() > 0:
                raise  # cancelled by someone else, not by a signal: theirs to handle
        finally:
            for sig in signals:
                loop.remove_signal_handler(sig)

    async def run(self, started: asyncio.Event | None = None) -> None:
        """Run until cancelled; on the way out live agents are closed, then killed."""
        await self.store.interrupt_stale_runs()
        await ensure_main(self.store)
        async with ClientSession() as session:
            self.launcher = Launcher(
                self.store, self.layout, agent_settings(self.settings), session
            )
            for channel in self.channels.values():
                await channel.start(self.ingest)
            try:
                async with asyncio.TaskGroup() as tasks:
                    tasks.create_task(self.watcher.run(), name="ipc-watcher")
                    await self.watcher.ready.wait()
                    tasks.create_task(self.router.run(), name="router")
                    tasks.create_task(self.orchestrator.run(), name="orchestrator")
                    tasks.create_task(self.taskfile.run(), name="claude-md-tasks")
                    await self.taskfile.ready.wait()
                    tasks.create_task(self.scheduler.run(), name="scheduler")
                    if started is not None:
                        started.set()
            finally:
                await self._shutdown()

    async def _shutdown(self) -> None:
        why = f" ({self._stopping_on})" if self._stopping_on else ""
        log.info("stopping: %d runs in flight%s", len(self.orchestrator.live), why)
        self.orchestrator.close_live()
        with contextlib.suppress(TimeoutError):  # not wait_for: on 3.11 it can drop a cancel
            async with asyncio.timeout(CLOSE_GRACE_S):
                await self.orchestrator.queue.wait_idle()
        await self.orchestrator.queue.shutdown()
        for channel in self.channels.values():
            try:
                await channel.stop()
            except Exception:
                log.exception("channel %s failed to stop", channel.name)


@contextlib.asynccontextmanager
async def open_store(settings: Settings) -> AsyncIterator[Store]:
    store = await Store.open(settings.layout.db)
    try:
        yield store
    finally:
        await store.close()
