"""Export targets and send_file: real files under tmp_path, with the agent planting links."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nanoclaw.errors import IpcRejected
from nanoclaw.ipc.exports import (
    copy_capped,
    copy_from_workspace,
    decode_content,
    format_exports,
    parse_exports,
    relative_parts,
    workspace_parts,
    write_export,
)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    d = tmp_path / "export"
    d.mkdir()
    return d


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    d = tmp_path / "outside"
    d.mkdir()
    (d / "secret.txt").write_text("owner secret\n")
    return d


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    d = tmp_path / "groups" / "work"
    d.mkdir(parents=True)
    return d


def tree(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


def test_parse_exports_good() -> None:
    targets = parse_exports(
        ["reports=/srv/reports", " site-1 = /var/www//site/ ", "a_b=/x/./y", "z=//z"]
    )
    assert targets == {
        "reports": Path("/srv/reports"),
        "site-1": Path("/var/www/site"),
        "a_b": Path("/x/y"),
        "z": Path("/z"),
    }
    assert parse_exports(format_exports(targets)) == targets
    assert format_exports(targets)[0] == "reports=/srv/reports"


@pytest.mark.parametrize(
    "entry",
    [
        "reports",
        "",
        "=/srv/x",
        "Reports=/srv/x",
        "_x=/srv/x",
        "a" * 33 + "=/srv/x",
        "a.b=/srv/x",
        "x=srv/x",
        "x=",
        "x=/",
        "x=//",
        "x=/srv/../etc",
    ],
)
def test_parse_exports_bad(entry: str) -> None:
    with pytest.raises(ValueError, match="export") as info:
        parse_exports([entry])
    assert repr(entry) in str(info.value)


def test_parse_exports_duplicate_name() -> None:
    with pytest.raises(ValueError, match="twice"):
        parse_exports(["x=/a", "x=/b"])


def test_relative_parts_good() -> None:
    assert relative_parts("a/b/c.txt") == ("a", "b", "c.txt")
    assert relative_parts("..hidden/x..y") == ("..hidden", "x..y")
    assert relative_parts("/".join(["d"] * 32)) == ("d",) * 32


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("", "empty"),
        ("../x", r"'\.\.'"),
        ("a/../../b", r"'\.\.'"),
        ("a/..", r"'\.\.'"),
        ("/etc/passwd", "relative"),
        ("a//b", "empty or '.'"),
        ("a/", "empty or '.'"),
        ("./a", "empty or '.'"),
        ("a\x00b", "NUL"),
        ("a\\..\\b", "backslash"),
        ("/".join(["d"] * 33), "more than 32"),
        ("x" * 1025, "1024 bytes"),
        ("é" * 513, "1024 bytes"),
        ("a\udcffb", "UTF-8"),
    ],
)
def test_relative_parts_refused(path: str, reason: str) -> None:
    with pytest.raises(IpcRejected, match=reason):
        relative_parts(path)


@pytest.mark.parametrize(
    ("path", "parts"),
    [("/workspace/a/b.txt", ("a", "b.txt")), ("a/b.txt", ("a", "b.txt")), ("b", ("b",))],
)
def test_workspace_parts(path: str, parts: tuple[str, ...]) -> None:
    assert workspace_parts(path) == parts


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("/etc/passwd", "under /workspace"),
        ("/workspace", "under /workspace"),
        ("/workspacex/a", "under /workspace"),
        ("/workspace/../etc/passwd", r"'\.\.'"),
        ("/workspace//etc/passwd", "relative"),
        ("/workspace/", "empty"),
    ],
)
def test_workspace_parts_refused(path: str, reason: str) -> None:
    with pytest.raises(IpcRejected, match=reason):
        workspace_parts(path)


def test_decode_content() -> None:
    assert decode_content("héllo", "utf-8") == "héllo".encode()
    assert decode_content(base64.b64encode(b"\x00\xff").decode(), "base64") == b"\x00\xff"
    assert decode_content("", "base64") == b""


@pytest.mark.parametrize("content", ["abc", "ab$=", "YWJj\nZA==", "YQ", "é"])
def test_decode_content_bad_base64(content: str) -> None:
    with pytest.raises(IpcRejected, match="base64"):
        decode_content(content, "base64")


@pytest.mark.parametrize("encoding", ["latin-1", "UTF-8", "hex", ""])
def test_decode_content_unknown_encoding(encoding: str) -> None:
    with pytest.raises(IpcRejected, match="encoding must be one of"):
        decode_content("x", encoding)


def test_write_creates_nested_dirs(root: Path) -> None:
    path = write_export(root, "2024/03/report.md", b"# Report\n")
    assert path == root / "2024" / "03" / "report.md"
    assert path.read_bytes() == b"# Report\n"
    assert tree(root) == ["2024", "2024/03", "2024/03/report.md"]
    assert (root / "2024").stat().st_mode & 0o777 == 0o755 & ~current_umask()


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_write_replaces_whole_and_atomically(root: Path) -> None:
    (root / "f.txt").write_bytes(b"old content that is much longer than the new one\n")
    before = (root / "f.txt").stat().st_ino
    write_export(root, "f.txt", b"new\n")
    assert (root / "f.txt").read_bytes() == b"new\n"
    assert (root / "f.txt").stat().st_ino != before
    assert tree(root) == ["f.txt"]


def test_write_empty_file(root: Path) -> None:
    assert write_export(root, "empty", b"").read_bytes() == b""


def test_missing_root_refused(tmp_path: Path) -> None:
    with pytest.raises(IpcRejected, match=r"export target .* does not exist"):
        write_export(tmp_path / "gone", "a.txt", b"x")
    assert not (tmp_path / "gone").exists()


def test_root_that_is_a_file_refused(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(IpcRejected, match="export target"):
        write_export(tmp_path / "file", "a.txt", b"x")


@pytest.mark.parametrize("rel", ["../x", "/etc/passwd", "a/../../b", "a/./b"])
def test_write_hostile_paths_refused(root: Path, tmp_path: Path, rel: str) -> None:
    with pytest.raises(IpcRejected):
        write_export(root, rel, b"pwned")
    assert tree(root) == []
    assert not (tmp_path / "x").exists() and not (tmp_path / "b").exists()


@pytest.mark.parametrize("rel", ["link/x.txt", "link/deeper/x.txt", "a/link/x.txt"])
def test_symlinked_dir_component_refused(root: Path, outside: Path, rel: str) -> None:
    link_parent = root / "a" if rel.startswith("a/") else root
    link_parent.mkdir(exist_ok=True)
    (link_parent / "link").symlink_to(outside)
    with pytest.raises(IpcRejected, match="link is a symbolic link"):
        write_export(root, rel, b"pwned")
    assert tree(outside) == ["secret.txt"]
    assert (outside / "secret.txt").read_text() == "owner secret\n"


def test_symlinked_final_name_refused(root: Path, outside: Path) -> None:
    (root / "notes.txt").symlink_to(outside / "secret.txt")
    with pytest.raises(IpcRejected, match=r"notes\.txt is a symbolic link"):
        write_export(root, "notes.txt", b"pwned")
    assert (outside / "secret.txt").read_text() == "owner secret\n"
    assert (root / "notes.txt").is_symlink()
    assert tree(root) == ["notes.txt"]


def test_dangling_symlink_final_name_refused(root: Path, outside: Path) -> None:
    (root / "new.txt").symlink_to(outside / "created.txt")
    with pytest.raises(IpcRejected, match="symbolic link"):
        write_export(root, "new.txt", b"pwned")
    assert not (outside / "created.txt").exists()


def test_dir_at_final_name_refused(root: Path) -> None:
    (root / "d" / "report.md").mkdir(parents=True)
    (root / "d" / "report.md" / "inner").write_text("keep")
    with pytest.raises(IpcRejected, match="not a regular file"):
        write_export(root, "d/report.md", b"x")
    assert (root / "d" / "report.md" / "inner").read_text() == "keep"


def test_file_at_dir_component_refused(root: Path) -> None:
    (root / "a").write_text("a file")
    with pytest.raises(IpcRejected, match="a is not a directory"):
        write_export(root, "a/b.txt", b"x")
    assert (root / "a").read_text() == "a file"


def test_fifo_at_final_name_refused(root: Path) -> None:
    os.mkfifo(root / "pipe")
    with pytest.raises(IpcRejected, match="not a regular file"):
        write_export(root, "pipe", b"x")


def test_size_cap_exceeded_leaves_nothing(root: Path) -> None:
    (root / "f.txt").write_bytes(b"old")
    with pytest.raises(IpcRejected, match="more than 10"):
        write_export(root, "sub/f.txt", b"x" * 11, cap=10)
    with pytest.raises(IpcRejected, match="more than 10"):
        write_export(root, "f.txt", b"x" * 11, cap=10)
    assert tree(root) == ["f.txt"]
    assert (root / "f.txt").read_bytes() == b"old"
    assert write_export(root, "f.txt", b"x" * 10, cap=10).read_bytes() == b"x" * 10


WRITE_UNDER_FSIZE_LIMIT = """
import resource, signal, sys
from pathlib import Path
from nanoclaw.errors import IpcRejected
from nanoclaw.ipc.exports import write_export
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (1000, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
try:
    write_export(Path(sys.argv[1]), "f.txt", b"n" * 5000)
except IpcRejected as exc:
    print(exc)
"""


def test_failed_write_keeps_old_file_and_no_temp(root: Path) -> None:
    # The disk "fills up" mid-write (RLIMIT_FSIZE): the old file stays whole, the temp goes.
    (root / "f.txt").write_bytes(b"old\n")
    done = subprocess.run(
        [sys.executable, "-c", WRITE_UNDER_FSIZE_LIMIT, str(root)],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert "f.txt cannot be written" in done.stdout
    assert (root / "f.txt").read_bytes() == b"old\n"
    assert tree(root) == ["f.txt"]


def test_send_file_absolute_and_relative(workspace: Path, tmp_path: Path) -> None:
    (workspace / "a").mkdir()
    (workspace / "a" / "b.txt").write_bytes(b"hello\n")
    out = tmp_path / "out"
    out.mkdir()
    assert copy_from_workspace(workspace, "/workspace/a/b.txt", out / "1") == ("b.txt", 6)
    assert copy_from_workspace(workspace, "a/b.txt", out / "2") == ("b.txt", 6)
    assert (out / "1").read_bytes() == (out / "2").read_bytes() == b"hello\n"
    assert (out / "1").stat().st_mode & 0o077 == 0


def test_send_file_large_streamed(workspace: Path, tmp_path: Path) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    (workspace / "big.bin").write_bytes(data)
    assert copy_from_workspace(workspace, "big.bin", tmp_path / "o") == ("big.bin", len(data))
    assert (tmp_path / "o").read_bytes() == data


def test_send_file_symlinked_file_refused(workspace: Path, outside: Path, tmp_path: Path) -> None:
    (workspace / "s.txt").symlink_to(outside / "secret.txt")
    with pytest.raises(IpcRejected, match=r"s\.txt is a symbolic link"):
        copy_from_workspace(workspace, "/workspace/s.txt", tmp_path / "o")
    assert not (tmp_path / "o").exists()


def test_send_file_symlinked_dir_refused(workspace: Path, outside: Path, tmp_path: Path) -> None:
    (workspace / "d").symlink_to(outside)
    with pytest.raises(IpcRejected, match="d is a symbolic link"):
        copy_from_workspace(workspace, "d/secret.txt", tmp_path / "o")
    assert not (tmp_path / "o").exists()


@pytest.mark.timeout(10)
def test_send_file_fifo_refused_without_blocking(workspace: Path, tmp_path: Path) -> None:
    os.mkfifo(workspace / "pipe")
    with pytest.raises(IpcRejected, match="not a regular file"):
        copy_from_workspace(workspace, "pipe", tmp_path / "o")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("/etc/passwd", "must be under /workspace"),
        ("../outside/secret.txt", r"'\.\.'"),
        ("/workspace/../outside/secret.txt", r"'\.\.'"),
        ("missing.txt", "does not exist"),
        ("nodir/x.txt", "does not exist"),
        ("sub", "not a regular file"),
    ],
)
def test_send_file_refused(workspace: Path, outside: Path, path: str, reason: str) -> None:
    (workspace / "sub").mkdir()
    dest = workspace.parent / "o"
    with pytest.raises(IpcRejected, match=reason):
        copy_from_workspace(workspace, path, dest)
    assert not dest.exists()
    assert not (workspace / "nodir").exists()


def test_send_file_over_cap(workspace: Path, tmp_path: Path) -> None:
    (workspace / "f").write_bytes(b"x" * 11)
    with pytest.raises(IpcRejected, match="more than 10"):
        copy_from_workspace(workspace, "f", tmp_path / "o", cap=10)
    assert not (tmp_path / "o").exists()
    assert copy_from_workspace(workspace, "f", tmp_path / "o", cap=11) == ("f", 11)


def test_growing_source_stops_reading_at_cap(tmp_path: Path) -> None:
    # A pipe stands in for a file that grew after fstat: it holds more than the cap.
    r, w = os.pipe()
    try:
        os.write(w, b"x" * 15)
        os.close(w)
        with pytest.raises(IpcRejected, match="grew past 10 bytes"):
            copy_capped(r, tmp_path / "o", 10, "grow")
        assert os.read(r, 100) == b"x" * 4
    finally:
        os.close(r)
    assert not (tmp_path / "o").exists()


def test_copy_capped_exact_cap(tmp_path: Path) -> None:
    r, w = os.pipe()
    try:
        os.write(w, b"y" * 10)
        os.close(w)
        assert copy_capped(r, tmp_path / "o", 10) == 10
    finally:
        os.close(r)
    assert (tmp_path / "o").read_bytes() == b"y" * 10


def test_dest_not_overwritten(workspace: Path, tmp_path: Path) -> None:
    (workspace / "f").write_bytes(b"x")
    (tmp_path / "o").write_bytes(b"keep")
    with pytest.raises(FileExistsError):
        copy_from_workspace(workspace, "f", tmp_path / "o")
    assert (tmp_path / "o").read_bytes() == b"keep"
