"""The protocol shared by host and sandbox: the run's config, names, events and request types,
each checked from both sides (the host's writers and parsers against the agent's)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any, get_args

import pytest
from pydantic import BaseModel

from nanoclaw.agent.ipcfiles import Inbox
from nanoclaw.agent.protocol import (
    NAME_RE,
    RequestType,
    RunConfig,
    follow_up,
    follow_up_prompt,
    ipc_name,
    parse_event,
    task_id_of,
)
from nanoclaw.errors import IpcRejected
from nanoclaw.ipc import files as ipcfs
from nanoclaw.ipc import requests

FULL = RunConfig(
    model="claude-x",
    prompt="hello",
    assistant_name="Bob",
    tz="Europe/Berlin",
    is_main=True,
    context="isolated",
    idle_timeout_s=0.0,
    egress_port=3128,
    max_retries=1,
    max_tokens=100,
    bash_timeout_s=5.0,
    confirm_s=0.5,
    history_budget_chars=10,
)


def test_run_config_round_trips_and_takes_whole_seconds() -> None:
    assert RunConfig.from_json(FULL.to_json()) == FULL
    assert RunConfig.from_json(RunConfig("m").to_json()) == RunConfig("m")
    cfg = RunConfig.from_json('{"model": "m", "idle_timeout_s": 30, "egress_port": null}')
    assert cfg.idle_timeout_s == 30.0 and isinstance(cfg.idle_timeout_s, float)
    assert cfg.egress_port is None and cfg.context == "group"


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"folder": "work"}, "unknown field(s) 'folder'"),  # what the host sent and none read
        ({"scheduled": True, "bogus": 1}, "unknown field(s) 'bogus', 'scheduled'"),
        ({"idle_timeout_s": "600"}, "idle_timeout_s = '600'"),
        ({"is_main": 1}, "is_main = 1"),
        ({"max_retries": True}, "max_retries = True"),
        ({"max_tokens": 4.5}, "max_tokens = 4.5"),
        ({"context": "shared"}, "context = 'shared'"),
        ({"egress_port": "3128"}, "egress_port = '3128'"),
        ({"model": None}, "model = None"),
    ],
)
def test_run_config_refuses_what_the_agent_would_misread(change: dict[str, Any], says: str) -> None:
    data = {**json.loads(FULL.to_json()), **change}
    with pytest.raises(ValueError, match="run config") as err:
        RunConfig.from_json(json.dumps(data))
    assert says in str(err.value)


@pytest.mark.parametrize(
    ("text", "says"),
    [("", "not JSON"), ("[1]", "not a JSON object"), ('{"prompt": "p"}', "model")],
)
def test_run_config_refuses_a_malformed_document(text: str, says: str) -> None:
    with pytest.raises(ValueError, match="run config") as err:
        RunConfig.from_json(text)
    assert says in str(err.value)


def test_agent_refuses_a_config_it_does_not_know(tmp_path: Path) -> None:
    """The real runner: one error event on stdout naming the field, exit 2, nothing else."""
    proc = subprocess.run(
        [sys.executable, "-m", "nanoclaw.agent"],
        input='{"model": "m", "folder": "work"}',
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    events = [parse_event(line) for line in proc.stdout.splitlines()]
    assert proc.returncode == 2, proc.stderr
    assert len(events) == 1 and events[0] is not None
    kind, fields = events[0]
    assert kind == "error" and "'folder'" in fields["error"]


def test_one_name_algorithm_on_both_sides() -> None:
    names = {ipc_name() for _ in range(50)}
    assert len(names) == 50 and all(NAME_RE.match(n) for n in names)
    assert all(n.startswith(f"{task_id_of(n)}", 14) for n in names)
    assert ipc_name(1_700_000_000.5).startswith("1700000000500-")
    assert task_id_of("1700000000000-abc-def_1.json") == "abc-def_1"


@pytest.mark.parametrize(
    "name",
    [
        "1700000000000-abc.json\n",  # $ would have let the newline through
        "170000000000-abc.json",  # 12 digits
        "١٧٠٠٠٠٠٠٠٠٠٠٠-abc.json",  # digits of another script
        "1700000000000-.json",
        "1700000000000-a/b.json",
        "1700000000000-" + "a" * 65 + ".json",
        "_close",
    ],
)
def test_task_id_of_refuses_what_is_not_an_ipc_name(name: str) -> None:
    assert not NAME_RE.match(name)
    with pytest.raises(ValueError, match="not an IPC file name"):
        task_id_of(name)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b'{"event": "ready", "startup_ms": 5}', ("ready", {"event": "ready", "startup_ms": 5})),
        ('{"event": "turn_done", "input": "initial"}', "turn_done"),
        (b'{"event": "error", "error": "x"}', "error"),
        (b'{"event": "exit"}', None),
        (b'{"event": ["ready"]}', None),
        (b'["ready"]', None),
        (b"not json", None),
        (b"[" * 100_000 + b"]" * 100_000, None),  # nested past the parser's recursion limit
        (b"\xff\xfe", None),
    ],
)
def test_parse_event_takes_only_known_events(line: bytes | str, expected: object) -> None:
    event = parse_event(line)
    if expected is None or isinstance(expected, tuple):
        assert event == expected
    else:
        assert event is not None and event[0] == expected


def test_host_request_models_cover_exactly_the_protocol_types() -> None:
    models: list[type[BaseModel]] = [
        requests.SendMessage,
        requests.SendFile,
        requests.UpdateMemory,
        requests.WriteFile,
        requests.RegisterGroup,
        requests.ScheduleTask,
        requests.UpdateTask,
        requests.TaskAction,
    ]
    host = [name for m in models for name in get_args(m.model_fields["type"].annotation)]
    assert sorted(host) == sorted(get_args(RequestType))
    for name in get_args(RequestType):  # each is a known type, refused only for its fields
        with pytest.raises(IpcRejected, match=f"invalid '{name}' request"):
            requests.parse({"type": name})
    with pytest.raises(IpcRejected, match="'messages' is not supported"):
        requests.parse(follow_up("not an outbound request"))


def test_host_input_reaches_the_agent_inbox(tmp_path: Path) -> None:
    """The host's writers and the agent's reader agree on input/ names and shapes."""
    ipcfs.ensure_dirs(tmp_path, "g")
    name = ipc_name()
    ipcfs.write_input(tmp_path, "g", name, follow_up("second question"))
    inbox = Inbox(tmp_path / "g" / "input")
    assert inbox.take() == ([(name, "second question")], False)
    ipcfs.signal_close(tmp_path, "g")
    assert inbox.take() == ([], True)
    assert follow_up_prompt({"type": "send_message", "prompt": "x"}) is None
    assert follow_up_prompt(["messages"]) is None
