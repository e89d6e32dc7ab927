"""The agent's task and file tools, and isolated runs: real files under tmp_path.

A `FakeHost` stands in for the daemon's side of /ipc: requests land in outbound/ through the
runner's own `write_json`, and a thread publishes /ipc/tasks.json the way the host does. The
isolated-context tests run the real Agent and its stdlib model client against the fake API.
"""

from __future__ import annotations

import base64
import json
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fake_anthropic import FakeAnthropic, text_reply, tool_reply

from nanoclaw.agent.__main__ import Agent
from nanoclaw.agent.conversation import History, history_for
from nanoclaw.agent.ipcfiles import write_json
from nanoclaw.agent.model import ModelClient
from nanoclaw.agent.protocol import CLOSE, RunConfig, follow_up
from nanoclaw.agent.tools import TOOL_SPECS, Toolbox

HOST_DELAY_S = 0.2
CEILING_S = 10.0  # a confirmation wait that would return at this is a failure, not a result
NOT_CONFIRMED = "the host has not confirmed it yet"
IPC_NAME = re.compile(r"^\d{13}-([0-9a-f]{12})\.json$")
NEW_TOOLS = {
    "schedule_task",
    "list_tasks",
    "update_task",
    "pause_task",
    "resume_task",
    "cancel_task",
    "send_file",
    "export_file",
}


def task(task_id: str, **fields: Any) -> dict[str, Any]:
    """A task as the host lists it in /ipc/tasks.json."""
    base: dict[str, Any] = {
        "id": task_id,
        "group": "work",
        "source": "agent",
        "prompt": "Say hello",
        "schedule": {"every_s": 3600},
        "context": "isolated",
        "script": None,
        "catch_up": "once",
        "status": "active",
        "next_run": "2026-11-23T08:00:00+05:30",
        "last_run": None,
    }
    return {**base, **fields}


class FakeHost:
    """The host's side of /ipc as the tools see it: takes requests, publishes tasks.json."""

    def __init__(self, ipc: Path) -> None:
        self.ipc = ipc
        (ipc / "outbound").mkdir(parents=True)
        self.requested = threading.Event()
        self.names: list[str] = []
        self.threads: list[threading.Thread] = []

    def send(self, payload: dict[str, Any]) -> str:
        """The runner's writer (as Agent.send), plus a signal for the fake host's thread."""
        name = write_json(self.ipc / "outbound", payload)
        self.names.append(name)
        self.requested.set()
        return name

    def take(self) -> list[dict[str, Any]]:
        """The requests written so far, in order; they are removed as the host does."""
        out = []
        for name in self.names:
            path = self.ipc / "outbound" / name
            out.append(json.loads(path.read_text(encoding="utf-8")))
            path.unlink()
        assert sorted(p.name for p in (self.ipc / "outbound").iterdir()) == []
        self.names.clear()
        return out

    def publish(
        self, tasks: list[dict[str, Any]], errors: list[dict[str, Any]] | None = None
    ) -> None:
        data = {"updated": "2026-11-22T10:00:00+00:00", "tasks": tasks, "errors": errors or []}
        tmp = self.ipc / ".tasks.json.tmp"
        tmp.write_text(json.dumps(data), encoding="utf-8")
        os.replace(tmp, self.ipc / "tasks.json")

    def publish_after_request(self, tasks_for: Callable[[str], list[dict[str, Any]]]) -> None:
        """Once a request arrives, wait HOST_DELAY_S and publish tasks_for(request's task id)."""

        def run() -> None:
            if self.requested.wait(CEILING_S):
                time.sleep(HOST_DELAY_S)  # the delay under test: the tool must poll through it
                self.publish(tasks_for(random_part(self.names[-1])))

        thread = threading.Thread(target=run)
        thread.start()
        self.threads.append(thread)

    def join(self) -> None:
        for thread in self.threads:
            thread.join(CEILING_S)


def random_part(name: str) -> str:
    m = IPC_NAME.match(name)
    assert m, name
    return m.group(1)


@pytest.fixture
def host(tmp_path: Path) -> FakeHost:
    return FakeHost(tmp_path / "ipc")


@pytest.fixture
def box(tmp_path: Path, host: FakeHost) -> Toolbox:
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    return Toolbox(workspace, host.send, bash_timeout_s=30, ipc=host.ipc, confirm_s=0.05)


