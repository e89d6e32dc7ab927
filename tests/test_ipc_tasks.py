"""IPC files that change tasks, memory and host files (SPEC sections 6 and 8), end to end.

Every case drops a real file into store/ipc/<folder>/outbound/ and calls the handler's step
against a real SQLite store and real directories; a refused file must end in errors/ with
its reason, and nothing else may have happened.
"""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import pytest_asyncio

from nanoclaw.ipc import files as ipcfs
from nanoclaw.ipc.handler import Handled, IpcHandler
from nanoclaw.memory import ENTRY_CAP, FILE_CAP, MARKER
from nanoclaw.models import Group
from nanoclaw.schedule.scheduler import Scheduler
from nanoclaw.schedule.taskfile import TaskFile
from nanoclaw.schedule.tasks import AGENT, CLAUDE_MD, Schedule, Task
from nanoclaw.store.db import now_ms
from nanoclaw.store.messages import Store

UTC_ZONE = ZoneInfo("UTC")
CHATS = {"main": "term:main", "alpha": "tg:-1", "beta": "tg:-2"}
HOUR_MS = 3_600_000


@dataclass
class Env:
    store: Store
    handler: IpcHandler
    root: Path
    changed: list[str] = field(default_factory=list)

    @property
    def export(self) -> Path:
        return self.root / "export"

    @property
    def outside(self) -> Path:
        return self.root / "outside"

    def group_dir(self, folder: str) -> Path:
        return self.root / "groups" / folder

    def drop(self, folder: str, payload: Any, rand: str | None = None) -> str:
        name = f"{int(time.time() * 1000)}-{rand or os.urandom(6).hex()}.json"
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        (self.root / "ipc" / folder / "outbound" / name).write_bytes(data)
        return name

    async def send(self, folder: str, payload: Any, rand: str | None = None) -> Handled:
        """Drop a file and run the handler's step on it."""
        return await self.handler.handle_file(folder, self.drop(folder, payload, rand))

    def reasons(self, folder: str) -> list[str]:
        errors = self.root / "ipc" / folder / "errors"
        return sorted(p.read_text() for p in errors.glob("*.reason.txt"))

    def outbound(self, folder: str) -> list[str]:
        return sorted(os.listdir(self.root / "ipc" / folder / "outbound"))

    def host_files(self) -> dict[str, bytes]:
        """Every regular file the host owns outside the IPC dirs and the database."""
        skip = (self.root / "ipc", self.root / "store")
        return {
            str(p.relative_to(self.root)): p.read_bytes()
            for p in sorted(self.root.rglob("*"))
            if not p.is_symlink() and p.is_file() and not any(s in p.parents for s in skip)
        }


@pytest_asyncio.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    store = await Store.open(tmp_path / "store" / "nanoclaw.db")
    (tmp_path / "export").mkdir()
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret.txt").write_text("host secret\n")
    for folder, chat in CHATS.items():
        exports = (f"out={tmp_path / 'export'}",) if folder == "alpha" else ()
        await store.save_group(Group(folder=folder, name=folder, chats=(chat,), exports=exports))
        ipcfs.ensure_dirs(tmp_path / "ipc", folder)
        (tmp_path / "groups" / folder).mkdir(parents=True)
    changed: list[str] = []
    handler = IpcHandler(
        store,
        tmp_path / "ipc",
        tmp_path / "groups",
        UTC_ZONE,
        on_tasks_changed=changed.append,
        files_root=tmp_path / "files",
    )
    yield Env(store, handler, tmp_path, changed)
    await store.close()


def agent_task(task_id: str, folder: str, status: str = "active") -> Task:
    now = now_ms()
    return Task(
        id=task_id,
        folder=folder,
        source=AGENT,
        prompt=f"{folder}'s report",
        schedule=Schedule("every", every_s=3600),
        status=status,
        next_run_ms=None if status == "paused" else now + HOUR_MS,
        created_ms=now,
    )


def schedule(spec: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"type": "schedule_task", "prompt": "daily digest", "schedule": spec, **extra}


# who may change which task: through the handler, with the store's real rows

ACTIONS: dict[str, dict[str, Any]] = {
    "update_task": {"prompt": "changed by the agent"},
    "pause_task": {},
    "resume_task": {},
    "cancel_task": {},
}


