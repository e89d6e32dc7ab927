"""The nudge: one datagram socket per group, store/sockets/<folder>/nudge.sock, bound at
/ipc/nudge.sock; the agent sends a byte after each outbound file, and the group's outbound
dir is drained at once. A hint only: what it carries is never read, and floods coalesce.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Callable, Mapping
from pathlib import Path

log = logging.getLogger(__name__)
# Datagrams taken per wake-up: the kernel queues few (net.unix.max_dgram_qlen, 10 by
# default) and drops the sender's rest (non-blocking), so a flood costs a wake-up per batch.
READ_BATCH = 64


class NudgeServer:
    """Serves the nudge sockets of the groups `sync` names; calls `on_nudge(folder)`."""

    def __init__(self, on_nudge: Callable[[str], None]) -> None:
        self._on_nudge = on_nudge
        self._socks: dict[str, tuple[socket.socket, Path]] = {}
        self.received = 0  # datagrams taken, all groups
        self.wakes = 0  # on_nudge calls

    @property
    def folders(self) -> set[str]:
        return set(self._socks)

    def sync(self, paths: Mapping[str, Path]) -> None:
        """Serve exactly these groups (folder -> socket path); a socket already served is
        kept, since a running sandbox holds a bind of that very inode."""
        for folder in set(self._socks) - set(paths):
            self._stop(folder)
        for folder, path in paths.items():
            if folder not in self._socks:
                try:
                    self._serve(folder, path)
                except OSError as exc:  # the file watch still sees its files, a little later
                    log.warning("ipc group=%s cannot serve %s: %s", folder, path, exc)

    def close(self) -> None:
        for folder in list(self._socks):
            self._stop(folder)

    def _serve(self, folder: str, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(path.parent, 0o700)  # below store/: no agent reaches this path
        with contextlib.suppress(FileNotFoundError):  # a stale socket or placeholder
            os.unlink(path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        try:
            sock.setblocking(False)
            sock.bind(str(path))
            os.chmod(path, 0o600)
            asyncio.get_running_loop().add_reader(sock.fileno(), self.take, folder)
        except BaseException:
            sock.close()
            raise
        self._socks[folder] = (sock, path)

    def _stop(self, folder: str) -> None:
        sock, path = self._socks.pop(folder)
        with contextlib.suppress(RuntimeError):  # the loop is already closed
            asyncio.get_running_loop().remove_reader(sock.fileno())
        sock.close()
        with contextlib.suppress(OSError):
            os.unlink(path)

    def take(self, folder: str) -> None:
        """The step, when the group's socket is readable: empty it (up to a batch), wake once."""
        entry = self._socks.get(folder)
        if entry is None:
            return
        taken = 0
        for _ in range(READ_BATCH):
            try:
                entry[0].recv(1)  # the content means nothing; a longer datagram is cut
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                log.debug("ipc group=%s nudge recv: %s", folder, exc)
                break
            taken += 1
        if taken:
            self.received += taken
            self.wakes += 1
            self._on_nudge(folder)
