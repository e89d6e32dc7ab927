"""Turns a group into a started `AgentRun`: the sandbox plan, the run's config, its proxy.

The only place that knows where a group's folders live on the host and which settings
the agent runner sees (never a credential: the proxy holds the key).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from anthropic import AsyncAnthropic

import nanoclaw.agent
from nanoclaw.agent.protocol import Context, RunConfig
from nanoclaw.agent.relay import RELAY_PORT, proxy_env
from nanoclaw.layout import Layout
from nanoclaw.models import Group, ModelCall, Usage
from nanoclaw.nixenv import Environments, wanted_packages
from nanoclaw.pricing import PriceTable
from nanoclaw.proxy.admission import Policy
from nanoclaw.proxy.budget import Budget, BudgetBook, BudgetGuard, group_budget
from nanoclaw.proxy.intake import BodyPool
from nanoclaw.proxy.providers import ProviderName, Upstreams, group_route
from nanoclaw.proxy.server import ModelProxy
from nanoclaw.sandbox.egress import EgressProxy
from nanoclaw.sandbox.plan import NixMount, SandboxPlan, nix_mount, write_etc
from nanoclaw.sandbox.run import AgentRun
from nanoclaw.sandbox.runtime import Runtime, detect_closure, detect_runtime
from nanoclaw.store.messages import Store

AGENT_CODE = Path(nanoclaw.agent.__file__).parent
EgressFactory = Callable[[Group, str], EgressProxy]
DEFAULT_NIXPKGS = "<nixpkgs>"  # the daemon passes its setting; this is for tools and tests
PREPARING = "(Preparing my tools first: this group's Nix environment is being built.)"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AgentSettings:
    assistant_name: str
    model: str
    tz: str
    idle_timeout_s: float
    timeout_s: float
    budget: Budget = field(default_factory=Budget)  # per group and day; default unlimited
    prices: PriceTable = field(default_factory=PriceTable)  # the daemon's: load_prices
    provider: ProviderName = "anthropic"  # LLM_PROVIDER: a group's own overrides it
    fallback_models: tuple[str, ...] = ()  # NANOCLAW_FALLBACK_MODELS: likewise


@dataclass(frozen=True)
class RunOptions:
    """How one run differs from a message run: a scheduled task's context, no idling."""

    context: Context = "group"  # "isolated": a fresh conversation, the group's history untouched
    idle_timeout_s: float | None = None  # None: the setting; 0: exit after the first turn
    chat_id: str = ""  # told once when the group's tools must be built first; "": nobody


MESSAGE_RUN = RunOptions()


def prepare_dirs(layout: Layout, folder: str) -> None:
    for path in (layout.groups / folder, layout.groups / "global", layout.skills):
        path.mkdir(parents=True, exist_ok=True)
    # What a sandbox writes lies below groups/ and store/: only the owner may reach it. (A
    # file the agent made setuid in /workspace is then no door for other local users.)
    for path in (layout.groups, layout.store):
        if path.is_dir() and path.stat().st_mode & 0o077:
            path.chmod(0o700)


def group_egress(group: Group, label: str) -> EgressProxy:
    return EgressProxy(group.domains, label)


