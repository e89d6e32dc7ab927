"""Scheduled tasks as records, and the pure decisions about them: when a task is due next,
what a scheduler tick does with a due task, and how a CLAUDE.md edit changes a group's tasks.

Every next run is counted from the scheduled time, never from when a run finished, so a
schedule does not drift; after downtime a task runs once (`catch_up = once`) or not (`skip`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

from croniter import croniter

from nanoclaw.agent.protocol import QUOTED, Context, Origin
from nanoclaw.schedule.claudemd import CronTask, next_run

Kind = Literal["cron", "every", "at"]
CatchUp = Literal["once", "skip"]
CLAUDE_MD = "claude_md"
AGENT = "agent"
LATE_MS = 60_000  # a run this late or later counts as missed for catch_up = skip
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MS = timedelta(milliseconds=1)
FOLD_WINDOW = timedelta(hours=3)  # longer than any clock change


@dataclass(frozen=True)
class Schedule:
    kind: Kind
    cron: str = ""
    tz: str | None = None
    every_s: int = 0
    at_ms: int = 0

    def to_json(self) -> dict[str, Any]:
        if self.kind == "cron":
            return {"cron": self.cron, **({"tz": self.tz} if self.tz else {})}
        if self.kind == "every":
            return {"every_s": self.every_s}
        return {"at": _at(self.at_ms).isoformat()}

    @staticmethod
    def from_json(data: dict[str, Any]) -> Schedule:
        if "cron" in data:
            return Schedule("cron", cron=str(data["cron"]), tz=data.get("tz"))
        if "every_s" in data:
            return Schedule("every", every_s=int(data["every_s"]))
        return Schedule("at", at_ms=_ms(datetime.fromisoformat(str(data["at"]))))

    def describe(self) -> str:
        if self.kind == "cron":
            return f"cron {self.cron}" + (f" ({self.tz})" if self.tz else "")
        if self.kind == "every":
            return f"every {self.every_s}s"
        return f"at {self.to_json()['at']}"


@dataclass(frozen=True)
class Task:
    id: str
    folder: str
    source: str
    prompt: str
    schedule: Schedule
    context: Context = "isolated"
    script: str | None = None
    catch_up: CatchUp = "once"
    status: str = "active"  # active, paused, done, cancelled, removed (gone from CLAUDE.md)
    next_run_ms: int | None = None
    last_run_ms: int | None = None
    created_ms: int = 0
    line: int = 0  # for CLAUDE.md tasks: the line of its "# Cron:"
    tainted: bool = False  # prompt or script written by a run that saw untrusted senders


@dataclass(frozen=True)
class TaskRun:
    id: int
    task_id: str
    folder: str
    due_ms: int
    status: str  # pending, running, ok, silent, failed, skipped, cancelled, interrupted
    run_id: int | None = None
    started_ms: int | None = None
    ended_ms: int | None = None
    result: str = ""
    tokens: int = 0


@dataclass(frozen=True)
class Claim:
    """What one tick does with a due task: run it for `due_ms` (or log it skipped), move on."""

    due_ms: int
    run: bool
    next_run_ms: int | None
    reason: str = ""


def zone_of(schedule: Schedule, default: ZoneInfo) -> ZoneInfo:
    return ZoneInfo(schedule.tz) if schedule.tz else default


def _ms(dt: datetime) -> int:
    """Exact: `int(dt.timestamp() * 1000)` loses a millisecond to float rounding now and then."""
    return (dt - EPOCH) // MS


def _at(ms: int) -> datetime:
    return EPOCH + ms * MS


def _offset(dt: datetime) -> timedelta:
    return dt.utcoffset() or timedelta(0)


def _cron_after(cron: str, zone: ZoneInfo, after_ms: int) -> int:
    """The cron's first instant after `after_ms`, by the wall clock of `zone`.

    A cron with fixed hours (`30 2 * * *`) runs once in the hour a fall-back repeats, at its
    first occurrence (`schedule.next_run`). One that runs every hour or more often (hour
    field `*`) runs in real time: the repeated hour is an hour of its own and fires again,
    as in vixie cron, so `0 * * * *` runs 25 times that day and a `*/15` watch has no gap.
    """
    after = _at(after_ms)
    first = next_run(cron, zone, after)
    if croniter(cron).expanded[1] != ["*"]:
        return _ms(first)
    before, later = (after - FOLD_WINDOW).astimezone(zone), (after + FOLD_WINDOW).astimezone(zone)
    if _offset(before) <= _offset(later):
        return _ms(first)  # no fall-back near `after`: nothing repeats
    local = after.astimezone(zone).replace(tzinfo=None, second=0, microsecond=0)
    walls = croniter(cron, local - FOLD_WINDOW)
    while (wall := walls.get_next(datetime)) <= local + FOLD_WINDOW:
        once, again = wall.replace(tzinfo=zone, fold=0), wall.replace(tzinfo=zone, fold=1)
        if _offset(once) > _offset(again) and after < again < first:
            return _ms(again)  # the second time this wall-clock time comes round
    return _ms(first)


def first_run(schedule: Schedule, default: ZoneInfo, now_ms: int) -> int | None:
    """When a new (or resumed) task runs first."""
    if schedule.kind == "cron":
        return _cron_after(schedule.cron, zone_of(schedule, default), now_ms)
    if schedule.kind == "every":
        return now_ms + schedule.every_s * 1000
    return schedule.at_ms


def following(schedule: Schedule, default: ZoneInfo, due_ms: int, now_ms: int) -> int | None:
    """The first slot after `now_ms`, counted from the scheduled time `due_ms` (no drift)."""
    if schedule.kind == "at":
        return None
    if schedule.kind == "every":
        step = schedule.every_s * 1000
        return due_ms + step * ((max(now_ms - due_ms, 0) // step) + 1)
    return _cron_after(schedule.cron, zone_of(schedule, default), max(due_ms, now_ms))


def claim(task: Task, default: ZoneInfo, now_ms: int) -> Claim | None:
    """The tick's decision for one task; None when it is not due."""
    if task.status != "active" or task.next_run_ms is None or task.next_run_ms > now_ms:
        return None
    due = task.next_run_ms
    after = following(task.schedule, default, due, now_ms)
    if task.catch_up == "skip" and now_ms - due >= LATE_MS:
        late = (now_ms - due) // 1000
        return Claim(due, False, after, f"missed by {late}s while down; catch_up is skip")
    return Claim(due, True, after)


