"""The orchestrator: finds groups with new triggering messages and gets them to an agent.

It polls the store (or is woken by an in-process channel), applies the allowlist and
trigger rules, hands follow-ups to a live agent, and decides what a run's outcome means for
its batch (retried, handled, held until the next message). A group's claimed scheduled
tasks run in the same queue slot, after its messages. The `Supervisor` carries each run
from launch to its recorded outcome; runs are seen only through the `live.Run` protocol.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from nanoclaw.agent.protocol import INITIAL_INPUT, ipc_name
from nanoclaw.live import Launch, Live, LiveRuns
from nanoclaw.models import Group, Message
from nanoclaw.progress import ToolStep
from nanoclaw.prompt import build_prompt, task_prompt
from nanoclaw.queue import GroupQueue
from nanoclaw.sandbox.gate import Gate
from nanoclaw.sandbox.launcher import RunOptions
from nanoclaw.sandbox.run import HELD
from nanoclaw.schedule.tasks import TaskRun
from nanoclaw.store.messages import Store
from nanoclaw.supervisor import Stopped, Supervisor
from nanoclaw.trigger import any_trigger, sender_allowed
from nanoclaw.waker import Waker

log = logging.getLogger(__name__)
BATCH_LIMIT = 300


@dataclass(frozen=True)
class Rules:
    allowed_senders: tuple[str, ...]
    default_trigger: str
    zone: ZoneInfo


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
        gate: Callable[[Group, str], Awaitable[Gate]],
        tasks_changed: Callable[[str], None] = lambda folder: None,
        live: LiveRuns | None = None,
        retry_base_s: float = 2.0,
        progress: Callable[[str, int, ToolStep], Awaitable[None]] | None = None,
    ) -> None:
        self._store = store
        self._rules = rules
        self._poll_s = poll_s
        self._typing = typing
        self._gate = gate
        self._tasks_changed = tasks_changed
        self.runs = Supervisor(store, launch, drain, typing, self._make_room, live, progress)
        self.live = self.runs.live
        self._tasks_waiting: set[str] = set()
        self._budget_notes: dict[str, str] = {}  # folder -> the verdict (budget, key) last told
        self._held: dict[str, int] = {}  # folder -> the batch a refused key left pending
        self.queue = GroupQueue(max_concurrent, self.run_group, retry_base_s=retry_base_s)
        self._waker = Waker()
        self._newest_seen_id = -1  # the newest message id a tick has looked at (-1: none yet)
        self._failed: set[str] = set()  # groups whose last consider raised: tried again
        # folder -> newest message id already tested for a trigger (untriggered context)
        self._trigger_checked_upto: dict[str, int] = {}

    def wake(self) -> None:
        self._waker.set()

    def task_due(self, folder: str) -> None:
        """The scheduler claimed a task of this group: run it as soon as the group is free."""
        self._tasks_waiting.add(folder)
        self._submit(folder)

    def _submit(self, folder: str) -> None:
        self.queue.submit(folder)
        self._make_room()

    def _make_room(self) -> None:
        """Idle agents give way: to their own group's scheduled task, and to groups waiting
        for a slot (the longest idle first).

        An agent that finished its turn waits up to AGENT_IDLE_TIMEOUT_S for follow-ups; it
        must not hold a slot that a task or another group's messages are waiting for.
        """
        idle = sorted(
            (
                (lv.idle_since, folder, lv.run)
                for folder, lv in self.live.items()
                if lv.idle_since is not None and lv.run is not None
            ),
            key=lambda entry: entry[0],
        )
        slots = self.queue.waiting - sum(1 for _, _, run in idle if not run.accepting)
        for _, folder, run in idle:
            if folder in self._tasks_waiting:
                why = "its group's scheduled task"
            elif run.accepting and slots > 0:
                why, slots = "a waiting group", slots - 1
            else:
                continue
            log.info("group=%s run=%s idle: gives way to %s", folder, run.run_id, why)
            run.close()

    def _trusted(self, group: Group, msgs: Sequence[Message]) -> dict[str, bool]:
        allowed = self._rules.allowed_senders
        return {m.sender_id: sender_allowed(m.sender_id, allowed, group) for m in msgs}

    def _triggered(self, group: Group, msgs: Sequence[Message]) -> bool:
        return any_trigger(msgs, group, self._rules.allowed_senders, self._rules.default_trigger)

    async def tick(self) -> None:
        """The step: look at messages stored since the last tick and act per group."""
        if self._newest_seen_id < 0:
            self._newest_seen_id = await self._store.min_cursor()
        newest = await self._store.max_message_id()
        failed, self._failed = self._failed, set()
        folders = dict.fromkeys(failed)
        if newest > self._newest_seen_id:
            folders.update(await self._store.folders_with_messages_after(self._newest_seen_id))
            self._newest_seen_id = newest
        # One group's failure must not skip the others' messages: each group is considered
        # on its own, and a failed one again on the next tick (logged in full once).
        for folder in folders:
            try:
                await self.consider(folder)
            except Exception:
                again = folder in failed
                log.log(
                    logging.DEBUG if again else logging.ERROR,
                    "group=%s consider failed; tried again next tick",
                    folder,
                    exc_info=True,
                )
                self._failed.add(folder)

    async def consider(self, folder: str) -> None:
        group = await self._store.group(folder)
        if group is None:
            return
        live = self.live.get(folder)
        if live is not None and live.kind == "task":
            self._submit(folder)  # the queue runs the group again after the task
            return
        if live is not None and live.run is not None and live.run.accepting:
            await self._follow_up(group, live)
            return
        cursor = await self._store.cursor(folder)
        checked = self._trigger_checked_upto.get(folder, 0)
        since = max(cursor, checked, self._held.get(folder, 0))
        msgs = await self._store.messages_for_folder(folder, since, BATCH_LIMIT)
        if not msgs:
            return
        self._trigger_checked_upto[folder] = msgs[-1].id
        if self._triggered(group, msgs):
            self._submit(folder)

    async def _follow_up(self, group: Group, live: Live) -> None:
        assert live.run is not None
        msgs = await self._store.messages_for_folder(group.folder, live.given_upto, BATCH_LIMIT)
        if not msgs or not self._triggered(group, msgs):
            return
        trusted = self._trusted(group, msgs)
        if not all(trusted.values()):  # marked before the agent reads them: see writer_tainted
            await self._store.taint_run(live.run_id)
        prompt = build_prompt(msgs, self._rules.zone, trusted, vision=group.vision)
        name = ipc_name()
        try:
            live.run.follow_up(name, prompt)
        except OSError as exc:
            # The agent replaced or broke its /ipc/input: it can no longer be steered. Stop
            # it; the messages stay past the cursor and go to the next run.
            live.stopped = f"its /ipc/input cannot take a follow-up ({exc.strerror or exc})"
            log.warning("group=%s run=%s stopped: %s", group.folder, live.run_id, live.stopped)
            live.run.close()
            live.run.kill()
            return
        live.inputs[name] = msgs[-1].id  # recorded only once the follow-up is on disk
        live.idle_since = None
        live.given_upto = msgs[-1].id
        live.chat_id = msgs[-1].chat_id
        log.info("group=%s run=%s follow-up of %d messages", group.folder, live.run_id, len(msgs))
        await self._typing(live.chat_id, True)

    async def run_group(self, folder: str) -> bool:
        """Called by the queue: one run over every message since the cursor, else one task."""
        group = await self._store.group(folder)
        if group is None:
            return True
        cursor = await self._store.cursor(folder)
        msgs = await self._store.messages_for_folder(folder, cursor, BATCH_LIMIT)
        if msgs and self._triggered(group, msgs):
            ok = await self._message_run(group, cursor, msgs)
        else:
            pending = await self._store.pending_task_run(folder)
            if pending is None:
                self._tasks_waiting.discard(folder)
                return True
            ok = await self._task_run(group, pending)
        self._trigger_checked_upto.pop(folder, None)
        if ok:
            await self.consider(folder)
        if await self._store.pending_task_run(folder) is not None:
            self._submit(folder)
        else:
            self._tasks_waiting.discard(folder)
        return ok

    async def _message_run(self, group: Group, cursor: int, msgs: list[Message]) -> bool:
        folder = group.folder
        total = await self._store.count_messages_for_folder(folder, cursor)
        prompt = build_prompt(
            msgs,
            self._rules.zone,
            self._trusted(group, msgs),
            omitted_before=total - len(msgs),
            already_sent=await self._store.texts_sent_by_unfinished_runs(folder, cursor),
            vision=group.vision,
        )
        tainted = not all(self._trusted(group, msgs).values())  # untrusted senders in the prompt
        run_id = await self._store.start_run(
            folder, "message", msgs[0].id, msgs[-1].id, tainted=tainted
        )
        live = Live(run_id, msgs[-1].chat_id, msgs[-1].id, {INITIAL_INPUT: msgs[-1].id})
        log.info("group=%s run=%s starting with %d messages", folder, run_id, len(msgs))
        outcome = await self.runs.agent(group, live, prompt, RunOptions(chat_id=live.chat_id))
        if outcome.status == "stopped":
            return True  # the owner's stop: the batch counts as handled, never retried
        if outcome.status == "over_budget":
            await self._over_budget(group, live, outcome.error)
            return True
        if outcome.status in HELD:  # no retry: the batch waits for the next message
            self._held[folder] = live.given_upto
            why = outcome.error  # the refused key names its setting, the build its failure
            if self._budget_notes.get(folder) != why:  # told once, not per message
                self._budget_notes[folder] = why
                text = f"(I cannot answer now: {why}.)"
                await self._store.enqueue_reply(folder, live.chat_id, text)  # not the run's text
            return True
        if outcome.ok:
            self._budget_notes.pop(folder, None)  # a later refusal is a new verdict, told again
        return outcome.ok

    async def _over_budget(self, group: Group, live: Live, why: str) -> None:
        """Retrying cannot help before the budget resets: the batch counts as handled, and
        the chat is told once per verdict instead of hearing nothing."""
        await self._store.advance_cursor(group.folder, live.given_upto)
        if self._budget_notes.get(group.folder) != why:
            self._budget_notes[group.folder] = why
            text = f"(I cannot answer now: {why.removeprefix('nanoclaw: ')}.)"
            await self._store.enqueue_reply(group.folder, live.chat_id, text, live.run_id)

    async def _task_run(self, group: Group, pending: TaskRun) -> bool:
        """A scheduled run: gate first (if any), then the agent for one turn, logged."""
        folder = group.folder
        task = await self._store.task(pending.task_id)
        if task is None or task.status != "active":
            why = f"task is {task.status if task else 'gone'}"
            await self._store.finish_task_run(pending, "cancelled", why)
            return True
        await self._store.start_task_run(pending)
        self._tasks_changed(folder)
        data: object = None
        if task.script:
            gate = await self._gate(group, task.script)
            if not gate.wake:
                log.info("group=%s task=%s gate: %s", folder, task.id, gate.reason)
                await self._store.finish_task_run(pending, "skipped", f"gate: {gate.reason}")
                self._tasks_changed(folder)
                return True
            data = gate.data
        due = datetime.fromtimestamp(pending.due_ms / 1000, self._rules.zone)
        prompt = task_prompt(task.id, task.prompt, due, data, untrusted=task.tainted)
        run_id = await self._store.start_run(folder, "task", None, None, tainted=task.tainted)
        live = Live(run_id, "", 0, {INITIAL_INPUT: 0}, kind="task")
        log.info("group=%s run=%s task=%s starting", folder, run_id, task.id)
        outcome = await self.runs.agent(group, live, prompt, RunOptions(task.context, 0.0))
        sent = await self._store.texts_sent_by_run(run_id)
        status = ("ok" if sent else "silent") if outcome.ok else outcome.status
        result = outcome.error or (sent[0][:500] if sent else "nothing sent")
        await self._store.finish_task_run(pending, status, result, run_id)
        self._tasks_changed(folder)
        return True

    async def stop(self, folder: str, upto: int = 0) -> Stopped | None:
        """The owner stops the group's run now (see `Supervisor.stop`)."""
        return await self.runs.stop(folder, upto)

    def close_live(self) -> None:
        """Ask every live agent to finish its turn and exit (shutdown)."""
        self.runs.close_live()

    async def run(self) -> None:
        while True:
            try:
                await self.tick()
            except Exception:
                log.exception("orchestrator tick failed")
            await self._waker.wait(self._poll_s)
