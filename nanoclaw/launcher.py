"""Turns a group into a started `AgentRun`: the sandbox plan, the run's config, its proxy.

The only place that knows where a group's folders live on the host and which settings
the agent runner sees (never a credential: the proxy holds the key).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from aiohttp import ClientSession

import nanoclaw.agent
from nanoclaw.layout import Layout
from nanoclaw.models import Group, Usage
from nanoclaw.proxy import ModelProxy
from nanoclaw.runner import AgentRun
from nanoclaw.sandbox import Runtime, SandboxPlan, detect_runtime, write_etc
from nanoclaw.store import Store

AGENT_CODE = Path(nanoclaw.agent.__file__).parent


@dataclass(frozen=True)
class AgentSettings:
    assistant_name: str
    model: str
    tz: str
    idle_timeout_s: float
    timeout_s: float
    api_key: str
    base_url: str


@dataclass(frozen=True)
class RunOptions:
    """How one run differs from a message run: a scheduled task's context, no idling."""

    context: str = "group"  # "isolated": a fresh conversation, the group's history untouched
    idle_timeout_s: float | None = None  # None: the setting; 0: exit after the first turn


MESSAGE_RUN = RunOptions()


def prepare_dirs(layout: Layout, folder: str) -> None:
    for path in (layout.groups / folder, layout.groups / "global", layout.skills):
        path.mkdir(parents=True, exist_ok=True)


class Launcher:
    def __init__(
        self,
        store: Store,
        layout: Layout,
        agent: AgentSettings,
        session: ClientSession,
        runtime: Runtime | None = None,
    ) -> None:
        self._store = store
        self._layout = layout
        self._agent = agent
        self._session = session
        self._runtime = runtime or detect_runtime()

    def plan(self, group: Group) -> SandboxPlan:
        return SandboxPlan(
            workspace=self._layout.groups / group.folder,
            ipc=self._layout.ipc / group.folder,
            global_dir=self._layout.groups / "global",
            global_writable=group.is_main,
            skills=self._layout.skills,
            agent_code=AGENT_CODE,
            etc=self._layout.sandbox_etc,
            runtime=self._runtime,
            network=group.network,
            env=(("TZ", self._agent.tz),),
        )

    async def launch(
        self,
        group: Group,
        run_id: int,
        prompt: str,
        on_turn_done: Callable[[str], Awaitable[None]],
        options: RunOptions = MESSAGE_RUN,
    ) -> AgentRun:
        plan = self.plan(group)
        await asyncio.to_thread(prepare_dirs, self._layout, group.folder)
        await asyncio.to_thread(write_etc, plan.etc)

        async def record(usage: Usage) -> None:
            await self._store.add_usage(run_id, usage)

        a = self._agent
        proxy = ModelProxy(self._session, a.base_url, a.api_key, record, f"run={run_id}")
        config = {
            "assistant_name": a.assistant_name,
            "model": group.model or a.model,
            "tz": a.tz,
            "is_main": group.is_main,
            "folder": group.folder,
            "prompt": prompt,
            "idle_timeout_s": a.idle_timeout_s
            if options.idle_timeout_s is None
            else options.idle_timeout_s,
            "context": options.context,
        }
        run = AgentRun(
            folder=group.folder,
            run_id=run_id,
            plan=plan,
            ipc_root=self._layout.ipc,
            config=config,
            proxy=proxy,
            timeout_s=a.timeout_s,
            log_path=self._layout.logs / group.folder / f"run-{run_id}.log",
            on_turn_done=on_turn_done,
        )
        await run.start()
        return run