def expect_done(action: str, before: Task, after: Task) -> None:
    if action == "update_task":
        assert after == replace(before, prompt="changed by the agent")
    elif action == "pause_task":
        assert after == replace(before, status="paused")
    elif action == "resume_task":
        assert after.status == "active" and after.next_run_ms is not None
        assert after.next_run_ms > now_ms() + HOUR_MS - 60_000  # every 3600s, from now
    else:
        assert after == replace(before, status="cancelled", next_run_ms=None)


@pytest.mark.parametrize("action", list(ACTIONS))
@pytest.mark.parametrize(
    ("actor", "owner", "allowed"),
    [
        ("alpha", "alpha", True),
        ("alpha", "beta", False),
        ("beta", "alpha", False),
        ("alpha", "main", False),
        ("main", "alpha", True),
        ("main", "main", True),
    ],
)
async def test_task_action_matrix(
    env: Env, action: str, actor: str, owner: str, allowed: bool
) -> None:
    status = "paused" if action == "resume_task" else "active"
    before = agent_task(f"t-{owner}", owner, status)
    assert await env.store.add_task(before)
    name = env.drop(actor, {"type": action, "task_id": before.id, **ACTIONS[action]})
    result = await env.handler.handle_file(actor, name)
    after = await env.store.task(before.id)
    assert after is not None
    assert env.outbound(actor) == []
    if allowed:
        assert result == Handled("done"), result
        expect_done(action, before, after)
        assert env.changed == [owner]  # the owner's tasks.json is republished
        assert env.reasons(actor) == []
    else:
        assert result == Handled("rejected", "only main may change another group's task")
        assert after == before
        assert env.changed == []
        [reason] = env.reasons(actor)
        assert reason == f"{name}: only main may change another group's task\n"
        assert await env.store.ipc_done(actor, name)  # refused once, never retried


@pytest.mark.parametrize("action", list(ACTIONS))
async def test_unknown_task_id_is_refused(env: Env, action: str) -> None:
    payload = {"type": action, "task_id": "nosuch", **ACTIONS[action]}
    name = env.drop("alpha", payload)
    assert await env.handler.handle_file("alpha", name) == Handled("rejected", "no task nosuch")
    assert env.reasons("alpha") == [f"{name}: no task nosuch\n"]
    assert await env.store.tasks(with_gone=True) == [] and env.changed == []


@pytest.mark.parametrize(
    ("actor", "target", "refusal"),
    [
        ("alpha", "beta", "only main may schedule a task for another group"),
        ("alpha", "main", "only main may schedule a task for another group"),
        ("beta", "alpha", "only main may schedule a task for another group"),
        ("main", "nosuch", "no group nosuch"),
        ("main", "global", "no group global"),
        ("alpha", "alpha", None),
        ("main", "beta", None),
    ],
)
async def test_schedule_for_a_group(env: Env, actor: str, target: str, refusal: str | None) -> None:
    result = await env.send(actor, schedule({"every_s": 600}, group=target), rand="t1")
    task = await env.store.task("t1")
    if refusal:
        assert result == Handled("rejected", f"{refusal}")
        assert task is None and await env.store.tasks(with_gone=True) == []
        assert refusal in env.reasons(actor)[0]
        assert env.changed == []
    else:
        assert result == Handled("done")
        assert task is not None and task.folder == target and task.source == AGENT
        assert env.changed == [target]


async def test_schedule_without_group_is_for_the_own_group(env: Env) -> None:
    assert await env.send("beta", schedule({"every_s": 600}), rand="own") == Handled("done")
    task = await env.store.task("own")
    assert task is not None and task.folder == "beta"
    assert env.changed == ["beta"]


# tasks written in CLAUDE.md: the owner's; the agent may pause them, never change or cancel


@pytest_asyncio.fixture
async def md_task(env: Env) -> Task:
    (env.group_dir("alpha") / "CLAUDE.md").write_text(
        "# Alpha\n\n## Scheduled Tasks\n# Cron: 0 8 * * *\nMorning brief.\n"
    )
    synced: list[str] = []
    await TaskFile(env.store, env.root / "groups", UTC_ZONE, synced.append).sync("alpha")
    [task] = await env.store.tasks("alpha")
    assert task.source == CLAUDE_MD and synced == ["alpha"]
    return task


