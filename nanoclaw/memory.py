"""Group memory: the `CLAUDE.md` files, written by the host without following symlinks.

The agent can plant a symlink anywhere in its /workspace, so every host-side read and
write here opens with O_NOFOLLOW and replaces the file by an atomic rename.
"""

from __future__ import annotations

import os
import secrets
import stat
from datetime import datetime
from pathlib import Path

from nanoclaw.errors import IpcRejected

MARKER = "<!-- agent memory -->"
MEMORY_FILE = "CLAUDE.md"
FILE_CAP = 256 * 1024
ENTRY_CAP = 8 * 1024


def read_nofollow(path: Path, cap: int = FILE_CAP) -> str:
    """Read a regular file that is not a symlink; '' when it does not exist."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return ""
    except OSError as exc:
        raise IpcRejected(f"{path.name} cannot be opened safely: {exc.strerror}") from exc
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise IpcRejected(f"{path.name} is not a regular file")
    with os.fdopen(fd, "rb") as fh:
        data = fh.read(cap + 1)
    if len(data) > cap:
        raise IpcRejected(f"{path.name} is larger than {cap} bytes")
    return data.decode("utf-8", errors="replace")


def write_atomic(path: Path, text: str) -> None:
    """Write beside the target, then rename over it (replacing a symlink, never following it)."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def with_entry(current: str, content: str, stamp: str) -> str:
    """The file with one more entry under the marker (the marker added once if missing)."""
    text = current if current.endswith("\n") or not current else current + "\n"
    if MARKER not in text:
        text += f"\n{MARKER}\n"
    entry = content.strip().replace(MARKER, "")
    return f"{text}\n- ({stamp}) {entry}\n"


def append_memory(folder_dir: Path, content: str, now: datetime) -> None:
    if not content.strip():
        raise IpcRejected("update_memory with empty content")
    if len(content) > ENTRY_CAP:
        raise IpcRejected(f"update_memory content longer than {ENTRY_CAP} characters")
    path = folder_dir / MEMORY_FILE
    updated = with_entry(read_nofollow(path), content, now.strftime("%Y-%m-%d %H:%M"))
    if len(updated.encode()) > FILE_CAP:
        raise IpcRejected(f"CLAUDE.md would exceed {FILE_CAP} bytes; the owner must prune it")
    write_atomic(path, updated)