@pytest.fixture
def patient(box: Toolbox, host: FakeHost) -> Iterator[Toolbox]:
    """The toolbox with a confirmation window far longer than the fake host's delay."""
    box.confirm_s = CEILING_S
    yield box
    host.join()


def test_specs_list_every_new_tool_with_a_handler(box: Toolbox) -> None:
    names = [spec["name"] for spec in TOOL_SPECS]
    assert set(names) >= NEW_TOOLS
    assert len(names) == len(set(names))
    for name in NEW_TOOLS:
        assert callable(getattr(box, f"tool_{name}"))


# schedule_task: payloads


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            {"prompt": "Morning news", "schedule": {"cron": "0 8 * * 1-5", "tz": "Asia/Kolkata"}},
            {"prompt": "Morning news", "schedule": {"cron": "0 8 * * 1-5", "tz": "Asia/Kolkata"}},
        ),
        (
            {"prompt": "Ping", "schedule": {"every_s": 60}, "context": "group"},
            {"prompt": "Ping", "schedule": {"every_s": 60}, "context": "group"},
        ),
        (
            {
                "prompt": "Remind me",
                "schedule": {"at": "2026-11-23T08:00:00+05:30"},
                "context": "isolated",
                "script": "test -s alerts.json && echo '{\"wake\": true}'",
                "group": "family",
            },
            {
                "prompt": "Remind me",
                "schedule": {"at": "2026-11-23T08:00:00+05:30"},
                "context": "isolated",
                "script": "test -s alerts.json && echo '{\"wake\": true}'",
                "group": "family",
            },
        ),
        (  # empty optionals are left out, a schedule sent as JSON text is read as an object
            {
                "prompt": "Hi",
                "schedule": '{"cron": "*/15 * * * *"}',
                "script": "",
                "group": "",
                "context": None,
            },
            {"prompt": "Hi", "schedule": {"cron": "*/15 * * * *"}},
        ),
        (
            {"prompt": "Z", "schedule": {"at": "2026-11-23T08:00:00Z"}},
            {"prompt": "Z", "schedule": {"at": "2026-11-23T08:00:00Z"}},
        ),
    ],
)
def test_schedule_task_writes_the_request(
    box: Toolbox, host: FakeHost, args: dict[str, Any], expected: dict[str, Any]
) -> None:
    out = box.run("schedule_task", args)
    [name] = host.names
    task_id = random_part(name)
    assert out == (
        f"requested task {task_id}; {NOT_CONFIRMED} (a bad schedule is refused: check list_tasks)"
    )
    assert host.take() == [{"type": "schedule_task", **expected}]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"prompt": "x", "schedule": {}}, "exactly one of cron, every_s or at"),
        ({"prompt": "x", "schedule": {"cron": "* * * * *", "every_s": 60}}, "exactly one"),
        ({"prompt": "x", "schedule": {"every_s": 59}}, "at least 60"),
        ({"prompt": "x", "schedule": {"every_s": 60.0}}, "whole number"),
        ({"prompt": "x", "schedule": {"every_s": "3600"}}, "whole number"),
        ({"prompt": "x", "schedule": {"every_s": True}}, "whole number"),
        ({"prompt": "x", "schedule": {"cron": "0 8 * *"}}, "cron needs 5 fields"),
        ({"prompt": "x", "schedule": {"cron": "0 0 8 * * *"}}, "cron needs 5 fields"),
        ({"prompt": "x", "schedule": {"cron": 5}}, "cron needs 5 fields"),
        ({"prompt": "x", "schedule": {"cron": "0 8 * * *", "tz": ""}}, "tz must be"),
        ({"prompt": "x", "schedule": {"every_s": 60, "tz": "UTC"}}, "tz goes with cron only"),
        ({"prompt": "x", "schedule": {"cron": "0 8 * * *", "when": 1}}, "unexpected schedule"),
        ({"prompt": "x", "schedule": {"at": "2026-11-23T08:00:00"}}, "UTC offset"),
        ({"prompt": "x", "schedule": {"at": "tomorrow"}}, "UTC offset"),
        ({"prompt": "x", "schedule": "every hour"}, "schedule must be an object"),
        ({"prompt": "x", "schedule": [60]}, "schedule must be an object"),
        ({"prompt": "  ", "schedule": {"every_s": 60}}, "prompt must be a non-empty"),
        ({"prompt": 7, "schedule": {"every_s": 60}}, "prompt must be a non-empty"),
        ({"prompt": "x", "schedule": {"every_s": 60}, "context": "shared"}, "group or isolated"),
        ({"prompt": "x", "schedule": {"every_s": 60}, "script": ["ls"]}, "script must be"),
        ({"prompt": "x", "schedule": {"every_s": 60}, "group": 3}, "group must be"),
        ({"prompt": "x"}, "bad input for schedule_task"),
        ({"prompt": "x", "schedule": {"every_s": 60}, "when": "now"}, "bad input"),
    ],
)
def test_schedule_task_refuses_bad_input_and_writes_nothing(
    box: Toolbox, host: FakeHost, args: dict[str, Any], message: str
) -> None:
    out = box.run("schedule_task", args)
    assert out.startswith("error: ")
    assert message in out
    assert host.take() == []