@pytest.mark.parametrize("actor", ["alpha", "main"])
async def test_claude_md_task_cannot_be_cancelled_or_updated(
    env: Env, md_task: Task, actor: str
) -> None:
    cancel = {"type": "cancel_task", "task_id": md_task.id}
    update = {"type": "update_task", "task_id": md_task.id, "prompt": "pwned"}
    update_schedule = {"type": "update_task", "task_id": md_task.id, "schedule": {"every_s": 60}}
    assert (await env.send(actor, cancel)).reason.endswith(
        "comes from CLAUDE.md: delete it from the file"
    )
    assert (await env.send(actor, update)).reason.endswith(
        "comes from CLAUDE.md: edit the file instead"
    )
    assert (await env.send(actor, update_schedule)).reason.endswith("edit the file instead")
    assert await env.store.task(md_task.id) == md_task
    assert len(env.reasons(actor)) == 3 and env.changed == []


async def test_claude_md_task_can_be_paused_and_resumed_by_its_group(
    env: Env, md_task: Task
) -> None:
    assert await env.send("alpha", {"type": "pause_task", "task_id": md_task.id}) == Handled("done")
    assert await env.store.task(md_task.id) == replace(md_task, status="paused")
    assert await env.send("alpha", {"type": "resume_task", "task_id": md_task.id}) == Handled(
        "done"
    )
    resumed = await env.store.task(md_task.id)
    assert resumed is not None and resumed.status == "active"
    assert resumed.next_run_ms == md_task.next_run_ms  # next 08:00 UTC either way
    assert env.changed == ["alpha", "alpha"]
    # ...but not by another non-main group
    refused = await env.send("beta", {"type": "pause_task", "task_id": md_task.id})
    assert refused.status == "rejected" and refused.reason.startswith("only main")


# schedule_task: what a schedule may be


def utc(ms: int | None) -> datetime:
    assert ms is not None
    return datetime.fromtimestamp(ms / 1000, UTC)


async def test_cron_with_timezone(env: Env) -> None:
    spec = {"cron": "0 8 * * 1-5", "tz": "Asia/Kolkata"}
    assert await env.send("alpha", schedule(spec), rand="brief") == Handled("done")
    task = await env.store.task("brief")
    assert task is not None
    assert task.schedule == Schedule("cron", cron="0 8 * * 1-5", tz="Asia/Kolkata")
    first = utc(task.next_run_ms).astimezone(ZoneInfo("Asia/Kolkata"))
    assert (first.hour, first.minute, first.second) == (8, 0, 0)  # 08:00 in Kolkata, not UTC
    assert first.weekday() < 5
    assert timedelta(0) < first - datetime.now(UTC) <= timedelta(days=3, hours=1)
    assert (task.context, task.catch_up, task.status, task.script) == (
        "isolated",
        "once",
        "active",
        None,
    )


async def test_every_and_options(env: Env) -> None:
    before = now_ms()
    payload = schedule(
        {"every_s": 60}, context="group", catch_up="skip", script="test -s /workspace/x"
    )
    assert await env.send("alpha", payload, rand="minutely") == Handled("done")
    task = await env.store.task("minutely")
    assert task is not None and task.next_run_ms is not None
    assert task.schedule == Schedule("every", every_s=60)
    assert before + 60_000 <= task.next_run_ms <= now_ms() + 60_000
    assert (task.context, task.catch_up, task.script) == ("group", "skip", "test -s /workspace/x")


