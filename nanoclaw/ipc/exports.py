"""Files crossing the sandbox wall: write_file into declared export targets, send_file out.

The agent may plant symlinks in /workspace and in any export target it has written to, so
every walk goes one component at a time through directory fds opened with O_NOFOLLOW,
and a write lands by an atomic rename inside the directory fd it was checked in.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import os
import re
import secrets
import stat
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from nanoclaw.errors import IpcRejected

EXPORT_CAP = 10 * 1024 * 1024
SEND_CAP = 50 * 1024 * 1024
SPARSE_MIN = 1024 * 1024  # smaller files are sent whatever their holes
MAX_PARTS = 32
MAX_PATH_BYTES = 1024
WORKSPACE = "/workspace"
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
CHUNK = 1024 * 1024


def parse_exports(entries: Iterable[str]) -> dict[str, Path]:
    """Owner configuration "name=/absolute/host/dir" -> {name: dir}; ValueError names a bad one."""
    targets: dict[str, Path] = {}
    for entry in entries:
        name, sep, raw = (part.strip() for part in entry.partition("="))
        if not sep:
            raise ValueError(f"export {entry!r} is not name=/absolute/dir")
        if not NAME_RE.match(name):
            raise ValueError(f"export {entry!r}: name must match {NAME_RE.pattern}")
        if not raw.startswith("/"):
            raise ValueError(f"export {entry!r}: the directory must be an absolute path")
        if ".." in raw.split("/"):
            raise ValueError(f"export {entry!r}: the directory must not contain '..'")
        path = "/" + os.path.normpath(raw).lstrip("/")
        if path == "/":
            raise ValueError(f"export {entry!r}: exporting / is not allowed")
        if name in targets:
            raise ValueError(f"export {entry!r}: the name {name!r} is declared twice")
        targets[name] = Path(path)
    return targets


def format_exports(targets: Mapping[str, Path]) -> tuple[str, ...]:
    """The inverse of parse_exports, as stored in the group's row."""
    return tuple(f"{name}={path}" for name, path in targets.items())