# update, pause, resume, cancel: payloads


def test_update_task_sends_only_the_changed_fields(box: Toolbox, host: FakeHost) -> None:
    out = box.run("update_task", {"task_id": " a1b2c3d4e5f6 ", "prompt": "New words"})
    assert out.startswith(f"requested an update of task a1b2c3d4e5f6; {NOT_CONFIRMED}")
    box.run("update_task", {"task_id": "t1", "schedule": {"cron": "0 9 * * *"}, "script": "ls"})
    box.run("update_task", {"task_id": "t2", "context": "group", "schedule": '{"every_s": 120}'})
    assert host.take() == [
        {"type": "update_task", "task_id": "a1b2c3d4e5f6", "prompt": "New words"},
        {"type": "update_task", "task_id": "t1", "schedule": {"cron": "0 9 * * *"}, "script": "ls"},
        {"type": "update_task", "task_id": "t2", "schedule": {"every_s": 120}, "context": "group"},
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"task_id": "t1"}, "nothing to change"),
        ({"task_id": "", "prompt": "x"}, "task_id is empty"),
        ({"task_id": "  ", "prompt": "x"}, "task_id is empty"),
        ({"task_id": 12, "prompt": "x"}, "task_id is empty"),
        ({"task_id": "t1", "prompt": ""}, "prompt must be a non-empty"),
        ({"task_id": "t1", "schedule": {"every_s": 10}}, "at least 60"),
        ({"task_id": "t1", "schedule": {"cron": "daily"}}, "cron needs 5 fields"),
        ({"task_id": "t1", "context": "everywhere"}, "group or isolated"),
        ({"task_id": "t1", "script": ""}, "script must be a non-empty string"),
        ({"task_id": "t1", "group": "other"}, "bad input for update_task"),
    ],
)
def test_update_task_refuses_bad_input(
    box: Toolbox, host: FakeHost, args: dict[str, Any], message: str
) -> None:
    out = box.run("update_task", args)
    assert out.startswith("error: ") and message in out
    assert host.take() == []


@pytest.mark.parametrize("kind", ["pause_task", "resume_task", "cancel_task"])
def test_status_requests(box: Toolbox, host: FakeHost, kind: str) -> None:
    out = box.run(kind, {"task_id": "a1b2c3d4e5f6"})
    verb = kind.removesuffix("_task")
    assert out == (
        f"requested to {verb} task a1b2c3d4e5f6; {NOT_CONFIRMED} "
        "(an unknown id or another group's task is refused: check list_tasks)"
    )
    assert host.take() == [{"type": kind, "task_id": "a1b2c3d4e5f6"}]
    for bad in ("", "   ", None):
        assert box.run(kind, {"task_id": bad}) == "error: task_id is empty"
    assert box.run(kind, {}).startswith(f"error: bad input for {kind}")
    assert host.take() == []


# confirmation through /ipc/tasks.json


def test_schedule_confirmed_when_the_host_lists_the_task(patient: Toolbox, host: FakeHost) -> None:
    host.publish([task("000000000000")])
    host.publish_after_request(
        lambda tid: [task("000000000000"), task(tid, next_run="2026-11-23T08:00:00+05:30")]
    )
    out = patient.run("schedule_task", {"prompt": "Say hello", "schedule": {"every_s": 3600}})
    [name] = host.names
    task_id = random_part(name)
    assert out == f"scheduled task {task_id}: next run 2026-11-23T08:00:00+05:30"


