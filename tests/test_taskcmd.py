"""`nanoclaw tasks list/runs/pause/resume/cancel` as a real subprocess on a store in tmp_path.

The store is filled through the project's own paths: agent tasks as the IPC handler adds
them, CLAUDE.md tasks by a TaskFile sync of a real file, a run by claim, start and finish.
"""

from __future__ import annotations

import subprocess
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from conftest import run_cli

from nanoclaw.cli.tasks import RUN_HEADER, TASK_HEADER
from nanoclaw.models import Group
from nanoclaw.schedule.taskfile import TaskFile
from nanoclaw.schedule.tasks import AGENT, Schedule, Task, claim
from nanoclaw.store.db import now_ms
from nanoclaw.store.messages import Store

UTC_ZONE = ZoneInfo("UTC")
CLAUDE_MD = """# Work
## Scheduled Tasks
# Cron: 0 9 * * *
Read /workspace/alerts.json and report P1 items.

# Cron: 61 * * * *
This one has a bad minute.
"""


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp() * 1000)


def nanoclaw(tasks_home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(tasks_home, *args)


def ok(tasks_home: Path, *args: str) -> str:
    proc = nanoclaw(tasks_home, *args)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    return proc.stdout


def by_id(output: str) -> dict[str, str]:
    lines = output.splitlines()
    assert not lines or lines[0] in (TASK_HEADER, "no tasks")  # the columns are named
    return {line.split()[0]: line for line in lines[1:] if not line.startswith("groups/")}


async def open_store(tasks_home: Path) -> Store:
    return await Store.open(tasks_home / "store" / "nanoclaw.db")


async def task_of(tasks_home: Path, task_id: str) -> Task | None:
    store = await open_store(tasks_home)
    try:
        return await store.task(task_id)
    finally:
        await store.close()


@pytest.fixture
async def tasks_home(tmp_path: Path) -> Path:
    """A store with agent tasks, CLAUDE.md tasks (one line broken) and one finished run."""
    (tmp_path / "groups" / "work").mkdir(parents=True)
    (tmp_path / "groups" / "work" / "CLAUDE.md").write_text(CLAUDE_MD)
    store = await open_store(tmp_path)
    try:
        await store.save_group(Group(folder="main", name="main", chats=("term:main",)))
        await store.save_group(Group(folder="work", name="work", chats=("tg:-100",)))
        created = now_ms() - 86_400_000
        for task in (
            Task(
                id="brief",
                folder="main",
                source=AGENT,
                prompt="Morning brief\nsecond line",
                schedule=Schedule("cron", cron="0 8 * * 1-5", tz="Asia/Kolkata"),
                next_run_ms=ms("2030-01-02T08:00:00+05:30"),
                created_ms=created,
            ),
            Task(
                id="poll",
                folder="work",
                source=AGENT,
                prompt="Poll the feed",
                schedule=Schedule("every", every_s=3600),
                script="test -s /workspace/feed",
                next_run_ms=ms("2030-01-01T00:00:00+00:00"),
                created_ms=created + 1,
            ),
            Task(
                id="old",
                folder="work",
                source=AGENT,
                prompt="An old one",
                schedule=Schedule("every", every_s=600),
                status="cancelled",
                created_ms=created + 2,
            ),
        ):
            assert await store.add_task(task)
        clock = ms("2030-01-05T12:00:00+00:00")
        sync = TaskFile(store, tmp_path / "groups", UTC_ZONE, lambda f: None, clock=lambda: clock)
        assert await sync.sync("work") == [(6, "not a 5-field cron expression: '61 * * * *'")]
        due = ms("2030-01-01T00:00:30+00:00")
        [(task, decision)] = await store.claim_due(due, lambda t: claim(t, UTC_ZONE, due))
        assert task.id == "poll" and decision.run
        run = await store.pending_task_run("work")
        assert run is not None
        await store.start_task_run(run)
        await store.finish_task_run(run, "ok", "3 new alerts\nnone of them P1")
    finally:
        await store.close()
    return tmp_path


async def md_id(tasks_home: Path) -> str:
    store = await open_store(tasks_home)
    try:
        [task] = [t for t in await store.tasks("work") if t.source == "claude_md"]
        return task.id
    finally:
        await store.close()


async def test_list_shows_schedule_next_run_status_and_problems(tasks_home: Path) -> None:
    out = ok(tasks_home, "tasks", "list")
    md = await md_id(tasks_home)
    lines = by_id(out)
    assert list(lines) == ["brief", "poll", md]  # by group, then by creation; not the cancelled
    brief = lines["brief"].split()
    assert brief[:3] == ["brief", "main", "active"]
    assert "cron 0 8 * * 1-5 (Asia/Kolkata)" in lines["brief"]
    assert "next 2030-01-02 02:30 UTC" in lines["brief"]  # shown in TZ (UTC here)
    assert lines["brief"].rstrip().endswith("agent            Morning brief")
    assert "every 3600s" in lines["poll"]
    assert "next 2030-01-01 01:00 UTC" in lines["poll"]  # moved on by the run it had
    assert lines["poll"].endswith("Poll the feed [gate]")
    assert lines[md].split()[1:3] == ["work", "active"]
    assert "cron 0 9 * * *" in lines[md] and "next 2030-01-06 09:00 UTC" in lines[md]
    assert "CLAUDE.md:3" in lines[md]
    problems = [line for line in out.splitlines() if line.startswith("groups/")]
    assert problems == ["groups/work/CLAUDE.md line 6: not a 5-field cron expression: '61 * * * *'"]


async def test_list_all_and_by_group(tasks_home: Path) -> None:
    everything = by_id(ok(tasks_home, "tasks", "list", "--all"))
    assert set(everything) == {"brief", "poll", "old", await md_id(tasks_home)}
    assert everything["old"].split()[2] == "cancelled" and "next -" in everything["old"]
    work = ok(tasks_home, "tasks", "list", "work")
    assert set(by_id(work)) == {"poll", await md_id(tasks_home)}
    assert "groups/work/CLAUDE.md line 6" in work
    main = ok(tasks_home, "tasks", "list", "main")
    assert set(by_id(main)) == {"brief"} and "groups/" not in main


async def test_runs(tasks_home: Path) -> None:
    header, line = ok(tasks_home, "tasks", "runs").splitlines()
    assert header == RUN_HEADER and header.split()[:3] == ["task", "due", "started"]
    assert line.startswith("poll ")
    assert "due 2030-01-01 00:00 UTC" in line
    assert " ok " in line and "0 tok" in line
    assert line.endswith("3 new alerts none of them P1")  # one line per run
    assert ok(tasks_home, "tasks", "runs", "poll").splitlines() == [header, line]
    assert ok(tasks_home, "tasks", "runs", "--group", "work").splitlines() == [header, line]
    assert ok(tasks_home, "tasks", "runs", "-n", "1").splitlines() == [header, line]
    assert ok(tasks_home, "tasks", "runs", "--group", "main").strip() == "no runs"
    assert ok(tasks_home, "tasks", "runs", "brief").strip() == "no runs"


async def test_pause_resume_cancel(tasks_home: Path) -> None:
    out = ok(tasks_home, "tasks", "pause", "poll")
    assert out.split()[:3] == ["poll", "work", "paused"]
    paused = await task_of(tasks_home, "poll")
    assert paused is not None and paused.status == "paused"
    assert by_id(ok(tasks_home, "tasks", "list"))["poll"].split()[2] == "paused"

    before = now_ms()
    out = ok(tasks_home, "tasks", "resume", "poll")
    assert out.split()[:3] == ["poll", "work", "active"]
    resumed = await task_of(tasks_home, "poll")
    assert resumed is not None and resumed.status == "active"
    assert resumed.next_run_ms is not None
    assert before + 3_600_000 <= resumed.next_run_ms <= now_ms() + 3_600_000  # from now

    out = ok(tasks_home, "tasks", "cancel", "poll")
    assert out.split()[:3] == ["poll", "work", "cancelled"] and "next -" in out
    cancelled = await task_of(tasks_home, "poll")
    assert cancelled is not None and (cancelled.status, cancelled.next_run_ms) == (
        "cancelled",
        None,
    )
    assert "poll" not in by_id(ok(tasks_home, "tasks", "list"))

    again = nanoclaw(tasks_home, "tasks", "resume", "poll")
    assert again.returncode == 1
    assert again.stderr.strip() == "task poll is cancelled" and again.stdout == ""
    assert await task_of(tasks_home, "poll") == cancelled


async def test_claude_md_task_can_be_paused_but_not_cancelled(tasks_home: Path) -> None:
    md = await md_id(tasks_home)
    before = await task_of(tasks_home, md)
    proc = nanoclaw(tasks_home, "tasks", "cancel", md)
    assert proc.returncode == 1
    assert proc.stderr.strip() == f"task {md} comes from CLAUDE.md: delete it from the file"
    assert await task_of(tasks_home, md) == before
    assert ok(tasks_home, "tasks", "pause", md).split()[2] == "paused"


@pytest.mark.parametrize("action", ["pause", "resume", "cancel", "runs"])
async def test_unknown_id_is_a_clear_error(tasks_home: Path, action: str) -> None:
    store = await open_store(tasks_home)
    try:
        before = await store.tasks(with_gone=True)
    finally:
        await store.close()
    proc = nanoclaw(tasks_home, "tasks", action, "nosuch")
    assert proc.returncode == 1
    assert proc.stderr.strip() == "no task nosuch"
    assert proc.stdout == ""
    store = await open_store(tasks_home)
    try:
        assert await store.tasks(with_gone=True) == before
    finally:
        await store.close()


def test_empty_store(tmp_path: Path) -> None:
    assert ok(tmp_path, "tasks", "list").strip() == "no tasks"
    assert ok(tmp_path, "tasks", "runs").strip() == "no runs"
    assert nanoclaw(tmp_path, "tasks", "pause").returncode == 2  # argparse: the id is needed


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["list", "nosuchgroup"], "nanoclaw: no group nosuchgroup"),
        (["runs", "--group", "nosuchgroup"], "nanoclaw: no group nosuchgroup"),
        (["runs", "-n", "-1"], "-1 is not 1 or more"),
        (["runs", "--limit", "0"], "0 is not 1 or more"),
        (["runs", "-n", "x"], "'x' is not a whole number"),
    ],
)
def test_unknown_group_and_bad_count_are_errors(tmp_path: Path, args: list[str], says: str) -> None:
    proc = nanoclaw(tmp_path, "tasks", *args)
    assert proc.returncode == 2, proc.stdout
    assert says in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stdout == ""


async def test_removing_a_group_stops_its_tasks_and_keeps_its_files(tasks_home: Path) -> None:
    md = await md_id(tasks_home)
    out = ok(tasks_home, "groups", "remove", "work")
    assert "removed group work; its chats are no longer answered: tg:-100" in out
    assert f"stopped its 2 tasks: poll, {md}" in out
    workspace = tasks_home / "groups" / "work"
    assert f"kept: {workspace} (its CLAUDE.md and files)" in out
    assert f"rm -r {workspace}" in out
    assert (workspace / "CLAUDE.md").read_text() == CLAUDE_MD
    poll, from_md, brief = [await task_of(tasks_home, i) for i in ("poll", md, "brief")]
    assert poll is not None and (poll.status, poll.next_run_ms) == ("cancelled", None)
    # a CLAUDE.md task is marked gone, as when its lines are deleted from the file
    assert from_md is not None and (from_md.status, from_md.next_run_ms) == ("removed", None)
    assert brief is not None and brief.status == "active"  # main's task is not touched
    assert by_id(ok(tasks_home, "tasks", "list")).keys() == {"brief"}