async def test_valid_at_with_offset(env: Env) -> None:
    when = (datetime.now(UTC) + timedelta(days=2)).replace(microsecond=0)
    spec = {"at": when.astimezone(ZoneInfo("Asia/Kolkata")).isoformat()}
    assert "+05:30" in spec["at"]
    assert await env.send("alpha", schedule(spec), rand="once") == Handled("done")
    task = await env.store.task("once")
    assert task is not None
    assert task.schedule == Schedule("at", at_ms=int(when.timestamp() * 1000))
    assert task.next_run_ms == int(when.timestamp() * 1000)


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        ({"cron": "61 * * * *"}, "not a 5-field cron expression: '61 * * * *'"),
        ({"cron": "* * * *"}, "not a 5-field cron expression"),
        ({"cron": "0 8 * * * *"}, "not a 5-field cron expression"),
        ({"cron": "@daily"}, "not a 5-field cron expression"),
        ({"cron": "0 8 * * *", "tz": "Mars/Olympus"}, "unknown timezone 'Mars/Olympus'"),
        ({"cron": "0 8 * * *", "tz": "../../etc/passwd"}, "unknown timezone"),
        ({"every_s": 59}, "every_s: Input should be greater than or equal to 60"),
        ({"every_s": 0}, "greater than or equal to 60"),
        ({"every_s": "3600"}, "every_s: Input should be a valid integer"),
        ({"at": "2031-01-01T08:00:00"}, "at: the time needs an offset"),
        ({"at": "2020-01-01T08:00:00+00:00"}, "is in the past"),
        ({"at": "tomorrow at eight"}, "not an ISO-8601 time"),
        ({"every_s": True}, "every_s: Input should be a valid integer"),
        ({}, 'schedule: use {"cron": "...", "tz"?: "..."}, {"every_s": N} or {"at": "..."}'),
        ({"cron": "0 8 * * *", "every_s": 600}, "Extra inputs are not permitted"),
    ],
)
async def test_bad_schedules_are_refused(env: Env, spec: dict[str, Any], reason: str) -> None:
    result = await env.send("alpha", schedule(spec), rand="bad")
    assert result.status == "rejected" and reason in result.reason, result
    assert reason in env.reasons("alpha")[0]
    assert await env.store.tasks(with_gone=True) == []
    assert env.changed == [] and env.outbound("alpha") == []


async def test_at_in_the_past_refused_for_update_too(env: Env) -> None:
    task = agent_task("keep", "alpha")
    await env.store.add_task(task)
    payload = {"type": "update_task", "task_id": "keep", "schedule": {"at": "2001-01-01T00:00Z"}}
    assert (await env.send("alpha", payload)).reason.endswith("is in the past")
    assert await env.store.task("keep") == task


async def test_update_schedule_moves_next_run(env: Env) -> None:
    await env.store.add_task(agent_task("t", "alpha"))
    update = {"type": "update_task", "task_id": "t", "schedule": {"cron": "30 6 * * *"}}
    assert await env.send("alpha", update) == Handled("done")
    task = await env.store.task("t")
    assert task is not None and task.schedule == Schedule("cron", cron="30 6 * * *")
    assert (utc(task.next_run_ms).hour, utc(task.next_run_ms).minute) == (6, 30)
    assert task.prompt == "alpha's report"  # fields not named are kept


# the file name is the task id and the idempotency key


async def test_task_id_is_the_random_part_of_the_file_name(env: Env) -> None:
    name = "1700000000000-Daily_brief-2.json"
    (env.root / "ipc" / "alpha" / "outbound" / name).write_text(
        json.dumps(schedule({"every_s": 600}))
    )
    assert await env.handler.handle_file("alpha", name) == Handled("done")
    assert [t.id for t in await env.store.tasks()] == ["Daily_brief-2"]


async def test_same_file_name_twice_has_one_effect(env: Env) -> None:
    name = env.drop("alpha", schedule({"every_s": 600}), rand="once")
    assert await env.handler.handle_file("alpha", name) == Handled("done")
    first = await env.store.task("once")
    assert first is not None and env.outbound("alpha") == []
    # the agent (or a replay) writes the same name again, even with other content
    again = schedule({"every_s": 60}, prompt="other")
    (env.root / "ipc" / "alpha" / "outbound" / name).write_text(json.dumps(again))
    assert await env.handler.handle_file("alpha", name) == Handled("duplicate")
    assert await env.store.tasks() == [first]
    assert env.changed == ["alpha"]
    assert env.outbound("alpha") == [] and env.reasons("alpha") == []


async def test_a_crash_before_the_name_was_recorded_replays_cleanly(env: Env) -> None:
    # the task row was committed, the name was not: the replay must not fail or duplicate
    payload = schedule({"every_s": 600})
    name = env.drop("alpha", payload, rand="replayed")
    task = agent_task("replayed", "alpha")
    await env.store.add_task(
        replace(task, prompt="daily digest", schedule=Schedule("every", every_s=600))
    )
    assert await env.handler.handle_file("alpha", name) == Handled("done")
    assert len(await env.store.tasks()) == 1
    assert env.reasons("alpha") == []


