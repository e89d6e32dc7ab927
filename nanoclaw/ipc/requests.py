"""What an agent may ask of the host (SPEC section 6): the request types and who may do what.

pydantic models validate a file's content (strict, no extra fields); `authorise` is pure and
holds every rule, decided from the directory a file came from, never from its content.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    TypeAdapter,
    ValidationError,
)

from nanoclaw import memory
from nanoclaw.agent.protocol import (
    MIN_EVERY_S,
    Context,
    Encoding,
    RegisterGroupType,
    ScheduleTaskType,
    SendFileType,
    SendMessageType,
    TaskActionType,
    UpdateMemoryType,
    UpdateTaskType,
    WriteFileType,
)
from nanoclaw.errors import IpcRejected
from nanoclaw.models import CHAT_RE, FOLDER_RE, MAIN
from nanoclaw.schedule.claudemd import PROMPT_CAP, valid_cron, valid_zone
from nanoclaw.schedule.tasks import CatchUp, Schedule

TASK_ID = r"^[A-Za-z0-9_-]{1,64}$"
SCRIPT_CAP = 16_000
PATH_CAP = 1024


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class SendMessage(_Request):
    type: SendMessageType
    text: str = Field(min_length=1, max_length=100_000)
    chat: str | None = Field(None, pattern=CHAT_RE.pattern)


class SendFile(_Request):
    type: SendFileType
    path: str = Field(min_length=1, max_length=PATH_CAP)
    caption: str | None = Field(None, max_length=4_000)
    chat: str | None = Field(None, pattern=CHAT_RE.pattern)


class UpdateMemory(_Request):
    type: UpdateMemoryType
    content: str = Field(min_length=1, max_length=memory.ENTRY_CAP)


class WriteFile(_Request):
    type: WriteFileType
    target: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$")
    path: str = Field(min_length=1, max_length=PATH_CAP)
    content: str
    encoding: Encoding = "utf-8"


class RegisterGroup(_Request):
    type: RegisterGroupType
    chat: str = Field(pattern=CHAT_RE.pattern)
    folder: str = Field(pattern=FOLDER_RE.pattern)
    trigger: str | None = Field(None, min_length=1, max_length=64)
    requires_trigger: bool | None = None


class Cron(_Request):
    cron: str = Field(max_length=200)
    tz: str | None = Field(None, max_length=64)


class Every(_Request):
    every_s: int = Field(ge=MIN_EVERY_S, le=366 * 86_400)


class At(_Request):
    at: str = Field(max_length=64)


def _schedule_kind(value: Any) -> str | None:
    """Which schedule form a value is, by its key, so an error names that form's field."""
    if isinstance(value, dict):
        return next((key for key in ("cron", "every_s", "at") if key in value), None)
    if isinstance(value, Cron):
        return "cron"
    if isinstance(value, Every):
        return "every_s"
    return "at" if isinstance(value, At) else None


ScheduleSpec = Annotated[
    Annotated[Cron, Tag("cron")] | Annotated[Every, Tag("every_s")] | Annotated[At, Tag("at")],
    Discriminator(
        _schedule_kind,
        custom_error_type="schedule_form",
        custom_error_message='use {"cron": "...", "tz"?: "..."}, {"every_s": N} or {"at": "..."}',
    ),
]
Prompt = Annotated[str, Field(min_length=1, max_length=PROMPT_CAP)]
Script = Annotated[str, Field(min_length=1, max_length=SCRIPT_CAP)]
TaskId = Annotated[str, Field(pattern=TASK_ID)]


class ScheduleTask(_Request):
    type: ScheduleTaskType
    prompt: Prompt
    schedule: ScheduleSpec
    context: Context = "isolated"
    script: Script | None = None
    catch_up: CatchUp = "once"
    group: str | None = Field(None, pattern=FOLDER_RE.pattern)


class UpdateTask(_Request):
    type: UpdateTaskType
    task_id: TaskId
    prompt: Prompt | None = None
    schedule: ScheduleSpec | None = None
    context: Context | None = None
    script: Script | None = None
    catch_up: CatchUp | None = None