def test_schedule_confirmed_task_without_next_run(patient: Toolbox, host: FakeHost) -> None:
    host.publish_after_request(lambda tid: [task(tid, status="done", next_run=None)])
    out = patient.run("schedule_task", {"prompt": "p", "schedule": {"at": "2020-01-01T00:00Z"}})
    assert out == f"scheduled task {random_part(host.names[0])}: status done, no next run"


def test_schedule_not_confirmed_when_the_host_stays_silent(box: Toolbox, host: FakeHost) -> None:
    host.publish([task("000000000000")])  # a task list that never gains the new task
    box.confirm_s = 0.3
    started = time.monotonic()
    out = box.run("schedule_task", {"prompt": "p", "schedule": {"every_s": 60}})
    assert time.monotonic() - started >= 0.3
    assert out == (
        f"requested task {random_part(host.names[0])}; {NOT_CONFIRMED} "
        "(a bad schedule is refused: check list_tasks)"
    )


def test_schedule_not_confirmed_through_an_invalid_tasks_file(box: Toolbox, host: FakeHost) -> None:
    (host.ipc / "tasks.json").write_text("{not json")
    out = box.run("schedule_task", {"prompt": "p", "schedule": {"every_s": 60}})
    assert NOT_CONFIRMED in out


def test_pause_and_resume_confirmed_by_status(patient: Toolbox, host: FakeHost) -> None:
    host.publish([task("t1")])
    host.publish_after_request(lambda _: [task("t1", status="paused", next_run=None)])
    assert patient.run("pause_task", {"task_id": "t1"}) == "paused task t1"
    host.join()
    host.requested.clear()
    host.publish_after_request(lambda _: [task("t1", next_run="2026-12-01T00:00:00+00:00")])
    assert patient.run("resume_task", {"task_id": "t1"}) == (
        "resumed task t1: next run 2026-12-01T00:00:00+00:00"
    )
    assert host.take() == [
        {"type": "pause_task", "task_id": "t1"},
        {"type": "resume_task", "task_id": "t1"},
    ]


@pytest.mark.parametrize(
    "after",
    [
        [],  # the host dropped it
        [task("t1", status="cancelled", next_run=None)],
    ],
)
def test_cancel_confirmed_by_removal_or_status(
    patient: Toolbox, host: FakeHost, after: list[dict[str, Any]]
) -> None:
    host.publish([task("t1")])
    host.publish_after_request(lambda _: after)
    assert patient.run("cancel_task", {"task_id": "t1"}) == "cancelled task t1"


def test_cancel_of_an_unlisted_id_is_not_confirmed_by_its_absence(
    box: Toolbox, host: FakeHost
) -> None:
    host.publish([task("t1")])
    out = box.run("cancel_task", {"task_id": "typo"})
    assert out.startswith(f"requested to cancel task typo; {NOT_CONFIRMED}")


def test_update_confirmed_once_the_change_shows(patient: Toolbox, host: FakeHost) -> None:
    host.publish([task("t1")])
    host.publish_after_request(
        lambda _: [
            task(
                "t1",
                prompt="New words",
                schedule={"cron": "0  9 * * *", "tz": "Europe/Berlin"},
                next_run="2026-11-23T09:00:00+01:00",
            )
        ]
    )
    out = patient.run(
        "update_task", {"task_id": "t1", "prompt": "New words", "schedule": {"cron": "0 9 * * *"}}
    )
    assert out == "updated task t1: next run 2026-11-23T09:00:00+01:00"


def test_update_not_confirmed_while_the_task_is_unchanged(box: Toolbox, host: FakeHost) -> None:
    host.publish([task("t1", schedule={"at": "2026-11-23T08:00:00+05:30"})])
    out = box.run("update_task", {"task_id": "t1", "schedule": {"at": "2026-11-23T09:00:00Z"}})
    assert out.startswith(f"requested an update of task t1; {NOT_CONFIRMED}")
    # the same instant written another way is the same schedule
    out = box.run("update_task", {"task_id": "t1", "schedule": {"at": "2026-11-23T02:30:00Z"}})
    assert out == "updated task t1: next run 2026-11-23T08:00:00+05:30"


# list_tasks


def test_list_tasks_without_a_file(box: Toolbox) -> None:
    assert box.run("list_tasks", {}) == "no tasks"