def claude_md_id(folder: str, entry: CronTask) -> str:
    """Same entry, same id: unchanged tasks keep their state across edits and restarts."""
    key = json.dumps([folder, entry.cron, entry.tz, entry.prompt])
    return "md-" + hashlib.sha256(key.encode()).hexdigest()[:12]


def from_claude_md(folder: str, entry: CronTask) -> Task:
    return Task(
        id=claude_md_id(folder, entry),
        folder=folder,
        source=CLAUDE_MD,
        prompt=entry.prompt,
        schedule=Schedule("cron", cron=entry.cron, tz=entry.tz),
        context="group",
        line=entry.line,
    )


@dataclass(frozen=True)
class SyncPlan:
    add: tuple[Task, ...]  # new, or back in the file after being removed
    keep: tuple[tuple[str, int], ...]  # (id, line) still in the file: state kept, line moved
    remove: tuple[str, ...]  # no longer in the file
    duplicates: tuple[tuple[int, int], ...]  # (line, line of the first identical entry)


def plan_sync(existing: dict[str, str], wanted: list[Task]) -> SyncPlan:
    """Compare a group's CLAUDE.md tasks in the store ({id: status}) with the file's."""
    add: list[Task] = []
    keep: list[tuple[str, int]] = []
    first_line: dict[str, int] = {}
    duplicates: list[tuple[int, int]] = []
    for task in wanted:
        if task.id in first_line:
            duplicates.append((task.line, first_line[task.id]))
            continue
        first_line[task.id] = task.line
        status = existing.get(task.id)
        if status is None or status == "removed":
            add.append(task)
        else:
            keep.append((task.id, task.line))
    gone = tuple(i for i, s in existing.items() if i not in first_line and s != "removed")
    return SyncPlan(tuple(add), tuple(keep), gone, tuple(duplicates))


def iso(ms: int | None, zone: ZoneInfo) -> str | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, zone).isoformat()


def origin(task: Task) -> Origin:
    if task.source == CLAUDE_MD:
        return "owner"
    return "untrusted" if task.tainted else "agent"


def written_by(task: Task, viewer: str | None = None) -> str | None:
    """Who wrote the task's prompt, when the agent of `viewer` (default: the task's own
    group) must read it as data rather than as instructions; None when it may follow it.

    Another group's prompt is that group's agent's text (its CLAUDE.md too: its agent can
    edit the file), and a tainted prompt may carry the words of untrusted senders."""
    if viewer is None or viewer == task.folder:
        if not task.tainted:
            return None
        return "you (this group's agent) while senders who may not instruct you were talking"
    if task.source == CLAUDE_MD:
        return f"the CLAUDE.md of group {task.folder}, which that group's agent can edit"
    who = f"the agent of group {task.folder}"
    return who + (" while senders who may not instruct it were talking" if task.tainted else "")


def task_json(task: Task, zone: ZoneInfo, viewer: str | None = None) -> dict[str, Any]:
    """One entry of /ipc/tasks.json as `viewer`'s agent reads it (see `written_by`)."""
    entry: dict[str, Any] = {
        "id": task.id,
        "group": task.folder,
        "source": task.source,
        "origin": origin(task),
        "prompt": task.prompt,
        "schedule": task.schedule.to_json(),
        "context": task.context,
        "script": task.script,
        "catch_up": task.catch_up,
        "status": task.status,
        "next_run": iso(task.next_run_ms, zone),
        "last_run": iso(task.last_run_ms, zone),
    }
    who = written_by(task, viewer)
    if who is not None:
        entry["prompt"] = entry["script"] = None
        entry[QUOTED] = {"written_by": who, "prompt": task.prompt, "script": task.script}
    return entry


def problem_json(folder: str, line: int, message: str, viewer: str) -> dict[str, Any]:
    """A CLAUDE.md problem for /ipc/tasks.json; another group's is quoted (it cites its file)."""
    return {"group": folder, "line": line, "message": message, QUOTED: folder != viewer}


def apply_action(task: Task, action: str, default: ZoneInfo, now_ms: int) -> Task:
    """pause, resume or cancel; ValueError says why the task cannot be."""
    if task.status not in ("active", "paused"):
        raise ValueError(f"task {task.id} is {task.status}")
    if action == "pause":
        return replace(task, status="paused")
    if action == "resume":
        return replace(task, status="active", next_run_ms=first_run(task.schedule, default, now_ms))
    if action != "cancel":
        raise ValueError(f"unknown action {action!r}")
    if task.source == CLAUDE_MD:
        raise ValueError(f"task {task.id} comes from CLAUDE.md: delete it from the file")
    return replace(task, status="cancelled", next_run_ms=None)
