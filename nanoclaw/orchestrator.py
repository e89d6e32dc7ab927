"""The orchestrator: finds groups with new triggering messages and gets them to an agent.

It polls the store (or is woken by an in-process channel), applies the allowlist and
trigger rules, hands follow-ups to a live agent, and moves a group's cursor only when
the agent reports the turn that handled those messages done.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

from nanoclaw.agent.ipcfiles import ipc_name
from nanoclaw.errors import SandboxError
from nanoclaw.models import Group, Message
from nanoclaw.prompt import build_prompt
from nanoclaw.queue import GroupQueue
from nanoclaw.runner import AgentRun, Outcome
from nanoclaw.store import Store
from nanoclaw.trigger import any_trigger, sender_allowed
from nanoclaw.waker import Waker

log = logging.getLogger(__name__)
BATCH_LIMIT = 300

Launch = Callable[[Group, int, str, Callable[[str], Awaitable[None]]], Awaitable[AgentRun]]


@dataclass(frozen=True)
class Rules:
    allowed_senders: tuple[str, ...]
    default_trigger: str
    zone: ZoneInfo


@dataclass
class Live:
    run_id: int
    chat_id: str
    dispatched: int
    inputs: dict[str, int] = field(default_factory=dict)
    run: AgentRun | None = None


class Orchestrator:
    def __init__(
        self,
        store: Store,
        rules: Rules,
        *,
        max_concurrent: int,
        poll_s: float,
        launch: Launch,
        drain: Callable[[str], Awaitable[int]],
        typing: Callable[[str, bool], Awaitable[None]],
    ) -> None:
        self._store = store
        self._rules = rules
        self._poll_s = poll_s
        self._launch = launch
        self._drain = drain
        self._typing = typing
        self.queue = GroupQueue(max_concurrent, self.run_group)
        self._waker = Waker()
        self._seen = -1
        self._checked: dict[str, int] = {}
        self.live: dict[str, Live] = {}

    def wake(self) -> None:
        self._waker.set()

    def current_run(self, folder: str) -> int | None:
        live = self.live.get(folder)
        return live.run_id if live else None

    def _trusted(self, group: Group, msgs: Sequence[Message]) -> dict[str, bool]:
        allowed = self._rules.allowed_senders
        return {m.sender_id: sender_allowed(m.sender_id, allowed, group) for m in msgs}

    def _triggered(self, group: Group, msgs: Sequence[Message]) -> bool:
        return any_trigger(msgs, group, self._rules.allowed_senders, self._rules.default_trigger)

    async def tick(self) -> None:
        """The step: look at messages stored since the last tick and act per group."""
        if self._seen < 0:
            self._seen = await self._store.min_cursor()
        newest = await self._store.max_message_id()
        if newest <= self._seen:
            return
        folders = await self._store.folders_with_messages_after(self._seen)
        self._seen = newest
        for folder in folders:
            await self.consider(folder)

    async def consider(self, folder: str) -> None:
        group = await self._store.group(folder)
        if group is None:
            return
        live = self.live.get(folder)
        if live is not None and live.run is not None and live.run.accepting:
            await self._follow_up(group, live)
            return
        cursor = await self._store.cursor(folder)
        since = max(cursor, self._checked.get(folder, 0))
        msgs = await self._store.messages_for_folder(folder, since, BATCH_LIMIT)
        if not msgs:
            return
        self._checked[folder] = msgs[-1].id
        if self._triggered(group, msgs):
            self.queue.submit(folder)

    async def _follow_up(self, group: Group, live: Live) -> None:
        assert live.run is not None
        msgs = await self._store.messages_for_folder(group.folder, live.dispatched, BATCH_LIMIT)
        if not msgs or not self._triggered(group, msgs):
            return
        prompt = build_prompt(msgs, self._rules.zone, self._trusted(group, msgs))
        name = ipc_name()
        live.inputs[name] = msgs[-1].id
        live.dispatched = msgs[-1].id
        live.chat_id = msgs[-1].chat_id
        live.run.follow_up(name, prompt)
        log.info("group=%s run=%s follow-up of %d messages", group.folder, live.run_id, len(msgs))
        await self._typing(live.chat_id, True)

    async def run_group(self, folder: str) -> bool:
        """Called by the queue: one run over every message since the cursor."""
        group = await self._store.group(folder)
        if group is None:
            return True
        cursor = await self._store.cursor(folder)
        msgs = await self._store.messages_for_folder(folder, cursor, BATCH_LIMIT)
        if not msgs or not self._triggered(group, msgs):
            return True
        total = await self._store.count_messages_for_folder(folder, cursor)
        prompt = build_prompt(
            msgs,
            self._rules.zone,
            self._trusted(group, msgs),
            omitted_before=total - len(msgs),
            already_sent=await self._store.texts_sent_by_unfinished_runs(folder, cursor),
        )
        run_id = await self._store.start_run(folder, "message", msgs[0].id, msgs[-1].id)
        live = Live(run_id, msgs[-1].chat_id, msgs[-1].id, {"initial": msgs[-1].id})
        self.live[folder] = live
        log.info("group=%s run=%s starting with %d messages", folder, run_id, len(msgs))
        await self._typing(live.chat_id, True)
        try:
            live.run = await self._launch(
                group, run_id, prompt, lambda n: self._done(folder, live, n)
            )
            outcome = await live.run.wait()
        except SandboxError as exc:
            outcome = Outcome("failed", str(exc))
        finally:
            self.live.pop(folder, None)
            await self._typing(live.chat_id, False)
        await self._drain(folder)
        if outcome.ok and outcome.turns == 0:
            outcome = Outcome("failed", "agent exited without finishing a turn")
        await self._store.finish_run(run_id, outcome.status, outcome.error)
        log.log(
            logging.INFO if outcome.ok else logging.WARNING,
            "group=%s run=%s finished: %s %s", folder, run_id, outcome.status, outcome.error,
        )  # fmt: skip
        self._checked.pop(folder, None)
        if outcome.ok:
            await self.consider(folder)
        return outcome.ok

    async def _done(self, folder: str, live: Live, name: str) -> None:
        """The agent finished the turn for input `name`: its replies are on disk."""
        upto = live.inputs.get(name)
        if upto is None:
            return
        for key in [k for k, v in live.inputs.items() if v <= upto]:
            del live.inputs[key]
        await self._drain(folder)
        await self._store.advance_cursor(folder, upto)
        if not live.inputs:
            await self._typing(live.chat_id, False)

    def close_live(self) -> None:
        """Ask every live agent to finish its turn and exit (shutdown)."""
        for live in list(self.live.values()):
            if live.run is not None:
                live.run.close()

    async def run(self) -> None:
        while True:
            try:
                await self.tick()
            except Exception:
                log.exception("orchestrator tick failed")
            await self._waker.wait(self._poll_s)