def relative_parts(path: str) -> tuple[str, ...]:
    """The components of an agent-given relative path, refusing anything that could escape."""
    shown = repr(path[:80])
    if not path:
        raise IpcRejected("path is empty")
    if "\x00" in path:
        raise IpcRejected(f"path {shown} contains a NUL byte")
    if "\\" in path:
        raise IpcRejected(f"path {shown} contains a backslash")
    try:
        size = len(path.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise IpcRejected(f"path {shown} is not valid UTF-8") from exc
    if size > MAX_PATH_BYTES:
        raise IpcRejected(f"path is longer than {MAX_PATH_BYTES} bytes")
    if path.startswith("/"):
        raise IpcRejected(f"path {shown} must be relative")
    parts = tuple(path.split("/"))
    if len(parts) > MAX_PARTS:
        raise IpcRejected(f"path has more than {MAX_PARTS} components")
    for part in parts:
        if part == "..":
            raise IpcRejected(f"path {shown} contains '..'")
        if part in ("", "."):
            raise IpcRejected(f"path {shown} has an empty or '.' component")
    return parts


def workspace_parts(path: str) -> tuple[str, ...]:
    """send_file's path, "/workspace/..." or relative to it, as components below /workspace."""
    if path.startswith("/"):
        if not path.startswith(WORKSPACE + "/"):
            raise IpcRejected("send_file path must be under /workspace")
        path = path[len(WORKSPACE) + 1 :]
    return relative_parts(path)


def decode_content(content: str, encoding: str) -> bytes:
    """write_file's content as bytes: UTF-8 text or strictly valid base64."""
    if encoding == "utf-8":
        try:
            return content.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise IpcRejected("content is not valid UTF-8") from exc
    if encoding == "base64":
        try:
            return base64.b64decode(content, validate=True)
        except ValueError as exc:
            raise IpcRejected(f"content is not valid base64: {exc}") from exc
    raise IpcRejected(f"encoding must be one of utf-8, base64, not {encoding[:40]!r}")


def _why(dir_fd: int, name: str, shown: str, exc: OSError) -> str:
    """A human reason for a failed open of `name`, looking at what is really there."""
    if exc.errno == errno.ENOENT:
        return f"{shown} does not exist"
    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
        try:
            st = os.lstat(name, dir_fd=dir_fd)
        except OSError:
            return f"{shown} changed while it was opened"
        if stat.S_ISLNK(st.st_mode):
            return f"{shown} is a symbolic link; links are never followed"
        if not stat.S_ISDIR(st.st_mode):
            return f"{shown} is not a directory"
    return f"{shown} cannot be opened: {exc.strerror}"


def _open_dir(dir_fd: int, name: str, shown: str, create: bool) -> int:
    try:
        return os.open(name, DIR_FLAGS, dir_fd=dir_fd)
    except FileNotFoundError:
        if not create:
            raise IpcRejected(f"{shown} does not exist") from None
    except OSError as exc:
        raise IpcRejected(_why(dir_fd, name, shown, exc)) from exc
    try:
        os.mkdir(name, 0o755, dir_fd=dir_fd)
    except FileExistsError:
        pass  # made meanwhile: the open below still refuses a link
    except OSError as exc:
        raise IpcRejected(f"{shown} cannot be created: {exc.strerror}") from exc
    try:
        return os.open(name, DIR_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        raise IpcRejected(_why(dir_fd, name, shown, exc)) from exc


def _descend(fd: int, names: Sequence[str], create: bool) -> int:
    """Walk down `names` from the directory `fd` (taken over), never following a link."""
    try:
        for i, name in enumerate(names):
            nxt = _open_dir(fd, name, "/".join(names[: i + 1]), create)
            os.close(fd)
            fd = nxt
    except BaseException:
        os.close(fd)
        raise
    return fd


def _open_root(root: Path, what: str) -> int:
    """The owner-chosen top directory, which may itself be a link the owner made."""
    try:
        return os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise IpcRejected(f"{what} {root} does not exist") from None
    except OSError as exc:
        raise IpcRejected(f"{what} {root} cannot be opened: {exc.strerror}") from exc


def write_export(root: Path, rel: str, data: bytes, cap: int = EXPORT_CAP) -> Path:
    """Write `data` to root/rel atomically, creating directories; refuse links on the way."""
    parts = relative_parts(rel)
    if len(data) > cap:
        raise IpcRejected(f"write_file content is {len(data)} bytes, more than {cap}")
    name = parts[-1]
    dfd = _descend(_open_root(root, "export target"), parts[:-1], create=True)
    try:
        try:
            mode = os.lstat(name, dir_fd=dfd).st_mode
        except FileNotFoundError:
            mode = stat.S_IFREG
        if stat.S_ISLNK(mode):
            raise IpcRejected(f"{rel} is a symbolic link; links are never followed")
        if not stat.S_ISREG(mode):
            raise IpcRejected(f"{rel} exists and is not a regular file")
        tmp = f".nanoclaw-{secrets.token_hex(8)}.tmp"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            with os.fdopen(os.open(tmp, flags, 0o644, dir_fd=dfd), "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.rename(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
            os.fsync(dfd)
        except BaseException as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=dfd)
            if isinstance(exc, OSError):
                raise IpcRejected(f"{rel} cannot be written: {exc.strerror}") from exc
            raise
    finally:
        os.close(dfd)
    return root.joinpath(*parts)


def sparse(size: int, blocks: int) -> bool:
    """Whether a file has far fewer bytes on disk than it claims (holes a copy would fill)."""
    return size > SPARSE_MIN and blocks * 512 < size // 2


def copy_from_workspace(
    workspace: Path, path: str, dest: Path, cap: int = SEND_CAP, room: int | None = None
) -> tuple[str, int]:
    """Copy a regular file of the workspace into `dest` (created here); (file name, size).

    `room`: the bytes still free for this group's files waiting to be sent.
    """
    parts = workspace_parts(path)
    name, shown = parts[-1], "/".join(parts)
    dfd = _descend(_open_root(workspace, "workspace"), parts[:-1], create=False)
    try:
        try:
            src = os.open(
                name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dfd
            )
        except OSError as exc:
            raise IpcRejected(_why(dfd, name, shown, exc)) from exc
    finally:
        os.close(dfd)
    try:
        st = os.fstat(src)
        if not stat.S_ISREG(st.st_mode):
            raise IpcRejected(f"{shown} is not a regular file")
        if st.st_size > cap:
            raise IpcRejected(f"{shown} is {st.st_size} bytes, more than {cap}")
        if sparse(st.st_size, st.st_blocks):
            raise IpcRejected(
                f"{shown} is sparse ({st.st_blocks * 512} of its {st.st_size} bytes are on "
                "disk); sparse files are not sent: write the data out, or compress it"
            )
        if room is not None and st.st_size > room:
            raise IpcRejected(
                f"{shown} is {st.st_size} bytes, but the group's files waiting to be sent "
                f"leave room for {max(room, 0)}; send it once they are delivered"
            )
        return name, copy_capped(src, dest, cap if room is None else min(cap, room), shown)
    finally:
        os.close(src)


def copy_capped(src: int, dest: Path, cap: int, shown: str = "file") -> int:
    """Stream fd `src` into a new file `dest`; a source growing past the cap is refused."""
    out = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    total = 0
    try:
        with os.fdopen(out, "wb") as fh:
            while chunk := os.read(src, min(CHUNK, cap + 1 - total)):
                total += len(chunk)
                if total > cap:
                    raise IpcRejected(f"{shown} grew past {cap} bytes while it was read")
                fh.write(chunk)
    except BaseException as exc:
        dest.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise IpcRejected(f"{shown} cannot be copied: {exc.strerror}") from exc
        raise
    return total