@pytest.mark.parametrize("actor", ["alpha", "beta", "main"])
async def test_a_taken_task_id_is_refused(env: Env, actor: str) -> None:
    # another file whose random part names an existing task must neither take it over
    # nor be reported as scheduled when nothing was
    taken = agent_task("taken", "alpha")
    await env.store.add_task(taken)
    result = await env.send(actor, schedule({"every_s": 60}, prompt="takeover"), rand="taken")
    assert result == Handled("rejected", "task id taken is taken")
    assert await env.store.task("taken") == taken
    assert env.changed == []


async def test_a_claude_md_task_id_cannot_be_claimed(env: Env, md_task: Task) -> None:
    result = await env.send("beta", schedule({"every_s": 600}), rand=md_task.id)
    assert result.status == "rejected"
    assert await env.store.task(md_task.id) == md_task
    # nor squatted before the owner writes it: an agent id never looks like a CLAUDE.md id
    squat = await env.send("beta", schedule({"every_s": 600}), rand="md-0123456789ab")
    assert squat.status == "rejected"
    assert await env.store.task("md-0123456789ab") is None


async def test_tasks_json_is_republished_for_the_group_and_main(env: Env) -> None:
    scheduler = Scheduler(env.store, env.root / "ipc", UTC_ZONE, submit=lambda folder: None)
    handler = IpcHandler(
        env.store,
        env.root / "ipc",
        env.root / "groups",
        UTC_ZONE,
        on_tasks_changed=scheduler.changed,
    )
    name = env.drop("main", schedule({"every_s": 600}, group="alpha"), rand="for-alpha")
    assert await handler.handle_file("main", name) == Handled("done")
    await scheduler.publish()

    def published(folder: str) -> list[str]:
        path = env.root / "ipc" / folder / "tasks.json"
        return [t["id"] for t in json.loads(path.read_text())["tasks"]] if path.exists() else []

    assert published("alpha") == ["for-alpha"]
    assert published("main") == ["for-alpha"]
    assert published("beta") == []
    name = env.drop("alpha", {"type": "cancel_task", "task_id": "for-alpha"})
    assert await handler.handle_file("alpha", name) == Handled("done")
    await scheduler.publish()
    assert published("alpha") == published("main") == []


# write_file: only into the group's declared export targets


def write(path: str, content: str = "report\n", **extra: Any) -> dict[str, Any]:
    return {"type": "write_file", "target": "out", "path": path, "content": content, **extra}


async def test_write_file_lands_in_the_export_target(env: Env) -> None:
    assert await env.send("alpha", write("2024/03/report.md", "# March\n")) == Handled("done")
    assert (env.export / "2024" / "03" / "report.md").read_text() == "# March\n"
    data = bytes(range(256))
    payload = write("bin/blob", base64.b64encode(data).decode(), encoding="base64")
    assert await env.send("alpha", payload) == Handled("done")
    assert (env.export / "bin" / "blob").read_bytes() == data
    assert env.outbound("alpha") == [] and env.reasons("alpha") == []


async def test_write_file_replaces_atomically_and_leaves_no_temp_files(env: Env) -> None:
    await env.send("alpha", write("f.txt", "first version, longer than the second\n"))
    inode = (env.export / "f.txt").stat().st_ino
    for i in range(3):
        assert await env.send("alpha", write("f.txt", f"v{i}\n")) == Handled("done")
    assert (env.export / "f.txt").read_text() == "v2\n"
    assert (env.export / "f.txt").stat().st_ino != inode  # renamed over, never rewritten
    await env.send("alpha", write("../escape.txt"))
    assert sorted(p.name for p in env.export.rglob("*")) == ["f.txt"]


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (write("../escape.txt"), "contains '..'"),
        (write("a/../../escape.txt"), "contains '..'"),
        (write("/etc/cron.d/x"), "must be relative"),
        (write(str(Path("/tmp") / "escape.txt")), "must be relative"),
        (write("a//b"), "empty or '.' component"),
        (write("x.txt") | {"target": "nope"}, "no export target 'nope' (declared: out)"),
        (write("x.txt") | {"target": "../out"}, "target: String should match pattern"),
        (write("x.txt", "not base64!", encoding="base64"), "not valid base64"),
        (write("x.txt", encoding="latin-1"), "encoding: Input should be 'utf-8' or 'base64'"),
    ],
)
async def test_write_file_refused(env: Env, payload: dict[str, Any], reason: str) -> None:
    before = env.host_files()
    result = await env.send("alpha", payload)
    assert result.status == "rejected" and reason in result.reason, result
    assert reason in env.reasons("alpha")[0]
    assert env.host_files() == before
    assert list(env.export.iterdir()) == [] and not (env.root / "escape.txt").exists()


