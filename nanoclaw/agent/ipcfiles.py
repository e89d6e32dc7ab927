"""The sandbox side of IPC: atomic JSON files to /ipc/outbound, follow-ups from /ipc/input.

Waiting for input uses inotify through ctypes (the sandbox has no third-party packages),
so a follow-up is seen within a millisecond; where inotify fails it polls. Each outbound
file is followed by a nudge, so the host reads it at once rather than when its watch looks.
"""

from __future__ import annotations

import ctypes
import json
import os
import select
import socket
import time
from pathlib import Path
from typing import Any

from .protocol import CLOSE, NUDGE_SOCK, PAUSE, Event, event_line, follow_up_prompt, ipc_name

IN_CLOSE_WRITE = 0x00000008
IN_MOVED_TO = 0x00000080
IN_DELETE = 0x00000200  # the host takes PAUSE away to resume
HOLD_POLL_S = 1.0  # while paused, look again at least this often (a missed event costs 1 s)
IN_NONBLOCK = 0o4000
IN_CLOEXEC = 0o2000000


def write_json(directory: Path, payload: dict[str, Any], nudge_at: Path | None = None) -> str:
    """Write to a hidden temporary name, then rename: a reader never sees half a file. Then
    nudge the host (at /ipc/nudge.sock, beside `directory`, unless `nudge_at` says where)."""
    name = ipc_name()
    tmp = directory / f".{name}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(payload, fh, ensure_ascii=False)
    os.replace(tmp, directory / name)
    nudge(nudge_at or directory.parent / NUDGE_SOCK)
    return name


def nudge(sock_path: Path) -> bool:
    """One byte to the host's nudge socket; True when sent. Best effort and never blocking:
    with no host listening or its queue full, the host's file watch finds the file anyway."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.setblocking(False)
            sock.sendto(b"!", str(sock_path))
    except OSError:
        return False
    return True


class Inbox:
    """Follow-up prompts written by the host into /ipc/input."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._fd = -1
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = int(libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC))
            if fd >= 0:
                mask = IN_CLOSE_WRITE | IN_MOVED_TO | IN_DELETE
                if libc.inotify_add_watch(fd, bytes(directory), mask) >= 0:
                    self._fd = fd
                else:
                    os.close(fd)
        except (OSError, AttributeError):
            self._fd = -1

    def take(self) -> tuple[list[tuple[str, str]], bool]:
        """Consume every waiting input file: ([(name, prompt)], close_requested)."""
        items: list[tuple[str, str]] = []
        close = False
        if not self.directory.is_dir():  # a run without follow-ups (tests): nothing waits
            return items, close
        for path in sorted(self.directory.iterdir()):
            name = path.name
            if name == CLOSE:
                close = True
                path.unlink(missing_ok=True)
                continue
            if name.startswith(".") or not name.endswith(".json"):
                continue
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                data = {}
            path.unlink(missing_ok=True)
            prompt = follow_up_prompt(data)
            if prompt is not None:
                items.append((name, prompt))
        return items, close

    def paused(self) -> bool:
        """Whether the owner paused the run (PAUSE in the input dir) and did not close it."""
        return (self.directory / PAUSE).exists() and not (self.directory / CLOSE).exists()

    def hold(self) -> bool:
        """Block while the run is paused; True when it was (it waited for the resume)."""
        if not self.paused():
            return False
        while self.paused():
            self._block(HOLD_POLL_S)
        return True

    def wait(self, timeout: float) -> tuple[list[tuple[str, str]], bool]:
        """Block until input arrives, `_close` is asked for, or `timeout` passes (-> ([], True)).
        Time spent paused does not count: the owner's pause is no idleness."""
        left = timeout
        while True:
            items, close = self.take()
            if items or close:
                return items, close
            if self.hold():
                continue
            if left <= 0:
                return [], True
            began = time.monotonic()
            self._block(left)
            left -= time.monotonic() - began

    def _block(self, timeout: float) -> None:
        """Until something changes in the input dir (inotify), or a short poll, or `timeout`."""
        if self._fd >= 0:
            ready, _, _ = select.select([self._fd], [], [], timeout)
            if ready:
                self._drain()
        else:
            time.sleep(min(0.02, timeout))

    def _drain(self) -> None:
        try:
            while os.read(self._fd, 4096):
                pass
        except BlockingIOError:
            pass


def event(kind: Event, **fields: object) -> None:
    """One JSON line on stdout: the host's view of the run's progress."""
    print(event_line(kind, **fields), flush=True)
