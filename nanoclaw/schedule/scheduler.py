"""The scheduler: turns due tasks into runs on the group queue and keeps /ipc/tasks.json current.

`tick()` is the step: claim every due task in one transaction (see `tasks.claim`), then ask
the queue for a run of each group that has a task run waiting. `run()` repeats it, sleeping
until the next task is due, a task changes, or a minute passes. `TaskChanges` is how the
rest of the daemon (orchestrator, IPC, CLAUDE.md) tells it that a group's tasks changed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from nanoclaw.ipc import files as ipcfs
from nanoclaw.models import MAIN
from nanoclaw.schedule.tasks import Claim, Task, claim, iso, problem_json, task_json
from nanoclaw.store.db import now_ms
from nanoclaw.store.messages import Store
from nanoclaw.waker import Waker

log = logging.getLogger(__name__)
MAX_SLEEP_S = 60.0


class TaskChanges:
    """Groups whose tasks changed since their tasks.json was written; a change wakes the
    scheduler. Built before the scheduler and the orchestrator, which use each other."""

    def __init__(self) -> None:
        self.folders: set[str] = set()
        self.waker = Waker()

    def changed(self, folder: str) -> None:
        self.folders.add(folder)
        self.waker.set()


class Scheduler:
    def __init__(
        self,
        store: Store,
        ipc_root: Path,
        zone: ZoneInfo,
        submit: Callable[[str], None],
        clock: Callable[[], int] = now_ms,
        changes: TaskChanges | None = None,
    ) -> None:
        self._store = store
        self._ipc_root = ipc_root
        self._zone = zone
        self._submit = submit
        self._clock = clock
        self._changes = changes or TaskChanges()
        self._dirty = self._changes.folders  # groups whose tasks.json is out of date
        self._all_groups = False  # every group's is (a group may be new)

    def changed(self, folder: str) -> None:
        """A group's tasks changed: republish its tasks.json and look at due times again."""
        self._changes.changed(folder)

    def groups_changed(self) -> None:
        """Groups were registered: each gets its tasks.json at the next step."""
        self._all_groups = True
        self._changes.waker.set()

    async def start(self) -> None:
        """After a restart: runs a crash cut short are logged, claimed ones are queued."""
        stale = await self._store.interrupt_stale_task_runs()
        if stale:
            log.warning("scheduler: %d task runs were cut short by a restart", stale)
        for folder in await self._store.folders_with_pending_task_runs():
            self._submit(folder)
        self._dirty.update(g.folder for g in await self._store.groups())
        await self.publish()

    async def tick(self) -> list[tuple[Task, Claim]]:
        now = self._clock()
        claimed = await self._store.claim_due(now, lambda task: claim(task, self._zone, now))
        for task, decision in claimed:
            log.info(
                "scheduler task=%s group=%s due=%s %s next=%s",
                task.id,
                task.folder,
                iso(decision.due_ms, self._zone),
                "queued" if decision.run else f"skipped ({decision.reason})",
                iso(decision.next_run_ms, self._zone),
            )
            self._dirty.add(task.folder)
        for folder in dict.fromkeys(t.folder for t, c in claimed if c.run):
            self._submit(folder)
        await self.publish()
        return claimed

    async def publish(self) -> None:
        """Write tasks.json for every group whose tasks changed (and main, which sees all,
        other groups' prompts quoted as data: `tasks.written_by`)."""
        if not self._dirty and not self._all_groups:
            return
        registered = {g.folder for g in await self._store.groups()}
        folders = registered if self._all_groups else self._dirty | {MAIN}
        self._dirty.clear()
        self._all_groups = False
        for folder in sorted(folders & registered):
            tasks = await self._store.tasks(None if folder == MAIN else folder)
            problems = await self._store.problems(None if folder == MAIN else folder)
            payload: dict[str, Any] = {
                "updated": iso(self._clock(), self._zone),
                "tasks": [task_json(t, self._zone, folder) for t in tasks],
                "errors": [problem_json(g, n, m, folder) for g, n, m in problems],
            }
            try:
                await asyncio.to_thread(self._write, folder, payload)
            except OSError as exc:
                log.warning("scheduler group=%s cannot write tasks.json: %s", folder, exc)

    def _write(self, folder: str, payload: dict[str, Any]) -> None:
        ipcfs.ensure_dirs(self._ipc_root, folder)
        ipcfs.write_tasks(self._ipc_root, folder, payload)

    async def run(self) -> None:
        await self.start()
        while True:
            try:
                await self.tick()
                due = await self._store.next_task_due_ms()
            except Exception:
                log.exception("scheduler tick failed")
                due = None
            timeout = MAX_SLEEP_S
            if due is not None:
                timeout = min(timeout, max(0.0, (due - self._clock()) / 1000))
            await self._changes.waker.wait(timeout)
