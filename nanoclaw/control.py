"""The host's answers to the chat commands (`/stop`, `/status`, `/pause`, `/resume`, and main's
`/allow`, `/deny`): what each does to the group's live run (or its allowlist) and the words it
answers with; and where each tool call a run reports goes (its chat's channel, the tape).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Protocol, runtime_checkable
from zoneinfo import ZoneInfo

from nanoclaw.approvals import Approvals
from nanoclaw.commands import (
    NOTHING_TO_STOP,
    Approval,
    Command,
    Status,
    status_text,
    stopped_text,
)
from nanoclaw.models import channel_of
from nanoclaw.orchestrator import Orchestrator
from nanoclaw.pricing import PriceTable, priced
from nanoclaw.progress import ToolStep, running_line
from nanoclaw.progress_message import EditsMessages, ProgressPosts
from nanoclaw.proxy.budget import Budget, budget_tokens, day_start, group_budget
from nanoclaw.sandbox.egress import parse_domains
from nanoclaw.store.messages import Store

log = logging.getLogger(__name__)


@runtime_checkable
class ShowsProgress(Protocol):
    """A channel that shows a run's tool calls as they happen (the terminal)."""

    def progress(self, chat_id: str, line: str) -> None: ...


def budget_left(budget: Budget, requests: int, tokens: int, usd: float = 0.0) -> str:
    """ "$1.20, 1,200 tokens, 14 requests" of what is left today; "" when the group has no
    limit."""
    parts = []
    if budget.cost:
        parts.append(f"${max(0.0, budget.cost - usd):,.2f}")
    if budget.tokens:
        parts.append(f"{max(0, budget.tokens - tokens):,} tokens")
    if budget.requests:
        parts.append(f"{max(0, budget.requests - requests):,} requests")
    return ", ".join(parts)


