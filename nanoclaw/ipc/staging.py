"""Staged files: the host's copies of files on their way out (store/files/<folder>/), and
the terminal's kept ones (store/received/). A group's waiting bytes are capped, and both
places keep a file for a limited time: `sweep` runs at each staging and each keeping.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from nanoclaw.ipc.exports import SEND_CAP

log = logging.getLogger(__name__)
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
DAY_S = 86400.0
STAGED_CAP = 4 * SEND_CAP  # bytes of one group's files waiting for the router


@dataclass(frozen=True)
class Retention:
    max_age_s: float
    max_bytes: int | None = None  # past it, the oldest go first


STAGED_RETENTION = Retention(7 * DAY_S)  # undelivered that long: the row failed or was lost
RECEIVED_RETENTION = Retention(30 * DAY_S, 1024**3)


@dataclass(frozen=True)
class Entry:
    name: str
    size: int
    mtime_s: float


def expired(entries: Iterable[Entry], now_s: float, keep: Retention) -> list[str]:
    """The names to delete: those older than the age, then the oldest until the rest fit."""
    young: list[Entry] = []
    old: list[Entry] = []
    for entry in sorted(entries, key=lambda e: (e.mtime_s, e.name)):
        (old if now_s - entry.mtime_s > keep.max_age_s else young).append(entry)
    total = sum(e.size for e in young)
    while keep.max_bytes is not None and young and total > keep.max_bytes:
        total -= young[0].size
        old.append(young.pop(0))
    return [e.name for e in old]


def entries(directory: Path) -> list[Entry]:
    """The regular files of a host-only directory (none if it does not exist)."""
    try:
        dfd = os.open(directory, DIR_FLAGS)
    except FileNotFoundError:
        return []
    found: list[Entry] = []
    try:
        for name in os.listdir(dfd):
            with contextlib.suppress(FileNotFoundError):
                st = os.lstat(name, dir_fd=dfd)
                if stat.S_ISREG(st.st_mode):
                    found.append(Entry(name, st.st_blocks * 512, st.st_mtime))
    finally:
        os.close(dfd)
    return found


def used_bytes(directory: Path) -> int:
    """The disk space the directory's files take (allocated blocks, not apparent sizes)."""
    return sum(e.size for e in entries(directory))


def sweep(directory: Path, keep: Retention, now_s: float | None = None) -> list[str]:
    """Delete what `keep` no longer keeps; the names deleted."""
    gone = expired(entries(directory), time.time() if now_s is None else now_s, keep)
    if not gone:
        return gone
    dfd = os.open(directory, DIR_FLAGS)
    try:
        for name in gone:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name, dir_fd=dfd)
    finally:
        os.close(dfd)
    log.info("staging dir=%s removed %d old file(s)", directory, len(gone))
    return gone


def sweep_groups(root: Path, keep: Retention, now_s: float | None = None) -> None:
    """`sweep` each group's directory under root (store/files/<folder>/)."""
    try:
        folders = [p for p in root.iterdir() if p.is_dir() and not p.is_symlink()]
    except FileNotFoundError:
        return
    for folder in folders:
        sweep(folder, keep, now_s)
