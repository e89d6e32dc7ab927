"""Group memory: the `CLAUDE.md` files, written by the host without following symlinks.

The agent can plant a symlink anywhere in its /workspace, so every host-side read and
write here opens with O_NOFOLLOW and replaces the file by an atomic rename. An entry from a
run that saw untrusted senders is tagged, and no entry can fake the start of another.
"""

from __future__ import annotations

import os
import secrets
import stat
from datetime import datetime
from pathlib import Path

from nanoclaw.agent.conversation import MEMORY_MARKER, UNTRUSTED_TAG
from nanoclaw.errors import IpcRejected

MARKER = MEMORY_MARKER
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


def write_atomic(path: Path, text: str, mode: int = 0o644) -> None:
    """Write beside the target, then rename over it (replacing a symlink, never following it)."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def with_entry(current: str, content: str, stamp: str, untrusted: bool = False) -> str:
    """The file with one more entry under the marker (the marker added once if missing).

    Continuation lines are indented (every kind of line break counts), so only the host
    starts an entry line: an untrusted entry cannot end its tag's reach with a fake entry.
    """
    text = current if current.endswith("\n") or not current else current + "\n"
    if MARKER not in text:
        text += f"\n{MARKER}\n"
    entry = content.strip()
    while MARKER in entry:  # "<!-- agent <!-- agent memory -->memory -->" must not leave one
        entry = entry.replace(MARKER, "")
    body = "\n  ".join(line.rstrip() for line in entry.strip().splitlines())
    tag = f"{UNTRUSTED_TAG} " if untrusted else ""
    return f"{text}\n- ({stamp}) {tag}{body}\n"


def append_memory(folder_dir: Path, content: str, now: datetime, untrusted: bool = False) -> None:
    if not content.strip():
        raise IpcRejected("update_memory with empty content")
    if len(content) > ENTRY_CAP:
        raise IpcRejected(f"update_memory content longer than {ENTRY_CAP} characters")
    path = folder_dir / MEMORY_FILE
    updated = with_entry(read_nofollow(path), content, now.strftime("%Y-%m-%d %H:%M"), untrusted)
    if len(updated.encode()) > FILE_CAP:
        raise IpcRejected(f"CLAUDE.md would exceed {FILE_CAP} bytes; the owner must prune it")
    write_atomic(path, updated)
