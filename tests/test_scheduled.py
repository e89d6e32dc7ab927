"""Scheduled tasks end to end: CLAUDE.md followed live, agent tasks over IPC, runs in the sandbox.

The daemon core runs in-process with the real watcher, scheduler, bwrap and the fake model;
tasks are made due a second or two ahead with `at`, so nothing waits for a cron minute.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from conftest import Running, wait_for
from fake_anthropic import FakeAnthropic

from nanoclaw.schedule.tasks import TaskRun

SECTION = """# Team

Owner notes.

## Scheduled Tasks
{body}
## Other notes
Not a task.
"""


def claude_md(running: Running, folder: str, body: str) -> None:
    path = running.settings.layout.groups / folder / "CLAUDE.md"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(SECTION.format(body=body))
    tmp.rename(path)  # like an editor's save


def drop(running: Running, folder: str, request: dict[str, Any]) -> str:
    """Write an IPC request as the agent would; returns the file name's random part."""
    outbound = running.settings.layout.ipc / folder / "outbound"
    rand = secrets.token_hex(4)
    name = f"{int(time.time() * 1000)}-{rand}.json"
    (outbound / f".{name}.tmp").write_text(json.dumps(request))
    os.rename(outbound / f".{name}.tmp", outbound / name)
    return rand


def soon(seconds: float = 1.5) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat()


async def finished_runs(running: Running, task_id: str) -> list[TaskRun]:
    runs = await running.store.task_runs(task_id)
    return [r for r in runs if r.status not in ("pending", "running")]


def tasks_json(running: Running, folder: str) -> dict[str, Any]:
    path = running.settings.layout.ipc / folder / "tasks.json"
    data: dict[str, Any] = json.loads(path.read_text())
    return data


async def test_claude_md_tasks_follow_the_file_while_the_daemon_runs(running: Running) -> None:
    store = running.store
    claude_md(
        running,
        "main",
        "# Cron: 0 8 * * 1-5\n# TZ: Asia/Kolkata\nMorning news.\n\n"
        "# Cron: */15 * * * *\nCheck alerts.\n",
    )

    async def prompts() -> list[str]:
        return sorted(t.prompt for t in await store.tasks("main"))

    await wait_for(lambda: prompts_are(prompts, ["Check alerts.", "Morning news."]))
    first = {t.prompt: t for t in await store.tasks("main")}
    assert first["Morning news."].schedule.tz == "Asia/Kolkata"
    assert first["Morning news."].context == "group"

    # Edit one prompt, drop the other, add a broken line next to a good one.
    claude_md(
        running,
        "main",
        "# Cron: 0 8 * * 1-5\n# TZ: Asia/Kolkata\nMorning news, short.\n\n"
        "# Cron: 61 * * * *\nNever valid.\n\n"
        "# Cron: 0 18 * * *\n# TZ: Mars/Olympus\nNo such zone.\n\n"
        "# Cron: 0 9 * * *\nStand-up.\n",
    )
    await wait_for(lambda: prompts_are(prompts, ["Morning news, short.", "Stand-up."]))
    problems = await store.problems("main")
    assert [line for _, line, _ in problems] == [10, 14]  # the cron line, the TZ line
    assert "61 * * * *" in problems[0][2] and "Mars/Olympus" in problems[1][2]
    gone = {t.id: t.status for t in await store.tasks("main", with_gone=True)}
    assert gone[first["Check alerts."].id] == "removed"
    assert gone[first["Morning news."].id] == "removed"  # the prompt is part of its identity

    # The agent sees its tasks and the file's problems in /ipc/tasks.json.
    await wait_for(lambda: len(tasks_json(running, "main")["errors"]) == 2)
    listed = sorted(t["prompt"] for t in tasks_json(running, "main")["tasks"])
    assert listed == ["Morning news, short.", "Stand-up."]

    # Removing the section removes its tasks; memory below the marker is not a task.
    path = running.settings.layout.groups / "main" / "CLAUDE.md"
    path.write_text("# Team\n\n<!-- agent memory -->\n## Scheduled Tasks\n# Cron: * * * * *\nx\n")
    await wait_for(lambda: prompts_are(prompts, []))
    assert await store.problems("main") == []


async def prompts_are(prompts: Any, wanted: list[str]) -> bool:
    return bool(await prompts() == wanted)


async def test_agent_task_runs_once_in_the_sandbox_and_says_it_is_scheduled(
    running: Running, fake: FakeAnthropic
) -> None:
    task_id = drop(
        running,
        "main",
        {
            "type": "schedule_task",
            "prompt": "Brief me. [[say: briefing ready]]",
            "schedule": {"at": soon()},
        },
    )
    out = await running.reply_containing("briefing ready")
    assert out.count("briefing ready") == 1
    await wait_for(lambda: finished_runs(running, task_id))
    [run] = await finished_runs(running, task_id)
    assert run.status == "ok" and run.run_id is not None
    assert (await running.store.task(task_id)).status == "done"  # type: ignore[union-attr]
    [request] = fake.requests
    prompt = request.body["messages"][-1]["content"]
    assert f'<scheduled_task id="{task_id}"' in prompt and "This is a scheduled run" in prompt
    assert len(request.body["messages"]) == 1  # isolated: a fresh conversation
    assert request.api_key is not None


