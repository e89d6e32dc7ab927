"""Tasks written in each group's CLAUDE.md: read at start and on every change (watchfiles).

An edit adds, changes or removes the file's tasks while the daemon runs; a line that does
not parse is logged and kept for `nanoclaw tasks list`, and the file's other tasks still load.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from zoneinfo import ZoneInfo

from watchfiles import Change, awatch

from nanoclaw.errors import IpcRejected
from nanoclaw.memory import MEMORY_FILE, read_nofollow
from nanoclaw.schedule.claudemd import parse_tasks
from nanoclaw.schedule.tasks import first_run, from_claude_md, plan_sync
from nanoclaw.store.db import now_ms
from nanoclaw.store.messages import Store

log = logging.getLogger(__name__)


def _is_memory_file(change: Change, path: str) -> bool:
    return Path(path).name == MEMORY_FILE


class TaskFile:
    def __init__(
        self,
        store: Store,
        groups_root: Path,
        zone: ZoneInfo,
        changed: Callable[[str], None],
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self._store = store
        self._root = groups_root
        self._zone = zone
        self._changed = changed
        self._clock = clock
        self._reported: dict[str, list[tuple[int, str]]] = {}
        self._rearm = asyncio.Event()
        self.ready = asyncio.Event()

    def refresh(self) -> None:
        """The set of groups changed: read the new ones and watch them too."""
        self._rearm.set()

    async def sync(self, folder: str) -> list[tuple[int, str]]:
        """The step: make the store's tasks of this group follow its CLAUDE.md."""
        try:
            text = await asyncio.to_thread(read_nofollow, self._root / folder / MEMORY_FILE)
            entries, errors = parse_tasks(text)
            problems = [(e.line, e.message) for e in errors]
        except (IpcRejected, OSError) as exc:  # unreadable: keep the tasks it had
            log.warning("tasks group=%s CLAUDE.md unreadable: %s", folder, exc)
            return [(0, f"CLAUDE.md unreadable: {exc}")]
        wanted = [from_claude_md(folder, entry) for entry in entries]
        plan = plan_sync(await self._store.claude_md_status(folder), wanted)
        problems += [
            (line, f"same task as line {first}; ignored") for line, first in plan.duplicates
        ]
        problems.sort()
        now = self._clock()
        await self._store.sync_claude_md(
            folder, plan, problems, lambda task: first_run(task.schedule, self._zone, now)
        )
        if plan.add or plan.remove:
            log.info(
                "tasks group=%s CLAUDE.md: %d added, %d kept, %d removed",
                folder,
                len(plan.add),
                len(plan.keep),
                len(plan.remove),
            )
        if problems != self._reported.get(folder):
            for line, message in problems:
                log.warning("tasks group=%s CLAUDE.md line %d: %s", folder, line, message)
            self._reported[folder] = problems
        self._changed(folder)
        return problems

    async def run(self) -> None:
        while True:
            self._rearm.clear()
            folders = [g.folder for g in await self._store.groups()]
            for folder in folders:
                await self.sync(folder)
            self.ready.set()
            dirs = {str(self._root / f): f for f in folders if (self._root / f).is_dir()}
            if not dirs:
                await self._rearm.wait()
                continue
            try:
                await self._watch(dirs)
            except Exception as exc:  # watchfiles wraps some errors (a non-UTF-8 name) in groups
                log.warning("CLAUDE.md watch stopped (%r); re-arming", exc)
                await asyncio.sleep(0.5)

    async def _watch(self, dirs: dict[str, str]) -> None:
        async for changes in awatch(
            *dirs,
            watch_filter=_is_memory_file,
            debounce=1600,
            step=800,  # the watch wakes every step to look for changes: a slow file, slow steps
            stop_event=self._rearm,
            recursive=False,
            rust_timeout=5000,
            ignore_permission_denied=True,
        ):
            for folder in sorted(
                {dirs[str(Path(p).parent)] for _, p in changes if str(Path(p).parent) in dirs}
            ):
                await self.sync(folder)
