"""The IPC watcher: each group's nudge socket, watchfiles over every outbound dir as the
backstop, plus a full scan at start.

The scan picks up files written while the daemon was down; after that, a nudge (the agent
sends one after each file) or a change seen by the watch wakes that group's own worker,
which drains the dir with `IpcHandler.drain`. Groups are drained side by side, so one
group's backlog never holds up another's reply. The watch looks only every WATCH_STEP_MS,
which keeps an idle daemon quiet: a file that came without a nudge waits that long.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

from watchfiles import Change, awatch

from nanoclaw.agent.protocol import NUDGE_SOCK, OUTBOUND
from nanoclaw.ipc import files as ipcfs
from nanoclaw.ipc.nudge import NudgeServer
from nanoclaw.store.messages import Store

log = logging.getLogger(__name__)
# Every step the watch thread takes the GIL to look at what inotify queued: 10 a second
# costs little; at 5 ms it was most of an idle daemon's CPU. Nudged files do not wait for it.
WATCH_STEP_MS = 100
WATCH_DEBOUNCE_MS = 200
# After this long with nothing seen, every dir is drained anyway: a file written while the
# watch was being set up (at start, or re-armed after an error) has no event of its own.
RESCAN_MS = 10_000


class Drainer(Protocol):
    """What the watcher drives: `IpcHandler`."""

    async def drain(self, folder: str) -> int: ...


def _accept(change: Change, path: str) -> bool:
    name = Path(path).name
    return change != Change.deleted and not name.startswith(".")


class IpcWatcher:
    def __init__(
        self, handler: Drainer, store: Store, ipc_root: Path, sockets: Path | None = None
    ) -> None:
        self._handler = handler
        self._store = store
        self._root = ipc_root
        self._sockets = sockets  # store/sockets/: where the nudge sockets are served; None: none
        self.nudges = NudgeServer(lambda folder: self.poke((folder,)))
        self._rearm = asyncio.Event()
        self.ready = asyncio.Event()
        self._dirty: set[str] = set()  # groups with changes no drain has started on yet
        self._workers: dict[str, asyncio.Task[None]] = {}  # at most one per group
        self._handled = 0

    def refresh(self) -> None:
        """The set of groups changed: rebuild the watch (and scan the new dirs)."""
        self._rearm.set()

    async def _folders(self) -> list[str]:
        return [g.folder for g in await self._store.groups()]

    def poke(self, folders: Iterable[str]) -> None:
        """The step: these groups' dirs changed; each one's worker drains it (again)."""
        for folder in folders:
            self._dirty.add(folder)
            if folder not in self._workers:
                self._workers[folder] = asyncio.create_task(
                    self._work(folder), name=f"ipc-{folder}"
                )

    async def _work(self, folder: str) -> None:
        try:
            while folder in self._dirty:
                self._dirty.discard(folder)  # a change from here on means one more drain
                try:
                    handled = await self._handler.drain(folder)
                    self._handled += handled  # not `+= await`: it would read before awaiting
                except Exception:  # one group's broken dir must not stop the others
                    log.exception("ipc group=%s drain failed", folder)
        finally:
            self._workers.pop(folder, None)

    async def settle(self) -> None:
        """Return once every group's worker is done (burst mode, for the scan and tests)."""
        while self._workers:
            await asyncio.gather(*self._workers.values(), return_exceptions=True)

    async def scan(self) -> int:
        """Handle whatever is already waiting in every group's outbound dir."""
        folders = []
        for folder in await self._folders():
            try:
                await asyncio.to_thread(ipcfs.ensure_dirs, self._root, folder)
                folders.append(folder)
            except Exception:  # one group's broken dir must not stop the others or the watch
                log.exception("ipc scan group=%s failed", folder)
        before = self._handled
        self.poke(folders)
        await self.settle()
        return self._handled - before

    async def run(self) -> None:
        try:
            await self._run()
        finally:
            self.nudges.close()
            workers = list(self._workers.values())
            for task in workers:
                task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            self._rearm.clear()
            handled = await self.scan()
            if handled:
                log.info("ipc scan handled %d waiting files", handled)
            folders = await self._folders()
            if self._sockets is not None:
                self.nudges.sync({f: self._sockets / f / NUDGE_SOCK for f in folders})
            dirs = {str(self._root / folder / OUTBOUND): folder for folder in folders}
            if not dirs:
                self.ready.set()
                await self._rearm.wait()
                continue
            self.ready.set()
            try:
                await self._watch(dirs)
            except Exception as exc:  # the loop boundary
                # A dir swapped under the watch (OSError), or a file name that is not UTF-8,
                # which watchfiles cannot decode: its RuntimeError arrives wrapped in an
                # ExceptionGroup from anyio. The next scan sets such a file aside.
                log.warning("ipc watch stopped (%r); re-arming", exc)
                await asyncio.sleep(0.5)

    async def _watch(self, dirs: dict[str, str]) -> None:
        async for changes in awatch(
            *dirs,
            watch_filter=_accept,
            debounce=WATCH_DEBOUNCE_MS,
            step=WATCH_STEP_MS,
            stop_event=self._rearm,
            recursive=False,
            rust_timeout=RESCAN_MS,
            yield_on_timeout=True,
            ignore_permission_denied=True,
        ):
            if not changes:  # nothing seen for a while: look anyway (see RESCAN_MS)
                self.poke(dirs.values())
                continue
            # No waiting here: each group's worker drains its own dir, side by side.
            parents = {str(Path(path).parent) for _, path in changes}
            self.poke(dirs[parent] for parent in parents if parent in dirs)