async def test_internal_only_answer_sends_nothing(running: Running, fake: FakeAnthropic) -> None:
    task_id = drop(
        running,
        "main",
        {
            "type": "schedule_task",
            "schedule": {"at": soon()},
            "prompt": "Alerts? [[say: <internal>no P1 alerts, staying quiet</internal>]]",
        },
    )
    await wait_for(lambda: finished_runs(running, task_id), 60)
    [run] = await finished_runs(running, task_id)
    assert run.status == "silent"
    assert len(fake.requests) == 1
    assert "staying quiet" not in running.output and running.output.strip() == ""
    assert await running.store.pending_outbox("term:main") == 0


async def test_gate_that_says_no_wakes_nothing(running: Running, fake: FakeAnthropic) -> None:
    task_id = drop(
        running,
        "main",
        {
            "type": "schedule_task",
            "prompt": "[[say: woken]]",
            "schedule": {"at": soon()},
            "script": "echo checking; echo '{\"wake\": false}'",
        },
    )
    await wait_for(lambda: finished_runs(running, task_id), 60)
    [run] = await finished_runs(running, task_id)
    assert run.status == "skipped" and "gate" in (run.result or "")
    assert fake.requests == [] and "woken" not in running.output


async def test_gate_that_says_yes_passes_its_data(running: Running, fake: FakeAnthropic) -> None:
    script = (
        "n=$(ls /workspace | wc -l); id -u > /dev/stderr; "
        'echo "{\\"wake\\": true, \\"data\\": {\\"files\\": $n, \\"who\\": \\"gate-7\\"}}"'
    )
    (running.settings.layout.groups / "main" / "a.txt").write_text("x")
    task_id = drop(
        running,
        "main",
        {
            "type": "schedule_task",
            "prompt": "[[say: woken by gate]]",
            "schedule": {"at": soon()},
            "script": script,
        },
    )
    await running.reply_containing("woken by gate")
    await wait_for(lambda: finished_runs(running, task_id), 60)
    [request] = fake.requests
    prompt = request.body["messages"][-1]["content"]
    assert "<gate_data>" in prompt and "gate-7" in prompt
    files = len(list((running.settings.layout.groups / "main").iterdir()))
    assert f"&quot;files&quot;: {files}" in prompt or f'"files": {files}' in prompt


async def test_group_context_task_continues_the_conversation(
    running: Running, fake: FakeAnthropic
) -> None:
    await running.say("remember the word pelican [[say: noted]]")
    await running.reply_containing("noted")  # the agent stays live; the task closes it
    task_id = drop(
        running,
        "main",
        {
            "type": "schedule_task",
            "prompt": "[[say: scheduled follow-up]]",
            "schedule": {"at": soon()},
            "context": "group",
        },
    )
    await running.reply_containing("scheduled follow-up")
    await wait_for(lambda: finished_runs(running, task_id), 60)
    contents = json.dumps(fake.requests[-1].body["messages"])
    assert "pelican" in contents  # the group's conversation came along


async def test_non_main_group_cannot_touch_mains_task(running: Running) -> None:
    await running.add_group("team", "tg:-100", requires_trigger=True)
    await wait_for(lambda: (running.settings.layout.ipc / "team" / "outbound").is_dir())
    task_id = drop(
        running,
        "main",
        {
            "type": "schedule_task",
            "prompt": "main's",
            "schedule": {"every_s": 3600},
        },
    )
    await wait_for(lambda: running.store.task(task_id))
    drop(running, "team", {"type": "cancel_task", "task_id": task_id})
    errors = running.settings.layout.ipc / "team" / "errors"
    await wait_for(lambda: any(p.suffix == ".txt" or "error" in p.name for p in errors.iterdir()))
    task = await running.store.task(task_id)
    assert task is not None and task.status == "active"
    # ...and main's tasks never show in the other group's tasks.json
    await wait_for(lambda: (running.settings.layout.ipc / "team" / "tasks.json").exists())
    assert tasks_json(running, "team")["tasks"] == []


async def test_send_file_reaches_the_chat(running: Running) -> None:
    await running.say(
        "[[bash: printf 'col\\n1\\n' > /workspace/report.csv]] "
        '[[tool send_file {"path": "/workspace/report.csv", "caption": "the report"}]]'
    )
    out = await running.reply_containing("report.csv")
    received = running.settings.layout.received / "report.csv"
    assert f"saved at {received}" in out and "the report" in out
    assert received.read_text() == "col\n1\n"
    await wait_for(lambda: not list(running.settings.layout.files.rglob("*.csv")), 10)


async def test_send_file_outside_the_workspace_is_refused(running: Running) -> None:
    secret = running.settings.layout.home / "host-secret.txt"
    secret.write_text("do not leak")
    await running.say(
        f"[[bash: ln -s {secret} /workspace/leak.txt]] "
        '[[tool send_file {"path": "/workspace/leak.txt"}]]'
    )
    out = await running.reply_containing("RESULT:", 60)
    assert "error" in out.split("RESULT:", 1)[1]  # the runner's tool refused it
    assert not running.settings.layout.received.exists()
    assert "do not leak" not in out