class Control:
    """Answers a command for a group; the orchestrator's live runs are what it acts on."""

    def __init__(
        self,
        store: Store,
        orchestrator: Orchestrator,
        *,
        budget: Budget,
        zone: ZoneInfo,
        channels: Mapping[str, object] | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        approvals: Approvals | None = None,
        posts: ProgressPosts | None = None,
        prices: PriceTable | None = None,
    ) -> None:
        self._store = store
        self._orch = orchestrator
        self._budget = budget
        self._prices = prices or PriceTable()
        self._zone = zone
        self._channels = channels or {}
        self._clock = clock
        self._approvals = approvals
        self.posts = posts or ProgressPosts()  # the progress messages of `progress=on` groups

    async def answer(self, folder: str, command: Command, upto: int = 0) -> str:
        """Do `command` for the group and say what came of it. `upto`: the newest message id
        the sender saw, which a stop counts as handled too."""
        if command == "stop":
            text = await self.stop(folder, upto)
        elif command == "status":
            text = status_text(await self.status(folder))
        else:
            text = self.pause(folder, command == "pause")
        await self._store.tape_event(folder, "command", f"/{command}: {text}")
        return text

    async def approve(self, approval: Approval) -> str:
        """Main's `/allow` or `/deny` about a group's host: `always` saves the domain into the
        group's allowlist; the waiting connections and the group's live run learn it."""
        text = await self._approve(approval)
        await self._store.tape_event(approval.folder, "command", f"{approval.line}: {text}")
        return text

    async def _approve(self, a: Approval) -> str:
        group = await self._store.group(a.folder)
        if group is None:
            return f"there is no group {a.folder!r}"
        try:
            [domain] = parse_domains([a.domain])
        except ValueError as exc:
            return str(exc)
        said = ""
        if a.verdict == "always":
            domains = parse_domains([*group.domains, domain])
            await self._store.save_group(replace(group, domains=domains))
            said = f"{domain} is now in {a.folder}'s allowlist ({', '.join(domains)})"
            if group.network != "allowlist":
                said += f"; it applies when its network is allowlist (now {group.network})"
        waiting = self._approvals.decide(a.folder, domain, a.verdict) if self._approvals else 0
        if a.verdict == "deny":
            return f"denied {domain} for {a.folder} until its run ends"
        if a.verdict == "once" and not waiting:
            return f"nothing of {a.folder} waits for {domain} now"
        through = "the waiting connection goes through" if waiting else ""
        return "; ".join(part for part in (said, through) if part)

    async def stop(self, folder: str, upto: int = 0) -> str:
        stopped = await self._orch.stop(folder, upto)
        if stopped is None:
            return NOTHING_TO_STOP
        tokens = 0
        for run in await self._store.runs(folder, limit=20):
            if run.id == stopped.run_id:
                tokens = budget_tokens(run.usage)
        return stopped_text(stopped.seconds, stopped.steps, tokens)

    def pause(self, folder: str, on: bool) -> str:
        live = self._orch.live.get(folder)
        if live is None or live.run is None:
            return "nothing to pause: no agent is working here" if on else "nothing to resume"
        if live.run.activity.paused == on:
            return "already paused" if on else "not paused"
        if not live.run.pause(on):
            return "the agent cannot be told now"
        if on:
            return "paused: the agent waits before its next step; /resume to go on"
        return "resumed"

    async def status(self, folder: str) -> Status:
        live = self._orch.live.get(folder)
        now = self._clock()
        since_ms = int(day_start(now, self._zone).timestamp() * 1000)
        used = await self._store.group_usage(folder, since_ms)
        group = await self._store.group(folder)
        budget = self._budget if group is None else group_budget(group, self._budget)
        usd = 0.0
        if budget.cost:
            usd, _ = priced(self._prices, await self._store.calls_since(folder, since_ms))
        left = budget_left(budget, used.requests, budget_tokens(used), usd)
        tasks = [t for t in await self._store.tasks(folder) if t.status == "active"]
        due = [t for t in tasks if t.next_run_ms is not None]
        next_task = ""
        if due:
            first = min(due, key=lambda t: t.next_run_ms or 0)
            when = datetime.fromtimestamp((first.next_run_ms or 0) / 1000, self._zone)
            next_task = f"{first.id} at {when:%Y-%m-%d %H:%M %Z}"
        if live is None or live.run is None:
            return Status(
                queue_position=self._orch.queue.position(folder),
                budget_left=left,
                next_task=next_task,
            )
        run, activity = live.run, live.run.activity
        current = activity.current
        return Status(
            live=True,
            seconds=time.monotonic() - run.started,
            steps=activity.steps,
            tool=current.tool if current else "",
            what=current.what if current else "",
            paused=activity.paused,
            task=live.kind == "task",
            budget_left=left,
            next_task=next_task,
        )

    async def progress(self, folder: str, run_id: int, step: ToolStep) -> None:
        """A run reported a tool call: shown where its chat shows progress, and taped."""
        live = self._orch.live.get(folder)
        chat = live.chat_id if live is not None else ""
        channel = self._channels.get(channel_of(chat)) if chat else None
        if isinstance(channel, ShowsProgress):
            channel.progress(chat, running_line(step))
        elif isinstance(channel, EditsMessages) and await self._shows_progress(folder):
            await self.posts.step(channel, chat, step)
        if step.phase == "end":
            # What the agent ran: its own words, untrusted when its run is.
            await self._store.tape_event(
                folder,
                "tool",
                f"{step.tool} {step.what}",
                run_id=run_id,
                untrusted=await self._store.writer_tainted(folder, run_id),
                detail={"exit": step.exit, "ms": step.ms},
            )

    async def turn_over(self, chat_id: str) -> None:
        """The agent is done with its turn in this chat (its typing stops): the progress
        message, if one was posted, ends with what the turn did."""
        await self.posts.finish(chat_id)

    async def _shows_progress(self, folder: str) -> bool:
        group = await self._store.group(folder)
        return group is not None and group.progress