class Launcher:
    def __init__(
        self,
        store: Store,
        layout: Layout,
        agent: AgentSettings,
        client: AsyncAnthropic | Upstreams,
        runtime: Runtime | None = None,
        egress: EgressFactory = group_egress,
        envs: Environments | None = None,
    ) -> None:
        self._store = store
        self._layout = layout
        self._agent = agent
        self._client = client  # the daemon's one, with the key: every run's proxy sends through it
        self._runtime = runtime or detect_runtime()
        self._egress = egress
        self._envs = envs or Environments(layout, DEFAULT_NIXPKGS)
        # Shared by every run's proxy: budgets are reserved under one lock per group, and
        # the daemon holds a bounded number of request bodies at once.
        self._book = BudgetBook()
        self._bodies = BodyPool()

    def plan(self, group: Group, nix: NixMount | None = None) -> SandboxPlan:
        return SandboxPlan(
            workspace=self._layout.groups / group.folder,
            ipc=self._layout.ipc / group.folder,
            sockets=self._layout.sockets / group.folder,
            global_dir=self._layout.groups / "global",
            global_writable=group.is_main,
            skills=self._layout.skills,
            agent_code=AGENT_CODE,
            etc=self._layout.sandbox_etc,
            runtime=self._runtime,
            network=group.network,
            env=(("TZ", self._agent.tz),)
            + (proxy_env(RELAY_PORT) if group.network == "allowlist" else ()),
            nix=nix,
        )

    def model_proxy(self, group: Group, run_id: int, chat_id: str = "") -> ModelProxy:
        """The run's proxy: usage goes to the run's row, the budget is the group's of today,
        the model the group's own (then its fallbacks, the chat told once when one answers),
        server tools only as far as its network policy goes."""

        async def record(usage: Usage) -> None:
            await self._store.add_usage(run_id, usage)

        async def spent(since: datetime) -> Usage:
            since_ms = int(since.timestamp() * 1000)
            return await self._store.group_usage(group.folder, since_ms, exclude_run=run_id)

        a = self._agent
        guard = BudgetGuard(
            group.folder,
            group_budget(group, a.budget),
            ZoneInfo(a.tz),
            spent,
            book=self._book,
            run_id=run_id,
            call=ModelCall(group.provider or a.provider, group.model or a.model),
            calls=self._store,
            prices=a.prices,
        )
        policy = Policy(frozenset({group.model or a.model}), group.network, group.domains)
        label = f"group={group.folder} run={run_id}"
        route = group_route(group.provider, group.fallback_models, a.provider, a.fallback_models)

        async def fell_back(note: str) -> None:
            if chat_id:
                await self._store.enqueue_reply(group.folder, chat_id, note)

        return ModelProxy(
            self._client,
            record,
            label,
            guard,
            policy=policy,
            pool=self._bodies,
            route=route,
            on_fallback=fell_back,
        )

    async def environment(self, group: Group, chat_id: str = "") -> NixMount | None:
        """The group's Nix environment as a run mounts it, built first when it is not yet
        (the chat told once, as the build starts); None for the host's runtime. EnvError
        when it cannot be had: the run fails with it, never falls back to the host."""
        if wanted_packages(group) is None:
            return None
        folder = group.folder

        def progress(line: str) -> None:
            log.info("group=%s environment: %s", folder, line[:300])  # escaped by the log

        async def building() -> None:
            if chat_id:
                await self._store.enqueue_reply(folder, chat_id, PREPARING)

        built = await self._envs.ensure(group, progress, building=building)
        if built is None:  # pragma: no cover - wanted_packages said it declares some
            return None
        if self._runtime.closure is None:  # the first run with an environment: once
            closure = await asyncio.to_thread(detect_closure, self._runtime)
            self._runtime = replace(self._runtime, closure=closure)
        return nix_mount(built.path, built.closure)

    async def prepare(self, group: Group, chat_id: str = "") -> SandboxPlan:
        """The group's plan, with the host directories and files it mounts in place (and
        its Nix environment built, if it declares one)."""
        plan = self.plan(group, await self.environment(group, chat_id))
        await asyncio.to_thread(prepare_dirs, self._layout, group.folder)
        await asyncio.to_thread(write_etc, plan.etc)
        return plan

    async def launch(
        self,
        group: Group,
        run_id: int,
        prompt: str,
        on_turn_done: Callable[[str], Awaitable[None]],
        options: RunOptions = MESSAGE_RUN,
    ) -> AgentRun:
        plan = await self.prepare(group, options.chat_id)
        proxy = self.model_proxy(group, run_id, options.chat_id)
        a = self._agent
        allowlist = group.network == "allowlist"
        idle_s = a.idle_timeout_s if options.idle_timeout_s is None else options.idle_timeout_s
        config = RunConfig(
            model=group.model or a.model,
            prompt=prompt,
            assistant_name=a.assistant_name,
            tz=a.tz,
            is_main=group.is_main,
            context=options.context,
            idle_timeout_s=idle_s,
            egress_port=RELAY_PORT if allowlist else None,
        )
        run = AgentRun(
            egress=self._egress(group, f"run={run_id}") if allowlist else None,
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
