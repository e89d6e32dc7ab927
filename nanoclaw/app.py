"""The composition root: builds store, router, orchestrator, IPC handler and watcher, runs them.

`Core.open` builds it where the model client exists; it is shared by `nanoclaw run` (network
channels) and a `nanoclaw chat` that finds no daemon (terminal only). One process at a time
holds the store's daemon lock; `settle()` runs the pipeline until idle for tests and bench.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator, Mapping

from anthropic import AsyncAnthropic
from pydantic import SecretStr

from nanoclaw.approvals import Approvals
from nanoclaw.channel import Channel, Ingest, username_of, welcome_of
from nanoclaw.config import Settings
from nanoclaw.control import Control
from nanoclaw.home import ensure_main
from nanoclaw.ipc.handler import IpcHandler
from nanoclaw.ipc.watcher import IpcWatcher
from nanoclaw.live import LiveRuns
from nanoclaw.media.saver import media_saver
from nanoclaw.metrics import Metrics
from nanoclaw.models import MAIN, Group
from nanoclaw.nixenv import EnvError, Environments
from nanoclaw.orchestrator import Orchestrator, Rules
from nanoclaw.pricing import load_prices
from nanoclaw.progress import ToolStep
from nanoclaw.proxy.budget import Budget
from nanoclaw.proxy.openai_upstream import openai_client
from nanoclaw.proxy.providers import Upstreams
from nanoclaw.proxy.upstream import upstream_client
from nanoclaw.retention import Retention
from nanoclaw.router import Router
from nanoclaw.sandbox.gate import Gate, run_gate
from nanoclaw.sandbox.launcher import AgentSettings, Launcher
from nanoclaw.schedule.scheduler import Scheduler, TaskChanges
from nanoclaw.schedule.taskfile import TaskFile
from nanoclaw.store.messages import Store

log = logging.getLogger(__name__)
CLOSE_GRACE_S = 5.0
GATE_TIMEOUT_S = 60.0


def agent_settings(settings: Settings) -> AgentSettings:
    return AgentSettings(
        assistant_name=settings.assistant_name,
        model=settings.nanoclaw_model,
        tz=settings.tz,
        idle_timeout_s=settings.agent_idle_timeout_s,
        timeout_s=settings.agent_timeout_s,
        budget=Budget(
            settings.group_daily_requests, settings.group_daily_tokens, settings.group_daily_cost
        ),
        prices=load_prices(settings.nanoclaw_prices),
        provider=settings.llm_provider,
        fallback_models=tuple(settings.nanoclaw_fallback_models),
    )


def model_client(settings: Settings) -> Upstreams:
    """The daemon's model clients, one per provider it can reach, which every run's proxy
    sends through; close them. OpenAI's with OPENAI_API_KEY (at LLM_BASE_URL when set), an
    OpenAI-compatible endpoint's with LLM_BASE_URL (its key optional)."""
    key = settings.openai_api_key
    base = settings.llm_base_url
    return Upstreams(
        upstream_client(settings.anthropic_api_key or SecretStr(""), settings.anthropic_base_url),
        openai_client(key, base) if key is not None else None,
        openai_client(key, base) if base is not None else None,
    )