def test_list_tasks_renders_the_host_list(box: Toolbox, host: FakeHost) -> None:
    host.publish(
        [
            task(
                "a1b2c3d4e5f6",
                prompt="\nSummarise the feeds in /workspace/feeds.txt.\nKeep it short.",
                schedule={"cron": "0 8 * * 1-5", "tz": "Asia/Kolkata"},
            ),
            task(
                "work-cron-12",
                source="claude_md",
                prompt="Check /workspace/alerts.json",
                schedule={"cron": "*/15 * * * *"},
                context="group",
                script="test -s alerts.json",
                status="paused",
                next_run=None,
                last_run="2026-11-22T09:45:00+00:00",
            ),
            task("0f0f0f0f0f0f", prompt="x" * 100, schedule={"every_s": 5400}),
            task("1e1e1e1e1e1e", schedule={"every_s": 7200}),
            task("2d2d2d2d2d2d", schedule={"every_s": 61}),
            task("3c3c3c3c3c3c", schedule={"at": "2026-12-01T09:00:00+01:00"}, status="done"),
        ],
        [{"group": "work", "line": 12, "message": "bad cron '61 * * * *'"}],
    )
    assert box.run("list_tasks", {}) == "\n".join(
        [
            "6 task(s) (as of 2026-11-22T10:00:00+00:00):",
            "- a1b2c3d4e5f6 [active] cron '0 8 * * 1-5' Asia/Kolkata; "
            "next 2026-11-23T08:00:00+05:30 — Summarise the feeds in /workspace/feeds.txt.…",
            "- work-cron-12 [paused, from CLAUDE.md, group context, script gate] "
            "cron '*/15 * * * *'; next -, last 2026-11-22T09:45:00+00:00 "
            "— Check /workspace/alerts.json",
            f"- 0f0f0f0f0f0f [active] every 90min; next 2026-11-23T08:00:00+05:30 — {'x' * 80}…",
            "- 1e1e1e1e1e1e [active] every 2h; next 2026-11-23T08:00:00+05:30 — Say hello",
            "- 2d2d2d2d2d2d [active] every 61s; next 2026-11-23T08:00:00+05:30 — Say hello",
            "- 3c3c3c3c3c3c [done] once at 2026-12-01T09:00:00+01:00; "
            "next 2026-11-23T08:00:00+05:30 — Say hello",
            "problems in the Scheduled Tasks of CLAUDE.md:",
            "- work CLAUDE.md line 12: bad cron '61 * * * *'",
        ]
    )


def test_list_tasks_names_groups_when_several(box: Toolbox, host: FakeHost) -> None:
    host.publish([task("t1"), task("t2", group="family", schedule={"every_s": 86400})])
    lines = box.run("list_tasks", {}).splitlines()
    assert lines[1].startswith("- t1 [active, group work] every 1h;")
    assert lines[2].startswith("- t2 [active, group family] every 1d;")


def test_list_tasks_with_only_errors(box: Toolbox, host: FakeHost) -> None:
    host.publish([], [{"group": "work", "line": 3, "message": "no prompt"}])
    assert box.run("list_tasks", {}) == (
        "no tasks\nproblems in the Scheduled Tasks of CLAUDE.md:\n"
        "- work CLAUDE.md line 3: no prompt"
    )


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", '{"tasks": {}}', "\xff\xfe"])
def test_list_tasks_with_an_unusable_file(box: Toolbox, host: FakeHost, text: str) -> None:
    (host.ipc / "tasks.json").write_bytes(text.encode("latin-1"))
    out = box.run("list_tasks", {})
    assert out.startswith("error: /ipc/tasks.json is unreadable (")
    assert out.endswith("); tell the owner")


# send_file and export_file


@pytest.mark.parametrize(
    "given", ["out/chart.png", "./out/../out/chart.png", "/workspace/out/chart.png"]
)
def test_send_file(box: Toolbox, host: FakeHost, given: str) -> None:
    (box.workspace / "out").mkdir()
    (box.workspace / "out" / "chart.png").write_bytes(b"\x89PNG")
    assert box.run("send_file", {"path": given}) == "sending /workspace/out/chart.png to the chat"
    box.run("send_file", {"path": str(box.workspace / "out/chart.png"), "caption": "Sales"})
    assert host.take() == [
        {"type": "send_file", "path": "/workspace/out/chart.png"},
        {"type": "send_file", "path": "/workspace/out/chart.png", "caption": "Sales"},
    ]


