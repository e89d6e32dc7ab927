"""The group's inbox on disk (groups/<folder>/inbox/<YYYY-MM-DD>/), reached only through
directory fds opened with O_NOFOLLOW: a link the agent planted at any step is refused,
never followed; files are created with O_EXCL under a name no file has yet."""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from pathlib import Path

from nanoclaw.media.names import unique

INBOX = "inbox"
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
READ_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
DIR_MODE = 0o770
FILE_MODE = 0o660


class InboxError(Exception):
    """The inbox cannot take a file: a link or a file where a directory must be, or I/O."""


def _subdir(parent: int, name: str) -> int:
    """An fd of directory `name` under `parent`, made if missing; a link there is refused."""
    with contextlib.suppress(FileExistsError):
        os.mkdir(name, DIR_MODE, dir_fd=parent)
    try:
        return os.open(name, DIR_FLAGS, dir_fd=parent)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise InboxError(f"{name} is not a directory (a link?): refused") from exc
        raise InboxError(f"{name}: {exc.strerror or exc}") from exc


def open_day(groups: Path, folder: str, day: str) -> tuple[int, int]:
    """(inbox fd, day fd) for groups/<folder>/inbox/<day>/; the caller closes both."""
    try:
        root = os.open(groups, DIR_FLAGS)
    except OSError as exc:
        raise InboxError(f"{groups}: {exc.strerror or exc}") from exc
    try:
        group = _subdir(root, folder)
    finally:
        os.close(root)
    try:
        inbox = _subdir(group, INBOX)
    finally:
        os.close(group)
    try:
        return inbox, _subdir(inbox, day)
    except BaseException:
        os.close(inbox)
        raise


def usage(inbox: int) -> int:
    """Bytes held in the inbox's regular files, links never followed."""
    total = 0
    for _, _, files, dirfd in os.fwalk(".", dir_fd=inbox, follow_symlinks=False):
        for name in files:
            with contextlib.suppress(OSError):
                st = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
                if stat.S_ISREG(st.st_mode):
                    total += st.st_size
    return total


def _taken(day: int, name: str) -> bool:
    try:
        os.stat(name, dir_fd=day, follow_symlinks=False)
    except FileNotFoundError:
        return False
    except OSError:
        return True
    return True


def create(day: int, name: str) -> tuple[int, str]:
    """A new file under `name` or its first free variant: (write fd, the name it got)."""
    wanted = name
    for _ in range(3):  # another writer may take the free name between the look and O_EXCL
        free = unique(wanted, lambda n: _taken(day, n))
        if free is None:
            break
        try:
            return os.open(free, NEW_FILE, FILE_MODE, dir_fd=day), free
        except FileExistsError:
            continue
        except OSError as exc:
            raise InboxError(f"{free}: {exc.strerror or exc}") from exc
    raise InboxError(f"no free name for {name}")


def remove(day: int, name: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(name, dir_fd=day)


def read(day: int, name: str, cap: int) -> bytes:
    """At most `cap` bytes of a regular file of the day (not a link, not a FIFO)."""
    fd = os.open(name, READ_FILE, dir_fd=day)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise InboxError(f"{name} is not a regular file")
        with os.fdopen(os.dup(fd), "rb") as f:
            return f.read(cap)
    finally:
        os.close(fd)


def write_new(day: int, name: str, data: bytes) -> str:
    """A new file of `data` under `name` or a free variant; the name it got."""
    fd, got = create(day, name)
    try:
        write_all(fd, data)
    finally:
        os.close(fd)
    return got


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
