"""The store's task book against a real SQLite file in tmp_path: claims, run log, CLAUDE.md sync.

Ticks are driven with explicit `now` values; "two processes" are two `Store` objects on the
same file, each with its own connection, as the daemon and a second daemon would have.
"""

from __future__ import annotations

import asyncio
import sqlite3
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from nanoclaw.models import Usage
from nanoclaw.schedule.claudemd import parse_tasks
from nanoclaw.schedule.tasks import (
    AGENT,
    CLAUDE_MD,
    Claim,
    Schedule,
    SyncPlan,
    Task,
    apply_action,
    claim,
    first_run,
    from_claude_md,
    plan_sync,
)
from nanoclaw.store.messages import Store

ZONE = ZoneInfo("UTC")
HOUR = 3_600_000
DAY = 24 * HOUR


def ms(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> int:
    """An instant in UTC, as epoch milliseconds."""
    return int(datetime(year, month, day, hour, minute, tzinfo=UTC).timestamp() * 1000)


D = ms(2026, 11, 22, 8)  # a daily task's first due time: Sunday 08:00 UTC
DAILY = Schedule("cron", cron="0 8 * * *")


def agent_task(
    task_id: str = "t1", schedule: Schedule = DAILY, next_run_ms: int | None = D, **kw: Any
) -> Task:
    return Task(
        id=task_id,
        folder=str(kw.pop("folder", "work")),
        source=AGENT,
        prompt=f"do {task_id}",
        schedule=schedule,
        next_run_ms=next_run_ms,
        created_ms=int(kw.pop("created_ms", D - DAY)),
        **kw,
    )


async def tick(store: Store, now: int) -> list[tuple[Task, Claim]]:
    """One scheduler tick at `now`, with the pure decision the scheduler uses."""
    return await store.claim_due(now, lambda task: claim(task, ZONE, now))


def raw(path: Path, sql: str, args: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    con = sqlite3.connect(path)
    try:
        return con.execute(sql, args).fetchall()
    finally:
        con.close()


def dues(path: Path, task_id: str) -> list[int]:
    rows = raw(path, "SELECT due_ms FROM task_runs WHERE task_id = ? ORDER BY due_ms", (task_id,))
    return [int(r[0]) for r in rows]  # type: ignore[call-overload]


# tasks


async def test_add_task_reads_back_and_refuses_a_taken_id(store: Store) -> None:
    task = agent_task(context="group", script="echo '{}'", catch_up="skip")
    assert await store.add_task(task)
    assert await store.task("t1") == task
    assert not await store.add_task(replace(task, prompt="other"))
    assert (await store.task("t1")).prompt == "do t1"  # type: ignore[union-attr]
    assert await store.task("nope") is None


async def test_tasks_lists_by_folder_and_hides_gone_ones(store: Store) -> None:
    await store.add_task(agent_task("a", created_ms=1))
    await store.add_task(agent_task("b", folder="home", created_ms=2))
    await store.add_task(agent_task("c", created_ms=3, status="cancelled", next_run_ms=None))
    await store.add_task(agent_task("d", created_ms=4, status="paused"))
    assert [t.id for t in await store.tasks("work")] == ["a", "d"]
    assert [t.id for t in await store.tasks()] == ["b", "a", "d"]
    assert [t.id for t in await store.tasks("work", with_gone=True)] == ["a", "c", "d"]


async def test_replace_task_changes_what_an_action_changed(store: Store) -> None:
    await store.add_task(agent_task())
    task = await store.task("t1")
    assert task is not None
    paused = apply_action(task, "pause", ZONE, D - HOUR)
    await store.replace_task(paused)
    assert await store.task("t1") == paused
    assert await tick(store, D + 1) == []
    resumed = apply_action(paused, "resume", ZONE, D + 2 * DAY + HOUR)
    await store.replace_task(resumed)
    assert (await store.task("t1")).next_run_ms == D + 3 * DAY  # type: ignore[union-attr]


async def test_next_task_due_is_the_earliest_active(store: Store) -> None:
    assert await store.next_task_due_ms() is None
    await store.add_task(agent_task("a", next_run_ms=D + 5))
    await store.add_task(agent_task("b", next_run_ms=D + 1, status="paused"))
    await store.add_task(agent_task("c", next_run_ms=D + 3))
    assert await store.next_task_due_ms() == D + 3


# claims: each due time fires exactly once


async def test_a_tick_claims_moves_the_next_run_and_logs_a_pending_run(
    store: Store, db_path: Path
) -> None:
    await store.add_task(agent_task())
    assert await tick(store, D - 1) == []
    [(task, decision)] = await tick(store, D + 2_000)
    assert task.id == "t1" and decision == Claim(D, True, D + DAY)
    assert (await store.task("t1")).next_run_ms == D + DAY  # type: ignore[union-attr]
    assert await store.next_task_due_ms() == D + DAY
    [run] = await store.task_runs("t1")
    assert (run.task_id, run.folder, run.due_ms, run.status) == ("t1", "work", D, "pending")
    assert (run.started_ms, run.ended_ms, run.run_id, run.tokens) == (None, None, None, 0)
    assert await store.pending_task_run("work") == run
    assert await store.folders_with_pending_task_runs() == ["work"]


async def test_concurrent_ticks_on_one_store_fire_each_due_time_once(
    store: Store, db_path: Path
) -> None:
    await store.add_task(agent_task("daily"))
    await store.add_task(agent_task("tenmin", Schedule("every", every_s=600), D))
    for i in range(12):  # two hours of ticks, each a few seconds after a 10-minute slot
        now = D + i * 600_000 + 3_000
        results = await asyncio.gather(*(tick(store, now) for _ in range(4)))
        assert sorted(t.id for r in results for t, _ in r) == (
            ["daily", "tenmin"] if i == 0 else ["tenmin"]
        )
    assert dues(db_path, "daily") == [D]
    assert dues(db_path, "tenmin") == [D + i * 600_000 for i in range(12)]
    assert (await store.task("tenmin")).next_run_ms == D + 12 * 600_000  # type: ignore[union-attr]


async def test_two_processes_fire_each_due_time_once(db_path: Path) -> None:
    first = await Store.open(db_path)
    second = await Store.open(db_path)
    try:
        for n in range(5):
            await first.add_task(agent_task(f"t{n}", Schedule("every", every_s=60), D + n))
        for i in range(30):
            now = D + i * 60_000 + 10
            results = await asyncio.gather(
                tick(first, now), tick(second, now), tick(first, now), tick(second, now)
            )
            fired = sorted(t.id for r in results for t, _ in r)
            assert fired == [f"t{n}" for n in range(5)], (i, fired)
    finally:
        await first.close()
        await second.close()
    for n in range(5):
        assert dues(db_path, f"t{n}") == [D + n + i * 60_000 for i in range(30)]
    assert raw(db_path, "SELECT count(*) FROM task_runs") == [(150,)]


async def test_restart_does_not_fire_again(db_path: Path) -> None:
    store = await Store.open(db_path)
    await store.add_task(agent_task())
    assert len(await tick(store, D + 1_000)) == 1
    await store.close()
    store = await Store.open(db_path)  # the daemon restarts within the same minute
    try:
        assert await tick(store, D + 1_000) == []
        assert await tick(store, D + HOUR) == []
        assert dues(db_path, "t1") == [D]
        assert (await store.task("t1")).next_run_ms == D + DAY  # type: ignore[union-attr]
        assert [t.id for t, _ in await tick(store, D + DAY)] == ["t1"]
    finally:
        await store.close()
    assert dues(db_path, "t1") == [D, D + DAY]


async def test_catch_up_once_after_downtime_logs_one_run(db_path: Path) -> None:
    store = await Store.open(db_path)
    await store.add_task(agent_task("daily"))
    await store.add_task(agent_task("tenmin", Schedule("every", every_s=600), D))
    await store.close()  # down from before D until three days and two hours later
    now = D + 3 * DAY + 2 * HOUR + 5
    store = await Store.open(db_path)
    try:
        claimed = {t.id: c for t, c in await tick(store, now)}
        assert claimed == {
            "daily": Claim(D, True, D + 4 * DAY),
            "tenmin": Claim(D, True, D + 3 * DAY + 2 * HOUR + 600_000),
        }
        assert await tick(store, now + 1_000) == []
    finally:
        await store.close()
    assert dues(db_path, "daily") == [D]
    assert dues(db_path, "tenmin") == [D]


async def test_catch_up_skip_logs_a_skipped_run_and_queues_nothing(
    store: Store, db_path: Path
) -> None:
    await store.add_task(agent_task(catch_up="skip"))
    now = D + 2 * 60_000
    [(_, decision)] = await tick(store, now)
    assert not decision.run and decision.next_run_ms == D + DAY
    [run] = await store.task_runs("t1")
    assert (run.due_ms, run.status, run.ended_ms) == (D, "skipped", now)
    assert run.result == "missed by 120s while down; catch_up is skip"
    assert await store.pending_task_run("work") is None
    assert await store.folders_with_pending_task_runs() == []
    assert (await store.task("t1")).status == "active"  # type: ignore[union-attr]
    # on time the next day (under 60 s late): it runs
    [(_, on_time)] = await tick(store, D + DAY + 59_000)
    assert on_time.run and (await store.pending_task_run("work")).due_ms == D + DAY  # type: ignore[union-attr]


async def test_paused_and_removed_tasks_are_not_claimed(store: Store) -> None:
    await store.add_task(agent_task("p", status="paused"))
    await store.add_task(agent_task("r", status="removed"))
    assert await tick(store, D + DAY) == []
    assert await store.task_runs() == []


# the run log


async def test_start_and_finish_a_run(store: Store) -> None:
    await store.add_task(agent_task("late", next_run_ms=D + 10))
    await store.add_task(agent_task("early", next_run_ms=D))
    await store.add_task(agent_task("elsewhere", folder="home"))
    await tick(store, D + 1_000)
    pending = await store.pending_task_run("work")
    assert pending is not None and pending.task_id == "early"  # oldest due first
    await store.start_task_run(pending)
    [started] = await store.task_runs("early")
    assert started.status == "running" and started.started_ms is not None
    assert (await store.task("early")).last_run_ms == started.started_ms  # type: ignore[union-attr]
    assert (await store.pending_task_run("work")).task_id == "late"  # type: ignore[union-attr]
    run_id = await store.start_run("work", "task", None, None)
    await store.add_usage(run_id, Usage(requests=1, input_tokens=120, output_tokens=30))
    await store.finish_task_run(pending, "ok", "sent: hello" + "x" * 3000, run_id)
    [done] = await store.task_runs("early")
    assert (done.status, done.run_id, done.tokens) == ("ok", run_id, 150)
    assert done.result.startswith("sent: hello") and len(done.result) == 2000
    assert done.ended_ms is not None and done.ended_ms >= started.started_ms
    task = await store.task("early")
    assert task is not None and task.status == "active" and task.next_run_ms == D + DAY
    assert [r.task_id for r in await store.task_runs(folder="work")] == ["late", "early"]
    assert [r.task_id for r in await store.task_runs(folder="home")] == ["elsewhere"]
    assert [r.task_id for r in await store.task_runs(limit=1)] == ["late"]  # newest first


async def test_interrupted_runs_are_logged_and_not_fired_again(db_path: Path) -> None:
    store = await Store.open(db_path)
    await store.add_task(agent_task("a"))
    await store.add_task(agent_task("b", next_run_ms=D + 1))
    now = D + 1_000
    await tick(store, now)
    running = await store.pending_task_run("work")
    assert running is not None and running.task_id == "a"
    await store.start_task_run(running)
    await store.close()  # crash: "a" was running, "b" still waiting its turn
    store = await Store.open(db_path)
    try:
        assert await store.interrupt_stale_task_runs() == 1
        assert await store.interrupt_stale_task_runs() == 0
        [a] = await store.task_runs("a")
        assert a.status == "interrupted" and a.ended_ms is not None
        assert await tick(store, now) == []
        # the waiting one is still queued; the interrupted one is not
        assert (await store.pending_task_run("work")).task_id == "b"  # type: ignore[union-attr]
        assert (await store.task("a")).next_run_ms == D + DAY  # type: ignore[union-attr]
    finally:
        await store.close()
    assert dues(db_path, "a") == [D]


# one-shot tasks


async def test_at_task_is_done_after_its_run(store: Store) -> None:
    at = D + HOUR
    await store.add_task(agent_task("once", Schedule("at", at_ms=at), at))
    assert await tick(store, at - 1) == []
    [(_, decision)] = await tick(store, at + 500)
    assert decision == Claim(at, True, None)
    waiting = await store.task("once")
    assert waiting is not None and (waiting.status, waiting.next_run_ms) == ("active", None)
    assert await store.next_task_due_ms() is None
    pending = await store.pending_task_run("work")
    assert pending is not None
    await store.start_task_run(pending)
    await store.finish_task_run(pending, "failed", "model error")
    assert (await store.task("once")).status == "done"  # type: ignore[union-attr]
    assert await store.tasks("work") == []
    assert [t.id for t in await store.tasks("work", with_gone=True)] == ["once"]
    assert await tick(store, at + DAY) == []
    assert [r.status for r in await store.task_runs("once")] == ["failed"]


async def test_at_task_missed_with_skip_is_done_at_once(store: Store) -> None:
    at = D + HOUR
    await store.add_task(agent_task("once", Schedule("at", at_ms=at), at, catch_up="skip"))
    [(_, decision)] = await tick(store, at + HOUR)
    assert decision == Claim(at, False, None, "missed by 3600s while down; catch_up is skip")
    assert (await store.task("once")).status == "done"  # type: ignore[union-attr]
    assert [r.status for r in await store.task_runs("once")] == ["skipped"]


async def test_at_task_cut_short_by_a_crash_is_done(store: Store) -> None:
    at = D + HOUR
    await store.add_task(agent_task("once", Schedule("at", at_ms=at), at))
    await tick(store, at)
    pending = await store.pending_task_run("work")
    assert pending is not None
    await store.start_task_run(pending)
    assert await store.interrupt_stale_task_runs() == 1
    assert (await store.task("once")).status == "done"  # type: ignore[union-attr]
    assert [r.status for r in await store.task_runs("once")] == ["interrupted"]


async def test_at_task_paused_before_its_run_runs_when_resumed(store: Store) -> None:
    """Paused while its run waited in the queue, the run is cancelled (as the orchestrator
    does); resumed later, the one-shot runs after all, once, and is then done."""
    at = D + HOUR
    await store.add_task(agent_task("once", Schedule("at", at_ms=at), at))
    await tick(store, at)
    claimed = await store.task("once")
    assert claimed is not None
    await store.replace_task(apply_action(claimed, "pause", ZONE, at + 1))
    pending = await store.pending_task_run("work")
    assert pending is not None
    await store.finish_task_run(pending, "cancelled", "task is paused")
    assert (await store.task("once")).status == "paused"  # type: ignore[union-attr]
    paused = await store.task("once")
    assert paused is not None
    await store.replace_task(apply_action(paused, "resume", ZONE, at + HOUR))
    [(_, decision)] = await tick(store, at + HOUR + 1)
    assert decision == Claim(at, True, None)
    again = await store.pending_task_run("work")
    assert again is not None and (again.id, again.status, again.result) == (
        pending.id,
        "pending",
        "",
    )
    await store.start_task_run(again)
    await store.finish_task_run(again, "ok", "sent")
    assert (await store.task("once")).status == "done"  # type: ignore[union-attr]
    assert [r.status for r in await store.task_runs("once")] == ["ok"]


async def test_at_task_that_already_ran_is_not_fired_again_by_a_stale_next_run(
    store: Store,
) -> None:
    """Paused while running, it stays paused after the run; resuming it puts back its (past)
    due time, which has a finished run: nothing fires and the task is done."""
    at = D + HOUR
    await store.add_task(agent_task("once", Schedule("at", at_ms=at), at))
    await tick(store, at)
    pending = await store.pending_task_run("work")
    assert pending is not None
    await store.start_task_run(pending)
    running = await store.task("once")
    assert running is not None
    await store.replace_task(apply_action(running, "pause", ZONE, at + 1))
    await store.finish_task_run(pending, "ok", "sent")
    paused = await store.task("once")
    assert paused is not None and paused.status == "paused"
    await store.replace_task(apply_action(paused, "resume", ZONE, at + HOUR))
    assert await tick(store, at + HOUR) == []
    assert (await store.task("once")).status == "done"  # type: ignore[union-attr]
    assert [r.status for r in await store.task_runs("once")] == ["ok"]


# CLAUDE.md sync

FILE = """# Work

## Scheduled Tasks
# Cron: 0 8 * * *
# TZ: Asia/Kolkata
Summarise the feeds.

# Cron: 0 * * * *
Check the alerts.
"""


async def sync(store: Store, folder: str, text: str, now: int) -> SyncPlan:
    """What the CLAUDE.md watcher does with one version of the file."""
    entries, errors = parse_tasks(text)
    wanted = [from_claude_md(folder, entry) for entry in entries]
    plan = plan_sync(await store.claude_md_status(folder), wanted)
    problems = sorted(
        [(e.line, e.message) for e in errors]
        + [(line, f"same task as line {first}; ignored") for line, first in plan.duplicates]
    )
    await store.sync_claude_md(folder, plan, problems, lambda t: first_run(t.schedule, ZONE, now))
    return plan


def ids(text: str, folder: str = "work") -> dict[str, str]:
    """The ids the file's tasks get: {prompt: id}."""
    entries, _ = parse_tasks(text)
    return {e.prompt: from_claude_md(folder, e).id for e in entries}


async def md(store: Store, folder: str = "work") -> dict[str, tuple[str, str, int | None, int]]:
    """The folder's CLAUDE.md tasks, gone ones too: {id: (prompt, status, next run, line)}."""
    return {
        t.id: (t.prompt, t.status, t.next_run_ms, t.line)
        for t in await store.tasks(folder, with_gone=True)
        if t.source == CLAUDE_MD
    }


SUMMARY, ALERTS = "Summarise the feeds.", "Check the alerts."


async def test_sync_adds_changes_and_removes_and_leaves_agent_tasks_alone(
    store: Store, db_path: Path
) -> None:
    agent = agent_task("agent1", Schedule("every", every_s=600), D + 7)
    await store.add_task(agent)
    summary, alerts = ids(FILE)[SUMMARY], ids(FILE)[ALERTS]
    now = ms(2026, 11, 22, 0, 10)
    await sync(store, "work", FILE, now)
    assert await md(store) == {
        summary: (SUMMARY, "active", ms(2026, 11, 22, 2, 30), 4),  # 08:00 IST
        alerts: (ALERTS, "active", ms(2026, 11, 22, 1), 8),
    }
    assert await store.problems("work") == []

    # unchanged but moved down a line, and paused meanwhile: kept as it is, line followed
    task = await store.task(alerts)
    assert task is not None
    await store.replace_task(apply_action(task, "pause", ZONE, now))
    await sync(store, "work", FILE.replace("# Work\n", "# Work\nnotes\n"), now + HOUR)
    assert (await md(store))[alerts] == (ALERTS, "paused", ms(2026, 11, 22, 1), 9)

    # a changed prompt is a new task; the old one is removed and no longer fires
    edited = FILE.replace(ALERTS, "Check the alerts twice.")
    twice = ids(edited)["Check the alerts twice."]
    later = ms(2026, 11, 22, 3, 30)
    await sync(store, "work", edited, later)
    assert await md(store) == {
        summary: (SUMMARY, "active", ms(2026, 11, 22, 2, 30), 4),
        alerts: (ALERTS, "removed", None, 9),
        twice: ("Check the alerts twice.", "active", ms(2026, 11, 22, 4), 8),
    }

    # a changed cron is a new task too
    nine = edited.replace("0 8 * * *", "0 9 * * *")
    summary9 = ids(nine)[SUMMARY]
    await sync(store, "work", nine, later)
    tasks = await md(store)
    assert tasks[summary] == (SUMMARY, "removed", None, 4)
    assert tasks[summary9] == (SUMMARY, "active", ms(2026, 11, 23, 3, 30), 4)  # 09:00 IST
    assert len(tasks) == 4

    # the section emptied: every CLAUDE.md task removed, the agent's task untouched
    await sync(store, "work", "# Work\n\n## Scheduled Tasks\n", later)
    assert {status for _, status, _, _ in (await md(store)).values()} == {"removed"}
    assert await store.task("agent1") == agent
    assert [t.id for t in await store.tasks("work")] == ["agent1"]
    assert [t.id for t, _ in await tick(store, ms(2026, 11, 24))] == ["agent1"]
    assert raw(db_path, "SELECT DISTINCT task_id FROM task_runs") == [("agent1",)]
    agent = await store.task("agent1")  # type: ignore[assignment]

    # written back: the same tasks return, active again, due from now
    back = ms(2026, 11, 24, 10, 20)
    await sync(store, "work", FILE, back)
    tasks = await md(store)
    assert tasks[alerts] == (ALERTS, "active", ms(2026, 11, 24, 11), 8)
    assert tasks[summary] == (SUMMARY, "active", ms(2026, 11, 25, 2, 30), 4)
    assert [s for _, s, _, _ in tasks.values()].count("active") == 2
    assert await store.task("agent1") == agent


async def test_sync_of_an_unchanged_file_changes_nothing(store: Store, db_path: Path) -> None:
    await sync(store, "work", FILE, D)
    before = raw(db_path, "SELECT * FROM tasks ORDER BY id")
    plan = await sync(store, "work", FILE, D + 3 * DAY)
    assert plan.add == () and plan.remove == () and len(plan.keep) == 2
    assert raw(db_path, "SELECT * FROM tasks ORDER BY id") == before


async def test_sync_reports_bad_lines_and_duplicates_and_loads_the_good_ones(
    store: Store,
) -> None:
    text = """## Scheduled Tasks
# Cron: 0 8 * * *
good morning
# Cron: 61 * * * *
bad minute
# Cron: 0 9 * * *
# TZ: Mars/Olympus
bad zone
# Cron: 0 8 * * *
good morning
"""
    await sync(store, "home", FILE, D)
    home_problems = [("home", 2, "x")]
    await store.sync_claude_md("home", SyncPlan((), (), (), ()), [(2, "x")], lambda t: None)
    plan = await sync(store, "work", text, D)
    assert plan.duplicates == ((9, 2),)
    assert await store.problems("work") == [
        ("work", 4, "not a 5-field cron expression: '61 * * * *'"),
        ("work", 7, "unknown timezone 'Mars/Olympus'"),
        ("work", 9, "same task as line 2; ignored"),
    ]
    good = ids(text)["good morning"]
    assert await md(store) == {good: ("good morning", "active", D + DAY, 2)}  # strictly after
    assert len(await md(store, "home")) == 2  # the empty plan left home's tasks alone
    assert await store.problems("home") == home_problems
    assert len(await store.problems()) == 4
    # fixed: the problems go, the other folder's stay
    await sync(store, "work", "## Scheduled Tasks\n# Cron: 0 8 * * *\ngood morning\n", D)
    assert await store.problems("work") == []
    assert await store.problems() == home_problems