class Core:
    """The daemon's parts wired together; built by `Core.open`, which owns the model client."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        channels: Mapping[str, Channel],
        client: AsyncAnthropic | Upstreams,
    ) -> None:
        self.settings = settings
        self.store = store
        self.channels = channels
        self.layout = layout = settings.layout
        self._stopping_on = ""  # the signal that stopped `serve`
        # Built first, they break the two cycles: the IPC handler asks which run is live
        # (the orchestrator fills `live`) while the orchestrator drains through it, and the
        # scheduler submits to the orchestrator, which tells it when a task run changed.
        live = LiveRuns()
        task_changes = TaskChanges()
        # Read when scraped (served by `serve` only with METRICS_LISTEN set).
        self.metrics = Metrics(
            store, settings.zone, live, queue_depth=lambda: self.orchestrator.queue.waiting
        )
        # Replies are queued in this process (the IPC handler wakes the router at once) and
        # retries carry their due time, so the router's own poll is only a safety net.
        self.router = Router(
            store, channels, max(settings.poll_interval_ms / 1000, 2.0), self.metrics.reply_sent
        )
        self.ipc = IpcHandler(
            store,
            layout.ipc,
            layout.groups,
            settings.zone,
            current_run=live.run_id,
            on_reply=self.router.wake,
            on_groups_changed=self.groups_changed,
            on_tasks_changed=task_changes.changed,
            files_root=layout.files,
        )
        envs = Environments(layout, settings.nanoclaw_nixpkgs)
        # Unlisted hosts of allowlist runs are asked about in main's chat (`/allow`, `/deny`).
        self.approvals = Approvals(self._ask_main, store)
        agent = agent_settings(settings)  # the price table is read once, here
        self.launcher = Launcher(
            store,
            layout,
            agent,
            client,
            egress=self.approvals.egress,
            envs=envs,
        )
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
            launch=self.launcher.launch,
            drain=self.ipc.drain,
            typing=self._typing,
            gate=self._gate,
            tasks_changed=task_changes.changed,
            live=live,
            progress=self._progress,
        )
        self.control = Control(
            store,
            self.orchestrator,
            budget=agent.budget,
            zone=settings.zone,
            channels=channels,
            approvals=self.approvals,
            prices=agent.prices,
        )
        self.scheduler = Scheduler(
            store, layout.ipc, settings.zone, self.orchestrator.task_due, changes=task_changes
        )
        self.taskfile = TaskFile(store, layout.groups, settings.zone, task_changes.changed)
        self.watcher = IpcWatcher(self.ipc, store, layout.ipc, layout.sockets)
        self.ingest = Ingest(
            store,
            self.orchestrator.wake,
            welcome_of(settings),
            self.router.wake,
            control=self.control.answer,
            usernames=username_of(channels),
            approve=self.control.approve,
            media=media_saver(settings),
        )

    @classmethod
    @contextlib.asynccontextmanager
    async def open(
        cls, settings: Settings, store: Store, channels: Mapping[str, Channel]
    ) -> AsyncIterator[Core]:
        """The core with its model client (the model proxies' upstream), closed on the way out."""
        async with model_client(settings) as client:
            yield cls(settings, store, channels, client)

    def groups_changed(self) -> None:
        """A group was registered: watch its dirs, read its CLAUDE.md, write its tasks.json,
        look at it."""
        self.watcher.refresh()
        self.taskfile.refresh()
        self.scheduler.groups_changed()
        self.orchestrator.wake()

    async def _ask_main(self, text: str) -> None:
        chat = await self.store.default_chat(MAIN)
        if chat is None:
            log.warning("approval not asked: main has no chat: %s", text)
            return
        await self.store.enqueue_reply(MAIN, chat, text)
        self.router.wake()

    async def _progress(self, folder: str, run_id: int, step: ToolStep) -> None:
        await self.control.progress(folder, run_id, step)

    async def _typing(self, chat_id: str, on: bool) -> None:
        await self.router.typing(chat_id, on)
        if not on and chat_id:  # a turn or a run is over: its progress message says so
            await self.control.turn_over(chat_id)

    async def _gate(self, group: Group, script: str) -> Gate:
        try:
            plan = await self.launcher.prepare(group)
        except EnvError as exc:  # the script needs the group's tools: never the host's instead
            return Gate(False, reason=str(exc))
        return await run_gate(plan, script, GATE_TIMEOUT_S)

    async def settle(self) -> None:
        """Burst mode, for tests and bench: the orchestrator looks at every stored message,
        the queue runs dry, every group's IPC is drained and the outbox delivered once."""
        await self.orchestrator.tick()
        await self.orchestrator.queue.wait_idle()
        await self.watcher.scan()
        await self.router.deliver_once()

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

        listen = self.settings.metrics_listen
        metrics = self.metrics.serving(listen) if listen else contextlib.nullcontext()
        for sig in signals:
            loop.add_signal_handler(sig, stop, sig)
        try:
            async with metrics:
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
                tasks.create_task(Retention.of(self.settings, self.store).run(), name="tape")
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
        await self.control.posts.close()
        for channel in self.channels.values():
            try:
                await channel.stop()
            except Exception:
                log.exception("channel %s failed to stop", channel.name)
