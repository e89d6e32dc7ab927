"""A NANOCLAW_HOME with three groups and the traps an agent would aim at, for the hostile
IPC tests: where handling a file may write, and what it set aside in errors/.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import stat
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hostile import UTC_ZONE

from nanoclaw.ipc import files as ipcfs
from nanoclaw.ipc.handler import IpcHandler
from nanoclaw.models import Group
from nanoclaw.schedule.tasks import AGENT, CLAUDE_MD, Schedule, Task
from nanoclaw.store.messages import Store

GROUPS = {"main": "term:main", "alpha": "tg:-1", "beta": "tg:-2"}
OWN_TASKS = {"main-task": "main", "alpha-task": "alpha", "beta-task": "beta"}


@dataclass
class Host:
    """A NANOCLAW_HOME in a temp dir with three groups and the traps an agent would aim at."""

    root: Path
    store: Store
    handler: IpcHandler

    @property
    def ipc(self) -> Path:
        return self.root / "ipc"

    @property
    def secret(self) -> Path:
        return self.root / "host-secret.json"


@asynccontextmanager
async def host() -> AsyncIterator[Host]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        store = await Store.open(root / "store" / "nanoclaw.db")
        try:
            for folder, chat in GROUPS.items():
                exports = (f"out={root / 'exports' / folder}",) if folder == "alpha" else ()
                group = Group(folder=folder, name=folder, chats=(chat,), exports=exports)
                await store.save_group(group)
                ipcfs.ensure_dirs(root / "ipc", folder)
                (root / "exports" / folder).mkdir(parents=True)
                workspace = root / "groups" / folder
                workspace.mkdir(parents=True)
                (workspace / "CLAUDE.md").write_text("# notes\n")
                (workspace / "hello.txt").write_text("hello\n")
            (root / "host-secret.json").write_text('{"type": "send_message", "text": "host"}')
            # links the agent planted in its workspace and in its export target
            (root / "groups" / "alpha" / "escape").symlink_to(root)
            (root / "exports" / "alpha" / "escape").symlink_to(root)
            for task_id, folder in OWN_TASKS.items():
                every = Schedule("every", every_s=3600)
                await store.add_task(Task(task_id, folder, AGENT, "p", every, next_run_ms=1))
            md = Schedule("cron", cron="0 8 * * *")
            await store.add_task(Task("alpha-md", "alpha", CLAUDE_MD, "p", md, next_run_ms=1))
            yield Host(root, store, IpcHandler(store, root / "ipc", root / "groups", UTC_ZONE))
        finally:
            await store.close()


def snapshot(root: Path) -> dict[str, tuple[str, str]]:
    """Every path under root (store/ aside) -> (kind, content hash or link target)."""
    seen: dict[str, tuple[str, str]] = {}
    for top, dirs, files in os.walk(root):
        if os.path.relpath(top, root) == "store":
            dirs.clear()
            continue
        for name in dirs + files:
            path = os.path.join(top, name)
            mode = os.lstat(path).st_mode
            if stat.S_ISREG(mode):
                kind = ("file", hashlib.sha256(Path(path).read_bytes()).hexdigest())
            elif stat.S_ISLNK(mode):
                kind = ("link", os.readlink(path))
            else:
                kind = ("dir" if stat.S_ISDIR(mode) else "other", "")
            seen[os.path.relpath(path, root)] = kind
    return seen


def may_change(rel: str, folder: str, kind: str, done: bool) -> bool:
    """Where handling one `kind` file from `folder` may write: its own IPC dirs, the store,
    and (when done) its own memory file, its declared export target, a registered group."""
    parts = rel.split(os.sep)
    if parts[:2] in (["ipc", folder], ["files", folder], ["files"]):
        return parts[0] == "files" or (len(parts) > 2 and parts[2] in ("outbound", "errors"))
    if not done:
        return False
    if kind == "update_memory" and parts[:2] == ["groups", folder] and len(parts) == 3:
        return parts[2] == "CLAUDE.md" or parts[2].startswith(".CLAUDE.md.")
    if kind == "write_file" and parts[:2] == ["exports", folder]:
        return True
    return kind == "register_group" and folder == "main" and len(parts) == 2


def set_aside(h: Host, folder: str) -> tuple[Counter[tuple[str, str]], list[str]]:
    """errors/: the kept files (by kind and content) and the texts of the notes beside them.

    A note is "<kept name>.reason.txt"; a kept file may itself end in .reason.txt (a FIFO
    named so by the agent), so notes are told apart by their pairing, and only then read.
    """
    errors = h.ipc / folder / "errors"
    entries = {k: v for k, v in snapshot(errors).items() if os.sep not in k}
    notes = {e for e in entries if e.endswith(".reason.txt") and e[:-11] in entries}
    assert all(entries[n][0] == "file" for n in notes)
    texts = []
    for note in notes:
        with (errors / note).open(encoding="utf-8", newline="") as fh:  # as written, \r and all
            texts.append(fh.read())
    return Counter(entries[e] for e in entries.keys() - notes), texts


def run_host(scenario: Callable[[Host], Any]) -> Any:
    async def main() -> Any:
        async with host() as h:
            return await scenario(h)

    return asyncio.run(main())


def drop_file(h: Host, folder: str, data: bytes | str, name: bytes | str | None = None) -> str:
    name = name if name is not None else f"{int(time.time() * 1000)}-{os.urandom(4).hex()}.json"
    raw = os.fsencode(name)
    path = os.path.join(os.fsencode(h.ipc / folder / "outbound"), raw)
    Path(os.fsdecode(path)).write_bytes(data.encode() if isinstance(data, str) else data)
    return os.fsdecode(raw)


def notes(h: Host, folder: str) -> list[str]:
    return sorted(set_aside(h, folder)[1])