def test_send_file_refuses_paths_outside_or_missing(
    box: Toolbox, host: FakeHost, tmp_path: Path
) -> None:
    (tmp_path / "secret.txt").write_text("no")
    (box.workspace / "link.txt").symlink_to(tmp_path / "secret.txt")
    (box.workspace / "dir").mkdir()
    cases = {
        "../secret.txt": "error: send_file takes a file under /workspace",
        "/etc/passwd": "error: send_file takes a file under /workspace",
        "/workspace/../etc/passwd": "error: send_file takes a file under /workspace",
        "": "error: send_file takes a file under /workspace",
        "link.txt": "error: /workspace/link.txt leads outside /workspace",
        "missing.txt": "error: no file /workspace/missing.txt",
        "dir": "error: no file /workspace/dir",
    }
    for path, expected in cases.items():
        assert box.run("send_file", {"path": path}) == expected, path
    assert host.take() == []


def test_export_file(box: Toolbox, host: FakeHost) -> None:
    out = box.run("export_file", {"target": "notes", "path": "2026/today.md", "content": "héllo"})
    assert out == (
        "asked the host to write 6 bytes to 2026/today.md in export target 'notes' "
        "(done only if it is one of this group's export targets)"
    )
    raw = base64.b64encode(b"\x00\x01\x02").decode()
    out = box.run(
        "export_file",
        {"target": "site", "path": "./img/../a.bin", "content": raw, "encoding": "base64"},
    )
    assert out.startswith("asked the host to write 3 bytes to a.bin")
    box.run("export_file", {"target": "t", "path": "a", "content": "", "encoding": "utf-8"})
    assert host.take() == [
        {"type": "write_file", "target": "notes", "path": "2026/today.md", "content": "héllo"},
        {
            "type": "write_file",
            "target": "site",
            "path": "a.bin",
            "content": raw,
            "encoding": "base64",
        },
        {"type": "write_file", "target": "t", "path": "a", "content": "", "encoding": "utf-8"},
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"target": "", "path": "a", "content": "x"}, "target must be"),
        ({"target": "t", "path": "/etc/passwd", "content": "x"}, "path must be relative"),
        ({"target": "t", "path": "../up", "content": "x"}, "path must be relative"),
        ({"target": "t", "path": "a/../../up", "content": "x"}, "path must be relative"),
        ({"target": "t", "path": ".", "content": "x"}, "path must be relative"),
        ({"target": "t", "path": "a", "content": 5}, "content must be a string"),
        ({"target": "t", "path": "a", "content": "x", "encoding": "latin-1"}, "utf-8 or base64"),
        ({"target": "t", "path": "a", "content": "not base64!", "encoding": "base64"}, "base64"),
        ({"target": "t", "path": "a"}, "bad input for export_file"),
    ],
)
def test_export_file_refuses_bad_input(
    box: Toolbox, host: FakeHost, args: dict[str, Any], message: str
) -> None:
    out = box.run("export_file", args)
    assert out.startswith("error: ") and message in out
    assert host.take() == []


# isolated runs: the real Agent against the fake Messages API


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


def assistant(text: str) -> dict[str, Any]:
    return {"role": "assistant", "content": [{"type": "text", "text": text}]}


def test_history_for_decides_by_context(tmp_path: Path) -> None:
    kept = tmp_path / ".nanoclaw" / "conversation.json"
    assert history_for(RunConfig("m"), tmp_path).path == kept
    assert history_for(RunConfig("m", context="group"), tmp_path).path == kept
    assert history_for(RunConfig("m", context="isolated"), tmp_path).path is None


def test_history_without_a_path_lives_in_memory(tmp_path: Path) -> None:
    history = History(None, 100_000)
    assert history.load() == []
    history.save([user("q"), assistant("a")])
    loaded = history.load()
    assert loaded == [user("q"), assistant("a")]
    loaded.append(user("not saved"))
    assert history.load() == [user("q"), assistant("a")]
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def agent_root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "workspace" / ".nanoclaw").mkdir(parents=True)
    (root / "ipc" / "outbound").mkdir(parents=True)
    (root / "ipc" / "input").mkdir()
    History(root / "workspace" / ".nanoclaw" / "conversation.json", 100_000).save(
        [user("old question"), assistant("old answer")]
    )
    return root


