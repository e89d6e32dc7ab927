"""The IPC handler (SPEC section 6): each outbound file validated, authorised, acted on once.

`drain` is the step the watcher and the orchestrator call (within the group's quota, see
`quota`), `handle_file` the step for one file; request types and authorisation rules live
in `requests`. A file name is recorded with its effect in one commit.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo

from nanoclaw import memory
from nanoclaw.agent.conversation import strip_internal
from nanoclaw.agent.protocol import NAME_RE, task_id_of
from nanoclaw.errors import IpcRejected
from nanoclaw.ipc import exports, staging
from nanoclaw.ipc import files as ipcfs
from nanoclaw.ipc.quota import DEFAULT_LIMITS, FileLimits, FileQuota
from nanoclaw.ipc.requests import (
    RegisterGroup,
    Request,
    ScheduleTask,
    SendFile,
    SendMessage,
    TaskAction,
    TaskRequest,
    UpdateMemory,
    UpdateTask,
    WriteFile,
    authorise,
    parse,
    to_schedule,
)
from nanoclaw.models import Group, Reply, chat_problem
from nanoclaw.schedule.tasks import AGENT, CLAUDE_MD, Task, apply_action, first_run
from nanoclaw.store.db import now_ms
from nanoclaw.store.messages import Store

log = logging.getLogger(__name__)
CLAUDE_MD_ID_PREFIX = "md-"  # tasks.claude_md_id: an agent must not squat a future one


def _request_part(task: Task) -> tuple[object, ...]:
    """What a schedule_task file decides about its task (not times or state)."""
    return (
        task.folder,
        task.source,
        task.prompt,
        task.schedule,
        task.context,
        task.script,
        task.catch_up,
    )


# done: acted on; duplicate: acted on before (only removed); rejected: set aside in errors/;
# gone: removed by someone else between listing and reading.
FileStatus = Literal["done", "duplicate", "rejected", "gone"]


@dataclass(frozen=True)
class Handled:
    """What `handle_file` did with one file, and for a rejected one why."""

    status: FileStatus
    reason: str = ""

    def __str__(self) -> str:
        """As recorded for the file's name: "done", or "rejected: <why>"."""
        return f"{self.status}: {self.reason}" if self.reason else self.status


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
        on_tasks_changed: Callable[[str], None] = lambda folder: None,
        files_root: Path | None = None,
        staged_cap: int = staging.STAGED_CAP,
        limits: FileLimits = DEFAULT_LIMITS,
    ) -> None:
        self._store = store
        self._ipc_root = ipc_root
        self._groups_root = groups_root
        self._zone = zone
        self._current_run = current_run
        self._on_reply = on_reply
        self._on_groups_changed = on_groups_changed
        self._on_tasks_changed = on_tasks_changed
        self._files_root = files_root or ipc_root.parent / "files"
        self._staged_cap = staged_cap  # bytes of one group's files waiting for the router
        self._locks: dict[str, asyncio.Lock] = {}
        self._quota = FileQuota(limits)  # what one group's files may cost per window

    async def drain(self, folder: str) -> int:
        """Handle every file waiting in the group's outbound dir, oldest first, up to the
        group's quota; the files past it are set aside unread."""
        names = await asyncio.to_thread(ipcfs.list_names, self._ipc_root, folder)
        handled = 0
        for i, name in enumerate(names):
            if not self._quota.left(folder):
                await self._over_quota(folder, names[i:])
                break
            if (await self.handle_file(folder, name)).status != "gone":
                self._quota.spend(folder)
                handled += 1
        if self._quota.prune_due(folder):
            limits = self._quota.limits
            try:
                gone = await asyncio.to_thread(
                    ipcfs.prune_errors, self._ipc_root, folder, limits, time.time()
                )
            except OSError as exc:
                log.warning("ipc group=%s errors/ cannot be pruned: %s", folder, exc)
            else:
                if gone:
                    log.info("ipc group=%s errors/: %d old entries removed", folder, gone)
        return handled

    async def _over_quota(self, folder: str, names: list[str]) -> None:
        """Past the cap: set the files aside without reading them (a flood costs a rename
        per file), and tell the group once per run, in its chat, that replies may be missing.

        The chat, not the agent: a looping or hostile agent would ignore (or feed on) a
        notice, and each one sent to it would cost a model turn. The log says it once per
        window.
        """
        limits = self._quota.limits
        cap = f"{limits.files} files per {limits.window_s:g} s"
        lock = self._locks.setdefault(folder, asyncio.Lock())
        async with lock:  # not while a handle_file of this group holds one of these names
            try:
                moved = await asyncio.to_thread(
                    ipcfs.set_aside_all, self._ipc_root, folder, names, f"over the cap of {cap}"
                )
            except OSError as exc:
                log.error("ipc group=%s files over the cap cannot be set aside: %s", folder, exc)
                return
        if not moved:
            return  # all handled meanwhile by a concurrent drain
        self._quota.set_aside(folder, moved)
        run = self._current_run(folder)
        if self._quota.first_excess(folder):
            log.warning(
                "ipc group=%s run=%s over its cap of %s: %d files set aside unread",
                folder,
                run,
                cap,
                moved,
            )
        if self._quota.first_for_run(folder, run):
            chat = await self._store.default_chat(folder)
            if chat is not None:
                text = f"(I wrote more than {cap}; the rest were set aside unread.)"
                await self._store.enqueue_reply(folder, chat, text)
                self._on_reply()

    async def handle_file(self, folder: str, name: str) -> Handled:
        """The step: one file acted on once, or set aside with the reason."""
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
            handled = Handled("rejected", reason)
            try:
                ipcfs.set_aside(self._ipc_root, folder, name, reason)
                self._quota.set_aside(folder, 1)
                if NAME_RE.match(name):
                    await self._store.record_ipc(folder, name, str(handled)[:500])
            except OSError as exc:
                log.error("ipc group=%s file=%s cannot be set aside: %s", folder, name, exc)
            return handled

    async def _handle(self, folder: str, name: str) -> Handled:
        if NAME_RE.match(name) and await self._store.ipc_done(folder, name):
            ipcfs.remove(self._ipc_root, folder, name)
            return Handled("duplicate")
        try:
            data = ipcfs.read_request(self._ipc_root, folder, name)
        except FileNotFoundError:
            return Handled("gone")
        req = parse(data)
        refusal = authorise(req, folder, await self._owner(req))
        if refusal:
            raise IpcRejected(refusal)
        await self._act(folder, name, req)
        ipcfs.remove(self._ipc_root, folder, name)
        return Handled("done")

    async def _owner(self, req: Request) -> str | None:
        """The group owning what `req` names (its chat, target group or task), if any."""
        if isinstance(req, SendMessage | SendFile | RegisterGroup):
            return await self._store.folder_of_chat(req.chat) if req.chat else None
        if isinstance(req, ScheduleTask):
            return req.group if req.group and await self._store.group(req.group) else None
        if isinstance(req, UpdateTask | TaskAction):
            task = await self._store.task(req.task_id)
            return task.folder if task else None
        return None

    async def _act(self, folder: str, name: str, req: Request) -> None:
        if isinstance(req, SendMessage | SendFile):
            await self._reply(folder, name, req)
        elif isinstance(req, UpdateMemory):
            now = datetime.now(self._zone)
            tainted = await self._store.writer_tainted(folder, self._current_run(folder))
            await asyncio.to_thread(
                memory.append_memory, self._groups_root / folder, req.content, now, tainted
            )
            outcome = "memory updated" + (" (untrusted source)" if tainted else "")
            await self._store.record_ipc(folder, name, outcome)
        elif isinstance(req, WriteFile):
            path = await self._export(folder, req)
            await self._store.record_ipc(folder, name, f"exported {req.target}:{path}"[:500])
        elif isinstance(req, RegisterGroup):
            await self.register(req)
            await self._store.record_ipc(folder, name, f"registered {req.folder}")
            self._on_groups_changed()
        else:
            outcome, affected = await self._task(folder, name, req)
            await self._store.record_ipc(folder, name, outcome)
            log.info("ipc group=%s file=%s %s", folder, name, outcome)
            self._on_tasks_changed(affected)

    async def _reply(self, folder: str, name: str, req: SendMessage | SendFile) -> None:
        chat = req.chat or await self._store.default_chat(folder)
        text = strip_internal(req.text if isinstance(req, SendMessage) else req.caption or "")
        if chat is None and (text or isinstance(req, SendFile)):
            raise IpcRejected("the group has no chat to reply in")
        run = self._current_run(folder)
        reply = Reply(chat, text, run) if chat and text else None
        if isinstance(req, SendFile) and chat:
            copy = self._files_root / folder / name.removesuffix(".json")
            file_name = await asyncio.to_thread(self._copy_in, folder, req.path, copy)
            reply = Reply(chat, text, run, str(copy), file_name)
        if await self._store.record_ipc(folder, name, "sent" if reply else "silent", reply):
            log.info("ipc group=%s file=%s reply queued for %s", folder, name, chat)
            self._on_reply()

    def _copy_in(self, folder: str, path: str, copy: Path) -> str:
        """The router's own copy of a file to send: the agent may change /workspace meanwhile."""
        copy.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        copy.unlink(missing_ok=True)  # left by a crash before the name was recorded
        staging.sweep_groups(self._files_root, staging.STAGED_RETENTION)
        room = self._staged_cap - staging.used_bytes(copy.parent)
        workspace = self._groups_root / folder
        file_name, _ = exports.copy_from_workspace(workspace, path, copy, room=room)
        return file_name

    async def _export(self, folder: str, req: WriteFile) -> Path:
        group = await self._store.group(folder)
        try:
            targets = exports.parse_exports(group.exports if group else ())
        except ValueError as exc:
            raise IpcRejected(f"the group's export targets are misconfigured: {exc}") from exc
        root = targets.get(req.target)
        if root is None:
            declared = ", ".join(sorted(targets)) or "none"
            raise IpcRejected(f"no export target {req.target!r} (declared: {declared})")
        data = exports.decode_content(req.content, req.encoding)
        return await asyncio.to_thread(exports.write_export, root, req.path, data)

    async def _task(self, folder: str, name: str, req: TaskRequest) -> tuple[str, str]:
        """Create or change a task: (what was done, the group whose tasks changed).

        Every effect is idempotent, so a file acted on twice (crash before its name was
        recorded) leaves the same state.
        """
        now = now_ms()
        # The text of a run that saw untrusted senders keeps that mark (Task.tainted).
        tainted = await self._store.writer_tainted(folder, self._current_run(folder))
        if isinstance(req, ScheduleTask):
            schedule = to_schedule(req.schedule, now)
            task = Task(
                id=task_id_of(name),
                folder=req.group or folder,
                source=AGENT,
                prompt=req.prompt,
                schedule=schedule,
                context=req.context,
                script=req.script,
                catch_up=req.catch_up,
                next_run_ms=first_run(schedule, self._zone, now),
                created_ms=now,
                tainted=tainted,
            )
            if task.id.startswith(CLAUDE_MD_ID_PREFIX):
                raise IpcRejected(f"task id {task.id}: '{CLAUDE_MD_ID_PREFIX}' is for CLAUDE.md")
            if not await self._store.add_task(task):
                # the same file acted on before its name was recorded, or another task's id
                same = await self._store.task(task.id)
                if same is None or _request_part(same) != _request_part(task):
                    raise IpcRejected(f"task id {task.id} is taken")
            return f"scheduled {task.id} ({schedule.describe()})", task.folder
        found = await self._store.task(req.task_id)
        if found is None:  # authorise() refused unknown ids; the task went meanwhile
            raise IpcRejected(f"no task {req.task_id}")
        task = found
        if isinstance(req, UpdateTask):
            if task.source == CLAUDE_MD:
                raise IpcRejected(f"task {task.id} comes from CLAUDE.md: edit the file instead")
            schedule = to_schedule(req.schedule, now) if req.schedule else task.schedule
            changed = replace(
                task,
                prompt=req.prompt or task.prompt,
                schedule=schedule,
                context=req.context or task.context,
                script=req.script or task.script,
                catch_up=req.catch_up or task.catch_up,
                tainted=task.tainted or (tainted and bool(req.prompt or req.script)),
            )
            if req.schedule and task.status == "active":
                changed = replace(changed, next_run_ms=first_run(schedule, self._zone, now))
        else:
            try:
                changed = apply_action(task, req.type.removesuffix("_task"), self._zone, now)
            except ValueError as exc:
                raise IpcRejected(str(exc)) from exc
        await self._store.replace_task(changed)
        verb = {"update_task": "updated", "pause_task": "paused", "resume_task": "resumed"}
        return f"{verb.get(req.type, 'cancelled')} {task.id}", task.folder

    async def register(self, req: RegisterGroup) -> Group:
        # the same rules as `nanoclaw groups add`: a chat that can exist, and never one taken
        # silently from another group (only the user moves a chat, with --move)
        holder = await self._store.folder_of_chat(req.chat)
        if problem := chat_problem(req.chat, req.folder, holder):
            move = "; only the user can move it (nanoclaw groups add --move)" if holder else ""
            raise IpcRejected(problem + move)
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
