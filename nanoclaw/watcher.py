"""The IPC watcher: watchfiles over every group's outbound dir, plus a full scan at start.

The scan picks up files written while the daemon was down; after that, each new file is
handed to `IpcHandler.handle_file` within milliseconds. New groups re-arm the watch.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from watchfiles import Change, awatch

from nanoclaw import ipcfs
from nanoclaw.ipc import IpcHandler
from nanoclaw.store import Store

log = logging.getLogger(__name__)


def _accept(change: Change, path: str) -> bool:
    name = Path(path).name
    return change != Change.deleted and not name.startswith(".")


class IpcWatcher:
    def __init__(self, handler: IpcHandler, store: Store, ipc_root: Path) -> None:
        self._handler = handler
        self._store = store
        self._root = ipc_root
        self._rearm = asyncio.Event()
        self.ready = asyncio.Event()

    def refresh(self) -> None:
        """The set of groups changed: rebuild the watch (and scan the new dirs)."""
        self._rearm.set()

    async def _folders(self) -> list[str]:
        return [g.folder for g in await self._store.groups()]

    async def scan(self) -> int:
        """Handle whatever is already waiting in every group's outbound dir."""
        handled = 0
        for folder in await self._folders():
            try:
                await asyncio.to_thread(ipcfs.ensure_dirs, self._root, folder)
                handled += await self._handler.drain(folder)
            except Exception:  # one group's broken dir must not stop the others or the watch
                log.exception("ipc scan group=%s failed", folder)
        return handled

    async def run(self) -> None:
        while True:
            self._rearm.clear()
            handled = await self.scan()
            if handled:
                log.info("ipc scan handled %d waiting files", handled)
            dirs = {
                str(self._root / folder / "outbound"): folder for folder in await self._folders()
            }
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
            debounce=200,
            step=5,
            stop_event=self._rearm,
            recursive=False,
            rust_timeout=1000,
            ignore_permission_denied=True,
        ):
            # one call per path: a file written in place shows as added and modified
            for path in sorted({path for _, path in changes}):
                p = Path(path)
                folder = dirs.get(str(p.parent))
                if folder is None:
                    continue
                try:
                    await self._handler.handle_file(folder, p.name)
                except Exception:  # a bug on one file must not stop the watch for all
                    log.exception("ipc group=%s file=%r failed", folder, p.name)