def make_agent(root: Path, fake: FakeAnthropic, **cfg: Any) -> Agent:
    client = ModelClient(fake.base_url, max_retries=0)
    return Agent(RunConfig("claude-test", **cfg), root, client)


def test_isolated_run_neither_loads_nor_saves_the_group_history(
    agent_root: Path, fake: FakeAnthropic
) -> None:
    kept = agent_root / "workspace" / ".nanoclaw" / "conversation.json"
    before = kept.read_bytes()
    agent = make_agent(agent_root, fake, context="isolated")
    assert agent.turn("first") == "echo: first"
    assert agent.turn("second") == "echo: second"
    assert kept.read_bytes() == before
    assert sorted(p.name for p in kept.parent.iterdir()) == ["conversation.json"]
    first, second = (r.body["messages"] for r in fake.requests)
    assert "old question" not in json.dumps([first, second])
    assert [m["role"] for m in first] == ["user"]
    # follow-ups within the same run still see the run's own earlier turns
    assert [m["role"] for m in second] == ["user", "assistant", "user"]
    reply = assistant("echo: first")
    reply["content"][0]["cache_control"] = {"type": "ephemeral"}  # the request's breakpoint
    assert second[1] == reply


def test_group_run_continues_and_keeps_the_history(agent_root: Path, fake: FakeAnthropic) -> None:
    kept = agent_root / "workspace" / ".nanoclaw" / "conversation.json"
    agent = make_agent(agent_root, fake)
    assert agent.turn("next") == "echo: next"
    [request] = fake.requests
    sent = request.body["messages"][:2]
    sent[1]["content"][0].pop("cache_control")  # the request's cache breakpoint, not history
    assert sent == [user("old question"), assistant("old answer")]
    saved = json.loads(kept.read_text())
    assert saved[:2] == [user("old question"), assistant("old answer")]
    assert saved[-1] == assistant("echo: next")


def test_agent_calls_schedule_task_and_writes_the_request(
    agent_root: Path, fake: FakeAnthropic
) -> None:
    agent = make_agent(agent_root, fake, confirm_s=0.05)
    call = {"prompt": "Water the plants", "schedule": {"cron": "0 7 * * *", "tz": "Europe/Paris"}}
    answer = agent.turn(f"[[tool schedule_task {json.dumps(call)}]]")
    [request] = sorted((agent_root / "ipc" / "outbound").iterdir())
    assert json.loads(request.read_text()) == {"type": "schedule_task", **call}
    assert answer == (
        f"RESULT: requested task {random_part(request.name)}; {NOT_CONFIRMED} "
        "(a bad schedule is refused: check list_tasks)"
    )


def test_a_follow_up_reaches_the_agent_between_tool_steps(
    agent_root: Path, fake: FakeAnthropic, capsys: pytest.CaptureFixture[str]
) -> None:
    """A message (and the host's close) arriving while the agent runs its tools goes into
    its next model call; the turn then reports that follow-up done, and the agent exits."""
    staged = agent_root / "staged"
    staged.mkdir()
    name = write_json(staged, follow_up("<message>also bring milk</message>"))
    (staged / CLOSE).touch()
    # the follow-up lands in input/ only while the first tool runs
    fake.script(
        tool_reply("bash", {"command": "mv ../staged/* ../ipc/input/"}),
        text_reply("bread and milk"),
    )
    agent = make_agent(agent_root, fake)
    agent.serve("buy bread", idle_timeout=60)  # returns at once: close came mid-turn
    assert len(fake.requests) == 2  # answered within the same turn
    results, arrived = fake.requests[1].body["messages"][-1]["content"]
    assert results["type"] == "tool_result"
    assert arrived["type"] == "text" and "also bring milk" in arrived["text"]
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(e["event"], e.get("phase") or e.get("input")) for e in events] == [
        ("progress", "start"),  # each tool call reported as it starts and as it ends
        ("progress", "end"),
        ("turn_done", name),
    ]
    assert events[1]["what"] == "mv ../staged/* ../ipc/input/" and events[1]["exit"] == 0
    assert list((agent_root / "ipc" / "input").iterdir()) == []
    [sent] = [json.loads(p.read_text()) for p in (agent_root / "ipc" / "outbound").iterdir()]
    assert sent["text"] == "bread and milk"
