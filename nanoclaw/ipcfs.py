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

# ASCII digits only (\d would take any script's) and \Z, not $ (which allows a final "\n").
NAME_RE = re.compile(r"^[0-9]{13}-[A-Za-z0-9_-]{1,64}\.json\Z")
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
    """Read and parse one outbound file; IpcRejected says why it is unusable.

    FileNotFoundError passes through: the file went between listing and reading.
    """
    if not NAME_RE.match(name):
        raise IpcRejected("file name is not <unix-ms>-<random>.json")
    try:
        dfd = os.open(ipc_dir(root, folder) / "outbound", DIR_FLAGS)
    except OSError as exc:  # the agent swapped the directory for a link, a file or a FIFO
        raise IpcRejected(f"outbound/ cannot be opened safely: {exc.strerror}") from exc
    try:
        try:
            fd = os.open(
                name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dfd
            )
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise IpcRejected(f"cannot open safely: {exc.strerror}") from exc
        # checked on the raw fd: os.fdopen itself refuses a directory (and keeps the fd)
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise IpcRejected("not a regular file")
        with os.fdopen(fd, "rb") as fh:
            data = fh.read(FILE_CAP + 1)
    finally:
        os.close(dfd)
    if len(data) > FILE_CAP:
        raise IpcRejected(f"larger than {FILE_CAP} bytes")
    try:
        value = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise IpcRejected(f"not UTF-8 ({exc.reason} at byte {exc.start})") from exc
    except json.JSONDecodeError as exc:
        raise IpcRejected(f"malformed JSON: {exc.msg} at line {exc.lineno}") from exc
    except RecursionError as exc:
        raise IpcRejected("malformed JSON: nested too deeply") from exc
    except ValueError as exc:  # an integer of more digits than int() may convert
        raise IpcRejected(f"malformed JSON: {str(exc)[:80]}") from exc
    _require_unicode(value)
    return value


def _require_unicode(value: Any) -> None:
    """Refuse strings no UTF-8 file, database or log can hold (a "\\ud800" escape alone)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise IpcRejected("a JSON string holds an unpaired surrogate escape") from exc


def remove(root: Path, folder: str, name: str) -> None:
    dfd = os.open(ipc_dir(root, folder) / "outbound", DIR_FLAGS)
    try:
        os.unlink(name, dir_fd=dfd)
    except FileNotFoundError:
        pass
    except IsADirectoryError:  # through the fd: a path could follow a swapped-in link
        shutil.rmtree(name, dir_fd=dfd, ignore_errors=True)
    finally:
        os.close(dfd)


def set_aside(root: Path, folder: str, name: str, reason: str) -> None:
    """Move a refused file into errors/ (host-only) with a note of why.

    Each kept file gets a name of its own (two agent names may clean to the same one), and
    the note is created new, never opened over something already there (a FIFO would block).
    """
    base = ipc_dir(root, folder)
    src = os.open(base / "outbound", DIR_FLAGS)
    dst = os.open(base / "errors", DIR_FLAGS)
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", name)[:100] or "unnamed"
    target = f"{int(time.time() * 1000)}-{secrets.token_hex(4)}-{safe}"
    try:
        try:
            os.rename(name, target, src_dir_fd=src, dst_dir_fd=dst)
        except FileNotFoundError:
            return  # gone meanwhile (handled by a concurrent step): nothing to keep or explain
        except OSError:
            remove(root, folder, name)
        note = os.open(
            f"{target}.reason.txt",
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
            0o600,
            dir_fd=dst,
        )
        # backslashreplace: a name read from disk may hold undecodable bytes (surrogates)
        with os.fdopen(note, "w", encoding="utf-8", errors="backslashreplace") as fh:
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
                shutil.rmtree(name, dir_fd=dfd, ignore_errors=True)
    finally:
        os.close(dfd)
