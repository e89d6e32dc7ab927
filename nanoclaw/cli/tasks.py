"""`nanoclaw tasks list/runs/pause/resume/cancel`: the scheduled tasks and their run log.

Works on the store directly, with or without a running daemon: the scheduler claims only
active tasks, so a pause or cancel here holds from its next tick.
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from zoneinfo import ZoneInfo

from nanoclaw.config import Settings
from nanoclaw.display import printable_line
from nanoclaw.errors import ConfigError
from nanoclaw.schedule.tasks import CLAUDE_MD, Task, TaskRun, apply_action
from nanoclaw.store.db import now_ms
from nanoclaw.store.messages import Store

ACTIONS = ("pause", "resume", "cancel")
UNTRUSTED_NOTE = (
    "agent:untrusted = scheduled or changed by a run whose prompt held messages from senders "
    "not allowed to instruct the agent; it runs framed as the agent's note, not as your "
    "instruction (cancel it if you did not want it)"
)


TASK_HEADER = (
    f"{'task':<16} {'group':<12} {'status':<9} {'schedule':<28} {'next run':<27} "
    f"{'source':<16} prompt"
)
RUN_HEADER = (
    f"{'task':<16} {'due':<26} {'started':<30} {'took':>7} {'status':<11} {'tokens':>11}  result"
)


def _when(ms: int | None, zone: ZoneInfo) -> str:
    return "-" if ms is None else f"{datetime.fromtimestamp(ms / 1000, zone):%Y-%m-%d %H:%M %Z}"


def task_line(task: Task, zone: ZoneInfo) -> str:
    source = f"CLAUDE.md:{task.line}" if task.source == CLAUDE_MD else "agent"
    source += ":untrusted" if task.tainted else ""  # see UNTRUSTED_NOTE
    first = task.prompt.splitlines()[0] if task.prompt else ""
    gate = " [gate]" if task.script else ""
    return printable_line(  # the prompt may be the agent's
        f"{task.id:<16} {task.folder:<12} {task.status:<9} {task.schedule.describe():<28} "
        f"next {_when(task.next_run_ms, zone):<22} {source:<16} {first[:60]}{gate}"
    )


def run_line(run: TaskRun, zone: ZoneInfo) -> str:
    took = "-"
    if run.started_ms is not None and run.ended_ms is not None:
        took = f"{(run.ended_ms - run.started_ms) / 1000:.1f}s"
    result = run.result.replace("\n", " ")[:80]
    return printable_line(  # the result is the agent's words or error
        f"{run.task_id:<16} due {_when(run.due_ms, zone):<22} started "
        f"{_when(run.started_ms, zone):<22} {took:>7} {run.status:<11} "
        f"{run.tokens:>7} tok  {result}"
    )


async def cmd_tasks(settings: Settings, store: Store, args: argparse.Namespace) -> int:
    zone = settings.zone
    group = getattr(args, "group", None)
    if group is not None and await store.group(group) is None:
        raise ConfigError(f"no group {group}")
    if args.action == "list":
        tasks = await store.tasks(args.group, with_gone=args.all)
        print(TASK_HEADER if tasks else "no tasks")
        for task in tasks:
            print(task_line(task, zone))
        if any(task.tainted for task in tasks):
            print(UNTRUSTED_NOTE)
        for folder, line, message in await store.problems(args.group):
            print(printable_line(f"groups/{folder}/CLAUDE.md line {line}: {message}"))
        return 0
    if args.action == "runs":
        if args.task_id and await store.task(args.task_id) is None:
            print(f"no task {args.task_id}", file=sys.stderr)
            return 1
        runs = await store.task_runs(args.task_id, args.group, args.limit)
        print(RUN_HEADER if runs else "no runs")
        for run in runs:
            print(run_line(run, zone))
        return 0
    found = await store.task(args.task_id)
    if found is None:
        print(f"no task {args.task_id}", file=sys.stderr)
        return 1
    try:
        changed = apply_action(found, args.action, zone, now_ms())
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 1
    await store.replace_task(changed)
    print(task_line(changed, zone))
    return 0


def count(value: str) -> int:
    """An argparse type: a whole number of at least 1."""
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"{value} is not 1 or more")
    return n


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    tasks = sub.add_parser("tasks", help="scheduled tasks and their run log")
    tsub = tasks.add_subparsers(dest="action", required=True, metavar="ACTION")
    ls = tsub.add_parser("list", help="tasks (and CLAUDE.md lines that do not parse)")
    ls.add_argument("group", nargs="?", help="only this group's")
    ls.add_argument("--all", action="store_true", help="also done, cancelled and removed")
    runs = tsub.add_parser("runs", help="the run log, newest first")
    runs.add_argument("task_id", nargs="?", help="only this task's")
    runs.add_argument("--group", help="only this group's")
    runs.add_argument("-n", "--limit", type=count, default=20, help="at most N runs (20)")
    helps = {
        "pause": "stop a task from running until resumed",
        "resume": "run a paused task again, from its next due time",
        "cancel": "stop a task for good (a CLAUDE.md task: delete its lines instead)",
    }
    for action in ACTIONS:
        tsub.add_parser(action, help=helps[action]).add_argument("task_id")
