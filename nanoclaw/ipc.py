"""IPC requests from agents (SPEC section 6): validated, authorised by directory, acted on once.

`authorise` is pure and holds every rule; `IpcHandler.handle_file` is the step the watcher
and the orchestrator call. A file name is recorded with its effect in one commit.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Annotated, Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from nanoclaw import ipcfs, memory
from nanoclaw.agent.conversation import strip_internal
from nanoclaw.errors import IpcRejected
from nanoclaw.models import CHAT_RE, FOLDER_RE, MAIN, Group
from nanoclaw.store import Store

log = logging.getLogger(__name__)
LATER_TYPES = (
    "send_file", "write_file", "schedule_task", "update_task", "pause_task", "resume_task",
    "cancel_task",
)  # fmt: skip


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class SendMessage(_Request):
    type: Literal["send_message"]
    text: str = Field(min_length=1, max_length=100_000)
    chat: str | None = Field(None, pattern=CHAT_RE.pattern)


class UpdateMemory(_Request):
    type: Literal["update_memory"]
    content: str = Field(min_length=1, max_length=memory.ENTRY_CAP)


class RegisterGroup(_Request):
    type: Literal["register_group"]
    chat: str = Field(pattern=CHAT_RE.pattern)
    folder: str = Field(pattern=FOLDER_RE.pattern)
    trigger: str | None = Field(None, min_length=1, max_length=64)
    requires_trigger: bool | None = None


class NotYet(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)
    type: Literal[LATER_TYPES]  # type: ignore[valid-type]


Request = Annotated[
    SendMessage | UpdateMemory | RegisterGroup | NotYet, Field(discriminator="type")
]
REQUEST: TypeAdapter[Request] = TypeAdapter(Request)


def parse(data: object) -> Request:
    if not isinstance(data, dict) or not isinstance(data.get("type"), str):
        raise IpcRejected('not a JSON object with a string "type"')
    try:
        return REQUEST.validate_python(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "request"
        raise IpcRejected(f"invalid {data['type']!r} request: {where}: {err['msg']}") from exc


def authorise(req: Request, folder: str, chat_owner: str | None) -> str | None:
    """None when `folder` may do this; otherwise the reason. `chat_owner` owns req's chat."""
    is_main = folder == MAIN
    if isinstance(req, SendMessage):
        if req.chat is None or chat_owner == folder:
            return None
        if chat_owner is None:
            return f"chat {req.chat} is not registered"
        return None if is_main else "only main may send to another group's chat"
    if isinstance(req, UpdateMemory):
        return None
    if isinstance(req, RegisterGroup):
        if not is_main:
            return "register_group is allowed for main only"
        return "folder 'global' is reserved" if req.folder == "global" else None
    return f"{req.type} is not supported by this version"


class IpcHandler:
    """Acts on outbound files of any group; one lock per group keeps a name from racing."""

    def __init__(
        self,
        store: Store,
        ipc_root: Path,
        groups_root: Path,
        zone: ZoneInfo,
        current_run: Callable[[str], int | None] = lambda folder: None,
        on_reply: Callable[[], None] = lambda: None,
        on_groups_changed: Callable[[], None] = lambda: None,
    ) -> None:
        self._store = store
        self._ipc_root = ipc_root
        self._groups_root = groups_root
        self._zone = zone
        self._current_run = current_run
        self._on_reply = on_reply
        self._on_groups_changed = on_groups_changed
        self._locks: dict[str, asyncio.Lock] = {}

    async def drain(self, folder: str) -> int:
        """Handle every file waiting in the group's outbound dir, oldest first."""
        handled = 0
        for name in ipcfs.list_names(self._ipc_root, folder):
            if await self.handle_file(folder, name) != "gone":
                handled += 1
        return handled

    async def handle_file(self, folder: str, name: str) -> str:
        """The step: 'done', 'duplicate', 'rejected: ...' or 'gone'."""
        lock = self._locks.setdefault(folder, asyncio.Lock())
        async with lock:
            try:
                return await self._handle(folder, name)
            except IpcRejected as exc:
                reason = str(exc)
            except Exception as exc:  # a bug must not stop the watcher or lose the file
                log.exception("ipc group=%s file=%s failed", folder, name)
                reason = f"internal error: {exc.__class__.__name__}: {exc}"
            log.warning("ipc group=%s file=%s set aside: %s", folder, name, reason)
            try:
                ipcfs.set_aside(self._ipc_root, folder, name, reason)
                if ipcfs.NAME_RE.match(name):
                    await self._store.record_ipc(folder, name, f"rejected: {reason}"[:500])
            except OSError as exc:
                log.error("ipc group=%s file=%s cannot be set aside: %s", folder, name, exc)
            return f"rejected: {reason}"

    async def _handle(self, folder: str, name: str) -> str:
        if ipcfs.NAME_RE.match(name) and await self._store.ipc_done(folder, name):
            ipcfs.remove(self._ipc_root, folder, name)
            return "duplicate"
        try:
            data = ipcfs.read_request(self._ipc_root, folder, name)
        except FileNotFoundError:
            return "gone"
        req = parse(data)
        owner = (
            await self._store.folder_of_chat(req.chat)
            if isinstance(req, SendMessage | RegisterGroup) and req.chat
            else None
        )
        refusal = authorise(req, folder, owner)
        if refusal:
            raise IpcRejected(refusal)
        await self._act(folder, name, req)
        ipcfs.remove(self._ipc_root, folder, name)
        return "done"

    async def _act(self, folder: str, name: str, req: Request) -> None:
        if isinstance(req, SendMessage):
            text = strip_internal(req.text)
            chat = req.chat or await self._store.default_chat(folder)
            if text and chat is None:
                raise IpcRejected("the group has no chat to reply in")
            reply = (chat, text, self._current_run(folder)) if text and chat else None
            if await self._store.record_ipc(folder, name, "sent" if reply else "silent", reply):
                log.info("ipc group=%s file=%s reply queued for %s", folder, name, chat)
                self._on_reply()
        elif isinstance(req, UpdateMemory):
            now = datetime.now(self._zone)
            await asyncio.to_thread(
                memory.append_memory, self._groups_root / folder, req.content, now
            )
            await self._store.record_ipc(folder, name, "memory updated")
        elif isinstance(req, RegisterGroup):
            await self.register(req)
            await self._store.record_ipc(folder, name, f"registered {req.folder}")
            self._on_groups_changed()

    async def register(self, req: RegisterGroup) -> Group:
        group = await self._store.group(req.folder) or Group(folder=req.folder, name=req.folder)
        group = replace(
            group,
            chats=tuple(dict.fromkeys([*group.chats, req.chat])),
            trigger=req.trigger or group.trigger,
            requires_trigger=group.requires_trigger
            if req.requires_trigger is None
            else req.requires_trigger,
        )
        await self._store.save_group(group)
        await asyncio.to_thread((self._groups_root / req.folder).mkdir, parents=True, exist_ok=True)
        return group