class TaskAction(_Request):
    type: TaskActionType
    task_id: TaskId


TaskRequest = ScheduleTask | UpdateTask | TaskAction
Request = Annotated[
    SendMessage | SendFile | UpdateMemory | WriteFile | RegisterGroup | TaskRequest,
    Field(discriminator="type"),
]
REQUEST: TypeAdapter[Request] = TypeAdapter(Request)


def parse(data: object) -> Request:
    if not isinstance(data, dict) or not isinstance(data.get("type"), str):
        raise IpcRejected('not a JSON object with a string "type"')
    try:
        return REQUEST.validate_python(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        if err["type"] == "union_tag_invalid":
            raise IpcRejected(f"request type {data['type']!r} is not supported") from exc
        # the loc holds union tags ("schedule_task.schedule.every_s.every_s"): drop repeats
        loc = [str(p) for p in err["loc"]]
        parts = [p for i, p in enumerate(loc) if p != (loc[i - 1] if i else data["type"])]
        where = _printable(".".join(parts)) or "request"
        raise IpcRejected(f"invalid {data['type']!r} request: {where}: {err['msg']}") from exc


def _printable(text: str, cap: int = 120) -> str:
    """The agent's own key names in a reason: one line, escaped, clipped (no forged log lines)."""
    return text.encode("unicode_escape").decode("ascii")[:cap]


def to_schedule(spec: Cron | Every | At, now_ms: int) -> Schedule:
    """The checked schedule; IpcRejected names what is wrong with it."""
    if isinstance(spec, Cron):
        if not valid_cron(spec.cron):
            raise IpcRejected(f"not a 5-field cron expression: {spec.cron!r}")
        if spec.tz is not None and not valid_zone(spec.tz):
            raise IpcRejected(f"unknown timezone {spec.tz!r}")
        return Schedule("cron", cron=spec.cron, tz=spec.tz)
    if isinstance(spec, Every):
        return Schedule("every", every_s=spec.every_s)
    try:
        at = datetime.fromisoformat(spec.at)
    except ValueError as exc:
        raise IpcRejected(f"at: not an ISO-8601 time: {spec.at!r}") from exc
    if at.tzinfo is None:
        raise IpcRejected("at: the time needs an offset, like 2026-11-23T08:00:00+05:30")
    try:
        in_range = at.astimezone(UTC).year < 9999
    except OverflowError:
        in_range = False
    if not in_range:
        raise IpcRejected(f"at: {spec.at} is out of range")
    at_ms = int(at.timestamp() * 1000)
    if at_ms < now_ms - 60_000:
        raise IpcRejected(f"at: {spec.at} is in the past")
    return Schedule("at", at_ms=at_ms)


def _chat_rule(chat: str | None, folder: str, owner: str | None) -> str | None:
    if chat is None or owner == folder:
        return None
    if owner is None:
        return f"chat {chat} is not registered"
    return None if folder == MAIN else "only main may send to another group's chat"


def authorise(req: Request, folder: str, owner: str | None) -> str | None:
    """None when `folder` may do this; otherwise the reason.

    `owner` is the group that owns what the request names: the chat of a message or file,
    the group a task is scheduled for, the task an action changes (None: no such thing).
    """
    is_main = folder == MAIN
    if isinstance(req, SendMessage | SendFile):
        return _chat_rule(req.chat, folder, owner)
    if isinstance(req, UpdateMemory | WriteFile):
        return None
    if isinstance(req, RegisterGroup):
        if not is_main:
            return "register_group is allowed for main only"
        return "folder 'global' is reserved" if req.folder == "global" else None
    if isinstance(req, ScheduleTask):
        if req.group is None or req.group == folder:
            return None
        if not is_main:
            return "only main may schedule a task for another group"
        return None if owner is not None else f"no group {req.group}"
    if owner is None:
        return f"no task {req.task_id}"
    if owner != folder and not is_main:
        return "only main may change another group's task"
    return None