async def test_write_file_without_targets_is_refused(env: Env) -> None:
    assert await env.send("beta", write("x.txt")) == Handled(
        "rejected", "no export target 'out' (declared: none)"
    )
    assert list(env.export.iterdir()) == []


async def test_write_file_never_follows_a_planted_link_as_the_file(env: Env) -> None:
    (env.export / "notes.txt").symlink_to(env.outside / "secret.txt")
    (env.export / "new.txt").symlink_to(env.outside / "created.txt")  # dangling
    before = env.host_files()
    for path in ("notes.txt", "new.txt"):
        result = await env.send("alpha", write(path, "pwned"))
        assert result == Handled("rejected", f"{path} is a symbolic link; links are never followed")
    assert env.host_files() == before
    assert (env.outside / "secret.txt").read_text() == "host secret\n"
    assert not (env.outside / "created.txt").exists()
    assert len(env.reasons("alpha")) == 2


@pytest.mark.parametrize(
    ("link", "path"),
    [("sub", "sub/x.txt"), ("sub", "sub/deep/x.txt"), ("a/b", "a/b/x.txt")],
)
async def test_write_file_never_follows_a_planted_link_as_a_directory(
    env: Env, link: str, path: str
) -> None:
    (env.export / link).parent.mkdir(parents=True, exist_ok=True)
    (env.export / link).symlink_to(env.outside)
    before = env.host_files()
    result = await env.send("alpha", write(path, "pwned"))
    assert result == Handled("rejected", f"{link} is a symbolic link; links are never followed")
    assert env.host_files() == before
    assert sorted(os.listdir(env.outside)) == ["secret.txt"]


async def test_write_file_size_cap(env: Env) -> None:
    # An IPC file is at most ipcfs.FILE_CAP bytes, which caps what write_file can carry.
    payload = write("big.txt", "x" * ipcfs.FILE_CAP)
    result = await env.send("alpha", payload)
    assert result == Handled("rejected", f"larger than {ipcfs.FILE_CAP} bytes")
    assert list(env.export.iterdir()) == []
    assert await env.send("alpha", write("big.txt", "x" * (ipcfs.FILE_CAP - 200))) == Handled(
        "done"
    )
    assert (env.export / "big.txt").stat().st_size == ipcfs.FILE_CAP - 200


async def test_write_file_misconfigured_target_is_refused(env: Env) -> None:
    await env.store.save_group(
        Group(folder="beta", name="beta", chats=("tg:-2",), exports=("out=relative/dir",))
    )
    result = await env.send("beta", write("x.txt"))
    assert result.status == "rejected" and result.reason.startswith(
        "the group's export targets are misconfigured"
    )


# update_memory: below the marker of the group's own CLAUDE.md


def memo(content: str) -> dict[str, Any]:
    return {"type": "update_memory", "content": content}


async def test_update_memory_appends_below_the_marker(env: Env) -> None:
    owner = "# Alpha\n\nBe brief.\n"
    claude = env.group_dir("alpha") / "CLAUDE.md"
    claude.write_text(owner)
    for fact in ("likes tea", "meets on Mondays", "prefers German"):
        assert await env.send("alpha", memo(fact)) == Handled("done")
    text = claude.read_text()
    assert text.startswith(owner)
    assert text.count(MARKER) == 1
    above, below = text.split(MARKER)
    assert "likes" not in above
    assert below.index("likes tea") < below.index("meets on Mondays") < below.index("prefers")
    assert sorted(os.listdir(env.group_dir("alpha"))) == ["CLAUDE.md"]  # no temp files
    assert not (env.group_dir("beta") / "CLAUDE.md").exists()


async def test_update_memory_creates_the_file_and_marker_once(env: Env) -> None:
    for fact in ("one", f"two {MARKER} forged", "three"):
        assert await env.send("beta", memo(fact)) == Handled("done")
    text = (env.group_dir("beta") / "CLAUDE.md").read_text()
    assert text.startswith(f"\n{MARKER}\n") and text.count(MARKER) == 1
    assert text.index("one") < text.index("two") < text.index("three")


