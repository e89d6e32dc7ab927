"""The store's task book: scheduled tasks, their run log, and the CLAUDE.md lines that failed.

A due task is claimed in the same transaction that moves its next run, and its run row is
unique on (task, due time): two ticks, two processes or a restart cannot fire it twice.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from nanoclaw.schedule.tasks import CLAUDE_MD, Claim, SyncPlan, Task, TaskRun
from nanoclaw.schedule.tasks import Schedule as Sched
from nanoclaw.store.db import Database, now_ms

TASK_COLS = (
    "id, folder, source, prompt, schedule, context, script, catch_up, status, next_run_ms, "
    "last_run_ms, created_ms, line, tainted"
)
TASK_MARKS = ", ".join("?" * 14)
RUN_COLS = (
    "t.id, t.task_id, t.folder, t.due_ms, t.status, t.run_id, t.started_ms, t.ended_ms, "
    "t.result, coalesce(r.input_tokens + r.output_tokens, 0)"
)
Problem = tuple[str, int, str]  # folder, line, message


def _task(row: Sequence[Any]) -> Task:
    return Task(
        id=row[0],
        folder=row[1],
        source=row[2],
        prompt=row[3],
        schedule=Sched.from_json(json.loads(row[4])),
        context=row[5],
        script=row[6],
        catch_up=row[7],
        status=row[8],
        next_run_ms=row[9],
        last_run_ms=row[10],
        created_ms=row[11],
        line=row[12],
        tainted=bool(row[13]),
    )


def _values(task: Task) -> tuple[Any, ...]:
    return (
        task.id,
        task.folder,
        task.source,
        task.prompt,
        json.dumps(task.schedule.to_json()),
        task.context,
        task.script,
        task.catch_up,
        task.status,
        task.next_run_ms,
        task.last_run_ms,
        task.created_ms or now_ms(),
        task.line,
        int(task.tainted),
    )


class TaskBook(Database):
    """Tasks, task runs and CLAUDE.md problems."""

    async def add_task(self, task: Task) -> bool:
        """Insert a new task; False when its id is taken."""
        return (
            await self._write(
                f"INSERT OR IGNORE INTO tasks ({TASK_COLS}) VALUES ({TASK_MARKS})", _values(task)
            )
            > 0
        )

    async def replace_task(self, task: Task) -> None:
        await self._write(
            "UPDATE tasks SET prompt = ?, schedule = ?, context = ?, script = ?, catch_up = ?, "
            "status = ?, next_run_ms = ?, tainted = ? WHERE id = ?",
            (
                task.prompt,
                json.dumps(task.schedule.to_json()),
                task.context,
                task.script,
                task.catch_up,
                task.status,
                task.next_run_ms,
                int(task.tainted),
                task.id,
            ),
        )

    async def task(self, task_id: str) -> Task | None:
        row = await self._one(f"SELECT {TASK_COLS} FROM tasks WHERE id = ?", (task_id,))
        return _task(row) if row else None

    async def tasks(self, folder: str | None = None, *, with_gone: bool = False) -> list[Task]:
        rows = await self._all(
            f"SELECT {TASK_COLS} FROM tasks WHERE (? IS NULL OR folder = ?) "
            "AND (? OR status NOT IN ('cancelled', 'removed', 'done')) ORDER BY folder, created_ms",
            (folder, folder, int(with_gone)),
        )
        return [_task(r) for r in rows]

    async def sync_claude_md(
        self,
        folder: str,
        plan: SyncPlan,
        problems: Sequence[tuple[int, str]],
        first: Callable[[Task], int | None],
    ) -> None:
        """Apply a CLAUDE.md edit: tasks added, kept (line moved) or removed, problems replaced."""
        async with self.transaction():
            for task in plan.add:
                await self._db.execute(
                    f"INSERT INTO tasks ({TASK_COLS}) VALUES ({TASK_MARKS}) "
                    "ON CONFLICT (id) DO UPDATE SET status = 'active', "
                    "next_run_ms = excluded.next_run_ms, line = excluded.line",
                    _values(replace(task, next_run_ms=first(task))),
                )
            for task_id, line in plan.keep:
                await self._db.execute("UPDATE tasks SET line = ? WHERE id = ?", (line, task_id))
            for task_id in plan.remove:
                await self._db.execute(
                    "UPDATE tasks SET status = 'removed', next_run_ms = NULL WHERE id = ?",
                    (task_id,),
                )
            await self._db.execute("DELETE FROM task_problems WHERE folder = ?", (folder,))
            await self._db.executemany(
                "INSERT INTO task_problems (folder, line, message) VALUES (?, ?, ?)",
                [(folder, line, message) for line, message in problems],
            )

    async def claude_md_status(self, folder: str) -> dict[str, str]:
        rows = await self._all(
            "SELECT id, status FROM tasks WHERE folder = ? AND source = ?", (folder, CLAUDE_MD)
        )
        return {str(r[0]): str(r[1]) for r in rows}

    async def problems(self, folder: str | None = None) -> list[Problem]:
        rows = await self._all(
            "SELECT folder, line, message FROM task_problems WHERE ? IS NULL OR folder = ? "
            "ORDER BY folder, line",
            (folder, folder),
        )
        return [(str(r[0]), int(r[1]), str(r[2])) for r in rows]

    async def claim_due(
        self, now: int, decide: Callable[[Task], Claim | None]
    ) -> list[tuple[Task, Claim]]:
        """Move every due task to its next run and log the run, in one transaction."""
        claimed: list[tuple[Task, Claim]] = []
        async with self.transaction():
            rows = await self._all(
                f"SELECT {TASK_COLS} FROM tasks WHERE status = 'active' "
                "AND next_run_ms IS NOT NULL AND next_run_ms <= ? ORDER BY next_run_ms",
                (now,),
            )
            for task in map(_task, rows):
                decision = decide(task)
                if decision is None:
                    continue
                cur = await self._db.execute(
                    "UPDATE tasks SET next_run_ms = ? WHERE id = ? AND next_run_ms = ?",
                    (decision.next_run_ms, task.id, task.next_run_ms),
                )
                if cur.rowcount == 0:
                    continue
                # A run already logged for this due time is not logged again, unless it was
                # cancelled (task paused before it started, then resumed): then it is re-armed.
                logged = await self._db.execute(
                    "INSERT INTO task_runs (task_id, folder, due_ms, status, result, ended_ms) "
                    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (task_id, due_ms) DO UPDATE SET "
                    "status = excluded.status, result = excluded.result, "
                    "ended_ms = excluded.ended_ms, started_ms = NULL, run_id = NULL "
                    "WHERE status = 'cancelled'",
                    (
                        task.id,
                        task.folder,
                        decision.due_ms,
                        "pending" if decision.run else "skipped",
                        decision.reason,
                        None if decision.run else now,
                    ),
                )
                if decision.next_run_ms is None and (logged.rowcount == 0 or not decision.run):
                    await self._db.execute(
                        "UPDATE tasks SET status = 'done' WHERE id = ?", (task.id,)
                    )
                if logged.rowcount > 0:
                    claimed.append((task, decision))
        return claimed

    async def next_task_due_ms(self) -> int | None:
        row = await self._one(
            "SELECT min(next_run_ms) FROM tasks WHERE status = 'active' AND next_run_ms IS NOT NULL"
        )
        return int(row[0]) if row and row[0] is not None else None

    async def folders_with_pending_task_runs(self) -> list[str]:
        rows = await self._all("SELECT DISTINCT folder FROM task_runs WHERE status = 'pending'")
        return [str(r[0]) for r in rows]

    async def pending_task_run(self, folder: str) -> TaskRun | None:
        row = await self._one(
            f"SELECT {RUN_COLS} FROM task_runs t LEFT JOIN runs r ON r.id = t.run_id "
            "WHERE t.folder = ? AND t.status = 'pending' ORDER BY t.due_ms, t.id LIMIT 1",
            (folder,),
        )
        return TaskRun(*row) if row else None

    async def start_task_run(self, run: TaskRun) -> None:
        now = now_ms()
        async with self.transaction():
            await self._db.execute(
                "UPDATE task_runs SET status = 'running', started_ms = ? WHERE id = ?",
                (now, run.id),
            )
            await self._db.execute(
                "UPDATE tasks SET last_run_ms = ? WHERE id = ?", (now, run.task_id)
            )

    async def finish_task_run(
        self, run: TaskRun, status: str, result: str, run_id: int | None = None
    ) -> None:
        """Log the outcome; a one-shot task is done after its run, whatever the outcome."""
        async with self.transaction():
            await self._db.execute(
                "UPDATE task_runs SET status = ?, result = ?, run_id = ?, ended_ms = ? "
                "WHERE id = ?",
                (status, result[:2000], run_id, now_ms(), run.id),
            )
            await self._db.execute(
                "UPDATE tasks SET status = 'done' WHERE id = ? AND status = 'active' "
                "AND next_run_ms IS NULL",
                (run.task_id,),
            )

    async def interrupt_stale_task_runs(self) -> int:
        """Task runs a crashed daemon left running are logged interrupted, not fired again;
        a one-shot task cut short that way is done, as after any other outcome."""
        async with self.transaction():
            await self._db.execute(
                "UPDATE tasks SET status = 'done' WHERE status = 'active' AND next_run_ms IS NULL "
                "AND id IN (SELECT task_id FROM task_runs WHERE status = 'running')"
            )
            cur = await self._db.execute(
                "UPDATE task_runs SET status = 'interrupted', ended_ms = ? "
                "WHERE status = 'running'",
                (now_ms(),),
            )
            return cur.rowcount

    async def task_runs(
        self, task_id: str | None = None, folder: str | None = None, limit: int = 20
    ) -> list[TaskRun]:
        rows = await self._all(
            f"SELECT {RUN_COLS} FROM task_runs t LEFT JOIN runs r ON r.id = t.run_id "
            "WHERE (? IS NULL OR t.task_id = ?) AND (? IS NULL OR t.folder = ?) "
            "ORDER BY t.id DESC LIMIT ?",
            (task_id, task_id, folder, folder, limit),
        )
        return [TaskRun(*r) for r in rows]
