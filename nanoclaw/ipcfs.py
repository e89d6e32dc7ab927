"""The host's file operations on a group's IPC directory, none of which follows a symlink.

The agent owns /ipc inside its sandbox and may plant links or swap directories there;
every operation here goes through directory fds opened with O_NOFOLLOW.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import stat
import time
from pathlib import Path
from typing import Any

from nanoclaw.errors import IpcRejected

NAME_RE = re.compile(r"^\d{13}-[A-Za-z0-9_-]{1,64}\.json$")
FILE_CAP = 1024 * 1024
SUBDIRS = ("outbound", "input", "errors")
TASKS_FILE = "tasks.json"
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def ipc_dir(root: Path, folder: str) -> Path:
    return root / folder


def ensure_dirs(root: Path, folder: str) -> Path:
    """Create store/ipc/<folder>/{outbound,input,errors}; replace anything that is not a dir."""
    base = ipc_dir(root, folder)
    base.mkdir(parents=True, exist_ok=True, mode=0o700)
    for sub in SUBDIRS:
        path = base / sub
        if path.is_symlink() or (path.exists() and not path.is_dir()):
            path.unlink()
        path.mkdir(exist_ok=True, mode=0o700)
    return base


def list_names(root: Path, folder: str, sub: str = "outbound") -> list[str]:
    try:
        fd = os.open(ipc_dir(root, folder) / sub, DIR_FLAGS)
    except OSError:
        return []
    try:
        return sorted(n for n in os.listdir(fd) if not n.startswith("."))
    finally:
        os.close(fd)


def read_request(root: Path, folder: str, name: str) -> Any:
    """Read and parse one outbound file; IpcRejected says why it is unusable."""
    if not NAME_RE.match(name):
        raise IpcRejected("file name is not <unix-ms>-<random>.json")
    dfd = os.open(ipc_dir(root, folder) / "outbound", DIR_FLAGS)
    try:
        try:
            fd = os.open(
                name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dfd
            )
        except OSError as exc:
            raise IpcRejected(f"cannot open safely: {exc.strerror}") from exc
        with os.fdopen(fd, "rb") as fh:
            if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
                raise IpcRejected("not a regular file")
            data = fh.read(FILE_CAP + 1)
    finally:
        os.close(dfd)
    if len(data) > FILE_CAP:
        raise IpcRejected(f"larger than {FILE_CAP} bytes")
    try:
        return json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise IpcRejected(f"not UTF-8 ({exc.reason} at byte {exc.start})") from exc
    except json.JSONDecodeError as exc:
        raise IpcRejected(f"malformed JSON: {exc.msg} at line {exc.lineno}") from exc


def remove(root: Path, folder: str, name: str) -> None:
    dfd = os.open(ipc_dir(root, folder) / "outbound", DIR_FLAGS)
    try:
        os.unlink(name, dir_fd=dfd)
    except FileNotFoundError:
        pass
    except IsADirectoryError:
        shutil.rmtree(ipc_dir(root, folder) / "outbound" / name, ignore_errors=True)
    finally:
        os.close(dfd)


def set_aside(root: Path, folder: str, name: str, reason: str) -> None:
    """Move a refused file into errors/ (host-only) with a note of why."""
    base = ipc_dir(root, folder)
    src = os.open(base / "outbound", DIR_FLAGS)
    dst = os.open(base / "errors", DIR_FLAGS)
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", name)[:100] or "unnamed"
    target = f"{int(time.time() * 1000)}-{safe}"
    try:
        try:
            os.rename(name, target, src_dir_fd=src, dst_dir_fd=dst)
        except FileNotFoundError:
            pass
        except OSError:
            remove(root, folder, name)
        note = os.open(
            f"{target}.reason.txt",
            os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
            0o600,
            dir_fd=dst,
        )
        with os.fdopen(note, "w", encoding="utf-8") as fh:
            fh.write(f"{name}: {reason}\n")
    finally:
        os.close(src)
        os.close(dst)


def _write_json(directory: Path, name: str, payload: dict[str, Any]) -> None:
    """Write to a hidden name, then rename over `name` (a planted symlink is replaced)."""
    dfd = os.open(directory, DIR_FLAGS)
    tmp = f".{name}.{secrets.token_hex(4)}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644, dir_fd=dfd)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(payload, fh, ensure_ascii=False)
        os.rename(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
    finally:
        os.close(dfd)


def write_input(root: Path, folder: str, name: str, payload: dict[str, Any]) -> None:
    """Host -> agent: a follow-up, written like the agent writes its own files."""
    _write_json(ipc_dir(root, folder) / "input", name, payload)


def write_tasks(root: Path, folder: str, payload: dict[str, Any]) -> None:
    """/ipc/tasks.json: the tasks this group's agent may see."""
    _write_json(ipc_dir(root, folder), TASKS_FILE, payload)


def clear_input(root: Path, folder: str) -> None:
    directory = ipc_dir(root, folder) / "input"
    dfd = os.open(directory, DIR_FLAGS)
    try:
        for name in os.listdir(dfd):
            try:
                os.unlink(name, dir_fd=dfd)
            except IsADirectoryError:
                shutil.rmtree(directory / name, ignore_errors=True)
    finally:
        os.close(dfd)