async def test_update_memory_through_a_planted_symlink_is_refused(env: Env) -> None:
    claude = env.group_dir("alpha") / "CLAUDE.md"
    claude.symlink_to(env.outside / "secret.txt")
    before = env.host_files()
    result = await env.send("alpha", memo("pwned"))
    assert result.status == "rejected" and result.reason.startswith(
        "CLAUDE.md cannot be opened safely"
    )
    assert "CLAUDE.md cannot be opened safely" in env.reasons("alpha")[0]
    assert env.host_files() == before
    assert claude.is_symlink() and (env.outside / "secret.txt").read_text() == "host secret\n"


async def test_update_memory_size_caps(env: Env) -> None:
    result = await env.send("alpha", memo("x" * (ENTRY_CAP + 1)))
    assert result == Handled(
        "rejected",
        "invalid 'update_memory' request: "
        f"content: String should have at most {ENTRY_CAP} characters",
    )
    assert not (env.group_dir("alpha") / "CLAUDE.md").exists()
    big = "z" * (FILE_CAP - 100)
    (env.group_dir("alpha") / "CLAUDE.md").write_text(big)
    result = await env.send("alpha", memo("w" * 500))
    assert result == Handled(
        "rejected", f"CLAUDE.md would exceed {FILE_CAP} bytes; the owner must prune it"
    )
    assert (env.group_dir("alpha") / "CLAUDE.md").read_text() == big


# send_file: a regular file of the group's own workspace, copied for the router


async def files_in_outbox(store: Store) -> list[tuple[str, str, str, str | None, str | None]]:
    rows = await store._all(
        "SELECT folder, chat_id, text, file_path, file_name FROM outbox ORDER BY id"
    )
    return [tuple(r) for r in rows]


async def test_send_file_queues_a_copy(env: Env) -> None:
    (env.group_dir("alpha") / "out").mkdir()
    (env.group_dir("alpha") / "out" / "chart.png").write_bytes(b"\x89PNG data")
    payload = {"type": "send_file", "path": "/workspace/out/chart.png", "caption": "the chart"}
    name = env.drop("alpha", payload)
    assert await env.handler.handle_file("alpha", name) == Handled("done")
    copy = env.root / "files" / "alpha" / name.removesuffix(".json")
    assert await files_in_outbox(env.store) == [
        ("alpha", "tg:-1", "the chart", str(copy), "chart.png")
    ]
    assert copy.read_bytes() == b"\x89PNG data"
    # the agent changing its file afterwards does not change what is sent
    (env.group_dir("alpha") / "out" / "chart.png").write_bytes(b"changed")
    assert copy.read_bytes() == b"\x89PNG data"


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("/etc/passwd", "send_file path must be under /workspace"),
        ("/workspace/../beta/secret.txt", "contains '..'"),
        ("../beta/secret.txt", "contains '..'"),
        ("/workspace/link.txt", "link.txt is a symbolic link; links are never followed"),
        ("/workspace/beta-dir/secret.txt", "beta-dir is a symbolic link"),
        ("/workspace/missing.txt", "missing.txt does not exist"),
    ],
)
async def test_send_file_refused(env: Env, path: str, reason: str) -> None:
    (env.group_dir("beta") / "secret.txt").write_text("beta's secret\n")
    (env.group_dir("alpha") / "link.txt").symlink_to(env.outside / "secret.txt")
    (env.group_dir("alpha") / "beta-dir").symlink_to(env.group_dir("beta"))
    result = await env.send("alpha", {"type": "send_file", "path": path})
    assert result.status == "rejected" and reason in result.reason, result
    assert reason in env.reasons("alpha")[0]
    assert await files_in_outbox(env.store) == []
    copies = env.root / "files" / "alpha"
    assert not copies.exists() or list(copies.iterdir()) == []


async def test_send_file_to_another_groups_chat_is_main_only(env: Env) -> None:
    (env.group_dir("alpha") / "a.txt").write_text("a")
    (env.group_dir("main") / "m.txt").write_text("m")
    result = await env.send("alpha", {"type": "send_file", "path": "a.txt", "chat": "tg:-2"})
    assert result == Handled("rejected", "only main may send to another group's chat")
    assert await env.send(
        "main", {"type": "send_file", "path": "m.txt", "chat": "tg:-2"}
    ) == Handled("done")
    [(folder, chat, _text, _path, file_name)] = await files_in_outbox(env.store)
    assert (folder, chat, file_name) == ("main", "tg:-2", "m.txt")
