"""What the host and the agent in its sandbox both know, written once: the names in /ipc, the
events on the agent's stdout, the request types, the shared limits and the run's config.

Standard library only: the sandbox imports it as `agent.protocol`, the host as
`nanoclaw.agent.protocol`.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import asdict, dataclass, fields
from types import NoneType, UnionType
from typing import Any, Literal, TypeGuard, get_args, get_origin, get_type_hints

# /ipc inside the sandbox, store/ipc/<folder>/ on the host.
OUTBOUND = "outbound"  # agent -> host requests
INPUT = "input"  # host -> agent follow-ups and CLOSE
ERRORS = "errors"  # the host's set-aside files: never visible inside
TASKS_FILE = "tasks.json"  # the group's tasks, kept current by the host
CLOSE = "_close"  # an empty file in input/: finish the turn and exit
PAUSE = "_pause"  # an empty file in input/ while the owner paused the run (/pause, /resume)
LLM_SOCK = "llm.sock"  # the model proxy
EGRESS_SOCK = "egress.sock"  # the egress proxy (allowlist policy)
NUDGE_SOCK = "nudge.sock"  # a datagram here: a new file waits in outbound/ (a hint only)
INITIAL_INPUT = "initial"  # the input name a run's first prompt is reported done under

# "<unix-ms>-<random>.json": the name is the idempotency key, and a task scheduled by a
# request is named after the request's random part. ASCII digits only (\d would take any
# script's) and \Z, not $ (which allows a final "\n").
NAME_RE = re.compile(r"^[0-9]{13}-(?P<id>[A-Za-z0-9_-]{1,64})\.json\Z")


def ipc_name(now_s: float | None = None) -> str:
    """A fresh file name for /ipc/outbound or /ipc/input."""
    ms = int((time.time() if now_s is None else now_s) * 1000)
    return f"{ms}-{os.urandom(6).hex()}.json"  # secrets.token_hex, without hmac's import


def task_id_of(name: str) -> str:
    """The id of the task a schedule_task file creates: "<ms>-<random>.json" -> "<random>"."""
    match = NAME_RE.match(name)
    if match is None:
        raise ValueError(f"not an IPC file name: {name[:100]!r}")
    return match["id"]


# Progress, one JSON object per line on the agent's stdout: {"event": ..., fields}.
# ready: startup_ms; turn_done: input (INITIAL_INPUT or a follow-up's name); error: error;
# progress: one per tool call as it starts (phase "start": tool, what) and as it ends (phase
# "end": tool, what, exit (the command's code, None for other tools), ms); paused: on (bool),
# when the agent begins and ends waiting at a PAUSE marker.
Event = Literal["ready", "turn_done", "error", "progress", "paused"]
Phase = Literal["start", "end"]


def is_event(value: object) -> TypeGuard[Event]:
    return value in get_args(Event)


def event_line(kind: Event, **fields: object) -> str:
    return json.dumps({"event": kind, **fields})


def parse_event(line: bytes | str) -> tuple[Event, dict[str, Any]] | None:
    """An event line from the agent's stdout, or None for anything else (it is untrusted)."""
    try:
        data = json.loads(line)
    except (ValueError, RecursionError):
        return None
    if not isinstance(data, dict):
        return None
    kind = data.get("event")
    return (kind, data) if is_event(kind) else None


# Requests, agent -> host: a JSON object in /ipc/outbound whose "type" is one of these.
SendMessageType = Literal["send_message"]
SendFileType = Literal["send_file"]
UpdateMemoryType = Literal["update_memory"]
WriteFileType = Literal["write_file"]
RegisterGroupType = Literal["register_group"]
ScheduleTaskType = Literal["schedule_task"]
UpdateTaskType = Literal["update_task"]
TaskActionType = Literal["pause_task", "resume_task", "cancel_task"]
RequestType = Literal[
    SendMessageType,
    SendFileType,
    UpdateMemoryType,
    WriteFileType,
    RegisterGroupType,
    ScheduleTaskType,
    UpdateTaskType,
    TaskActionType,
]
FollowUpType = Literal["messages"]  # host -> agent, in /ipc/input
Encoding = Literal["utf-8", "base64"]  # of a write_file request's content


def request(kind: RequestType, **fields: Any) -> dict[str, Any]:
    return {"type": kind, **fields}


def follow_up(prompt: str) -> dict[str, str]:
    type_: FollowUpType = "messages"
    return {"type": type_, "prompt": prompt}


def follow_up_prompt(data: object) -> str | None:
    """The prompt of a follow-up file's content, or None when it is not one."""
    if isinstance(data, dict) and data.get("type") in get_args(FollowUpType):
        return str(data.get("prompt", ""))
    return None


# Tasks: the schedule's limits, and the shape of TASKS_FILE.
Context = Literal["group", "isolated"]  # a run in the group's conversation, or a fresh one
MIN_EVERY_S = 60
# Who wrote a task: the owner (CLAUDE.md), the agent, or the agent during a run whose prompt
# held messages from senders who may not instruct it ("untrusted").
Origin = Literal["owner", "agent", "untrusted"]
# A task entry's key holding {"written_by": ..., "prompt": ..., "script": ...} in place of
# its top-level prompt and script, when the reading agent must treat them as data.
QUOTED = "quoted"


@dataclass(frozen=True)
class RunConfig:
    """The run's settings, sent by the host as one JSON object on the agent's stdin."""

    model: str
    prompt: str = ""
    assistant_name: str = "Andy"
    tz: str = "UTC"
    is_main: bool = False
    context: Context = "group"
    idle_timeout_s: float = 600.0  # 0: exit after the first turn
    egress_port: int | None = None  # the allowlist policy's relay port on loopback
    max_retries: int = 3
    max_tokens: int = 4096
    bash_timeout_s: float = 300.0
    confirm_s: float = 3.0  # how long a task tool waits for the host's tasks.json
    history_budget_chars: int = 120_000

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> RunConfig:
        """The config, or ValueError naming the first field that is missing, unknown or of
        the wrong type."""
        try:
            data = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise ValueError(f"run config is not JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise ValueError("run config is not a JSON object")
        hints = get_type_hints(cls)
        unknown = sorted(set(data) - set(hints))
        if unknown:
            raise ValueError(f"run config: unknown field(s) {', '.join(map(repr, unknown))}")
        values: dict[str, Any] = {}
        for f in fields(cls):
            if f.name not in data:
                continue  # a missing required field makes the constructor fail, below
            value = data[f.name]
            if not _fits(value, hints[f.name]):
                raise ValueError(f"run config: {f.name} = {value!r:.80} is not {hints[f.name]}")
            values[f.name] = float(value) if hints[f.name] is float else value
        try:
            return cls(**values)
        except TypeError as exc:
            raise ValueError(f"run config: {exc}") from exc


def _fits(value: object, hint: Any) -> bool:
    """Whether a JSON value is of the field's type (int for float is fine, bool for int not)."""
    origin = get_origin(hint)
    if origin is Literal:
        return value in get_args(hint)
    if origin is UnionType:
        return any(_fits(value, arg) for arg in get_args(hint))
    if hint is NoneType:
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    return isinstance(value, hint)
