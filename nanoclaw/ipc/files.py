"""The host's file operations on a group's IPC directory, none of which follows a symlink.

The agent owns /ipc inside its sandbox and may plant links or swap directories there;
every operation here goes through directory fds opened with O_NOFOLLOW.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import stat
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from nanoclaw.agent.protocol import (
    CLOSE,
    EGRESS_SOCK,
    ERRORS,
    INPUT,
    LLM_SOCK,
    NAME_RE,
    NUDGE_SOCK,
    OUTBOUND,
    PAUSE,
    TASKS_FILE,
)
from nanoclaw.errors import IpcRejected
from nanoclaw.ipc.quota import NOTE_SUFFIX, FileLimits, stamp_s, to_prune

FILE_CAP = 1024 * 1024
SUBDIRS = (OUTBOUND, INPUT, ERRORS)
NOTE_NAMES = 20  # names listed in one set-aside note; a batch may hold thousands
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
SOCKETS = (LLM_SOCK, EGRESS_SOCK, NUDGE_SOCK)  # served host-side, bound over these names in /ipc


def ipc_dir(root: Path, folder: str) -> Path:
    return root / folder


def ensure_dirs(root: Path, folder: str) -> Path:
    """Create store/ipc/<folder>/{outbound,input,errors}; replace anything that is not a dir.

    Each check and its fix go through the directory's fd, so a link the agent plants
    meanwhile is refused by the open that follows, never followed.
    """
    base = ipc_dir(root, folder)
    base.mkdir(parents=True, exist_ok=True, mode=0o700)  # store/ipc/ is the host's alone
    dfd = os.open(base, DIR_FLAGS)
    try:
        for sub in SUBDIRS:
            for _ in range(3):  # a racing agent can replace it again: give up after that
                try:
                    os.close(os.open(sub, DIR_FLAGS, dir_fd=dfd))
                    break
                except FileNotFoundError:
                    pass
                except OSError:  # a link, a file or a FIFO in its place
                    _remove_entry(dfd, sub)
                with contextlib.suppress(FileExistsError):
                    os.mkdir(sub, 0o700, dir_fd=dfd)
            else:
                raise OSError(f"{base / sub} keeps being replaced")
    finally:
        os.close(dfd)
    return base


def _remove_entry(dfd: int, name: str) -> None:
    """Remove whatever `name` is in the directory `dfd`, never following a link."""
    try:
        os.unlink(name, dir_fd=dfd)
    except FileNotFoundError:
        pass
    except IsADirectoryError:
        shutil.rmtree(name, dir_fd=dfd, ignore_errors=True)


def prepare_mounts(ipc: Path, sockets: Path, names: Iterable[str] = SOCKETS) -> None:
    """Before a sandbox starts: the host-only socket dir, and fresh mount points in /ipc.

    The sockets are served in `sockets` (0700, never mounted), so no unlink, bind or chmod
    of theirs touches a name the agent controls. bwrap binds each over its name in /ipc and
    would create a missing mount point through a link planted there (as the daemon's user),
    so each name in `ipc` is made an empty regular file here, through the directory's fd.
    """
    dfd = os.open(ipc, DIR_FLAGS)
    try:
        for name in names:
            try:
                if stat.S_ISREG(os.lstat(name, dir_fd=dfd).st_mode):
                    continue
                _remove_entry(dfd, name)
            except FileNotFoundError:
                pass
            os.close(os.open(name, NEW_FILE, 0o644, dir_fd=dfd))
    finally:
        os.close(dfd)
    sockets.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(sockets, 0o700)  # below store/: no agent reaches this path
    with contextlib.suppress(FileExistsError):  # bwrap needs a source; the proxy replaces it
        os.close(os.open(sockets / LLM_SOCK, NEW_FILE, 0o600))


def list_names(root: Path, folder: str, sub: str = OUTBOUND) -> list[str]:
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
        dfd = os.open(ipc_dir(root, folder) / OUTBOUND, DIR_FLAGS)
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
    dfd = os.open(ipc_dir(root, folder) / OUTBOUND, DIR_FLAGS)
    try:
        os.unlink(name, dir_fd=dfd)
    except FileNotFoundError:
        pass
    except IsADirectoryError:  # through the fd: a path could follow a swapped-in link
        shutil.rmtree(name, dir_fd=dfd, ignore_errors=True)
    finally:
        os.close(dfd)


def set_aside(root: Path, folder: str, name: str, reason: str) -> None:
    """Move a refused file into errors/ (host-only) with a note of why."""
    set_aside_all(root, folder, [name], reason)


def set_aside_all(root: Path, folder: str, names: Sequence[str], reason: str) -> int:
    """Move files into errors/ as they are (never opened), with one note of why; returns
    how many moved.

    Each kept file gets a name of its own (two agent names may clean to the same one), and
    the note is created new, never opened over something already there (a FIFO would block).
    """
    base = ipc_dir(root, folder)
    src = os.open(base / OUTBOUND, DIR_FLAGS)
    try:
        dst = os.open(base / ERRORS, DIR_FLAGS)
    except OSError:
        os.close(src)
        raise
    stamp = int(time.time() * 1000)
    moved: list[tuple[str, str]] = []
    try:
        for name in names:
            safe = re.sub(r"[^A-Za-z0-9_.-]", "_", name)[:100] or "unnamed"
            target = f"{stamp}-{secrets.token_hex(6)}-{safe}"
            try:
                os.rename(name, target, src_dir_fd=src, dst_dir_fd=dst)
            except FileNotFoundError:
                continue  # gone meanwhile (handled by a concurrent step): nothing to keep
            except OSError:
                _remove_entry(src, name)
            moved.append((name, target))
        if not moved:
            return 0
        shown = [f"{name}: {reason}" for name, _ in moved[:NOTE_NAMES]]
        if len(moved) > NOTE_NAMES:
            shown.append(f"... and {len(moved) - NOTE_NAMES} more files set aside with them")
        note = os.open(f"{moved[0][1]}{NOTE_SUFFIX}", NEW_FILE, 0o600, dir_fd=dst)
        # backslashreplace: a name read from disk may hold undecodable bytes (surrogates)
        with os.fdopen(note, "w", encoding="utf-8", errors="backslashreplace") as fh:
            fh.write("".join(f"{line}\n" for line in shown))
        return len(moved)
    finally:
        os.close(src)
        os.close(dst)


def _write_file(directory: Path, name: str, data: bytes) -> None:
    """Write to a hidden name, then rename over `name` (a planted link is replaced, a
    planted directory removed: neither is followed), all through the directory's fd."""
    dfd = os.open(directory, DIR_FLAGS)
    tmp = f".{name}.{secrets.token_hex(8)}.tmp"
    try:
        with os.fdopen(os.open(tmp, NEW_FILE, 0o644, dir_fd=dfd), "wb") as fh:
            fh.write(data)
        try:
            os.rename(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
        except OSError:  # a directory (or mount point) in the way
            _remove_entry(dfd, name)
            os.rename(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=dfd)
        raise
    finally:
        os.close(dfd)


def _write_json(directory: Path, name: str, payload: dict[str, Any]) -> None:
    _write_file(directory, name, json.dumps(payload, ensure_ascii=False).encode("utf-8"))


def write_input(root: Path, folder: str, name: str, payload: dict[str, Any]) -> None:
    """Host -> agent: a follow-up, written like the agent writes its own files."""
    _write_json(ipc_dir(root, folder) / INPUT, name, payload)


def write_tasks(root: Path, folder: str, payload: dict[str, Any]) -> None:
    """/ipc/tasks.json: the tasks this group's agent may see."""
    _write_json(ipc_dir(root, folder), TASKS_FILE, payload)


def signal_close(root: Path, folder: str) -> None:
    """input/_close: the agent finishes its turn and exits (it watches for the rename)."""
    _write_file(ipc_dir(root, folder) / INPUT, CLOSE, b"")


def signal_pause(root: Path, folder: str, on: bool) -> None:
    """input/_pause while the owner pauses the run; gone again to resume it."""
    directory = ipc_dir(root, folder) / INPUT
    if on:
        _write_file(directory, PAUSE, b"")
        return
    dfd = os.open(directory, DIR_FLAGS)
    try:
        _remove_entry(dfd, PAUSE)
    finally:
        os.close(dfd)


def clear_input(root: Path, folder: str) -> None:
    directory = ipc_dir(root, folder) / INPUT
    dfd = os.open(directory, DIR_FLAGS)
    try:
        for name in os.listdir(dfd):
            try:
                os.unlink(name, dir_fd=dfd)
            except IsADirectoryError:
                shutil.rmtree(name, dir_fd=dfd, ignore_errors=True)
    finally:
        os.close(dfd)


def prune_errors(root: Path, folder: str, limits: FileLimits, now_s: float) -> int:
    """Keep the group's errors/ within `limits` (age, then count, oldest first); returns how
    many entries went. One listing per call: callers prune every so many set-asides."""
    dfd = os.open(ipc_dir(root, folder) / ERRORS, DIR_FLAGS)
    try:
        entries: list[tuple[str, float]] = []
        for name in os.listdir(dfd):
            made = stamp_s(name)
            if made is None:  # not named by set_aside_all: its own time is what we have
                try:
                    made = os.stat(name, dir_fd=dfd, follow_symlinks=False).st_mtime
                except FileNotFoundError:
                    continue
            entries.append((name, made))
        doomed = to_prune(entries, now_s, limits)
        for name in doomed:
            _remove_entry(dfd, name)
        return len(doomed)
    finally:
        os.close(dfd)
