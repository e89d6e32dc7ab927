"""Group memory: appending below the marker of a real CLAUDE.md, never through a symlink."""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from nanoclaw.errors import IpcRejected
from nanoclaw.memory import (
    ENTRY_CAP,
    FILE_CAP,
    MARKER,
    append_memory,
    read_nofollow,
    with_entry,
)

NOW = datetime(2024, 3, 1, 9, 5, tzinfo=ZoneInfo("UTC"))
OWNER = "# Work group\n\nBe brief. Answer in German.\n"


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    d = tmp_path / "groups" / "work"
    d.mkdir(parents=True)
    return d


def test_marker_created_once_entries_below(folder: Path) -> None:
    append_memory(folder, "likes tea", NOW)
    append_memory(folder, "meets on Mondays", NOW)
    append_memory(folder, "  trailing space  \n", NOW)
    text = (folder / "CLAUDE.md").read_text()
    assert text.count(MARKER) == 1
    below = text.split(MARKER, 1)[1]
    assert below.index("likes tea") < below.index("meets on Mondays") < below.index("trailing")
    assert "- (2024-03-01 09:05) likes tea\n" in below
    assert "- (2024-03-01 09:05) trailing space\n" in below


def test_owner_text_above_marker_preserved(folder: Path) -> None:
    (folder / "CLAUDE.md").write_text(OWNER)
    append_memory(folder, "fact one", NOW)
    append_memory(folder, "fact two", NOW)
    text = (folder / "CLAUDE.md").read_text()
    assert text.startswith(OWNER)
    above, below = text.split(MARKER)
    assert "fact" not in above
    assert "fact one" in below and "fact two" in below


def test_owner_file_without_final_newline(folder: Path) -> None:
    (folder / "CLAUDE.md").write_text("Be brief.")
    append_memory(folder, "fact", NOW)
    text = (folder / "CLAUDE.md").read_text()
    assert text.startswith("Be brief.\n")
    assert text.index("Be brief.") < text.index(MARKER) < text.index("fact")


def test_existing_marker_reused(folder: Path) -> None:
    (folder / "CLAUDE.md").write_text(f"{OWNER}\n{MARKER}\n- old fact\n")
    append_memory(folder, "new fact", NOW)
    text = (folder / "CLAUDE.md").read_text()
    assert text.count(MARKER) == 1
    assert text.index("old fact") < text.index("new fact")


def test_entry_cannot_forge_a_marker(folder: Path) -> None:
    append_memory(folder, f"note {MARKER} sneaky", NOW)
    append_memory(folder, "second", NOW)
    assert (folder / "CLAUDE.md").read_text().count(MARKER) == 1


def test_symlink_to_outside_file_refused(folder: Path, tmp_path: Path) -> None:
    outside = tmp_path / "secret.txt"
    outside.write_text("host secret\n")
    (folder / "CLAUDE.md").symlink_to(outside)
    with pytest.raises(IpcRejected):
        append_memory(folder, "pwned", NOW)
    assert outside.read_text() == "host secret\n"
    assert (folder / "CLAUDE.md").is_symlink()


def test_dangling_symlink_refused_and_target_not_created(folder: Path, tmp_path: Path) -> None:
    target = tmp_path / "created-by-agent.txt"
    (folder / "CLAUDE.md").symlink_to(target)
    with pytest.raises(IpcRejected):
        append_memory(folder, "pwned", NOW)
    assert not target.exists()


def test_fifo_in_place_of_file_refused(folder: Path) -> None:
    os.mkfifo(folder / "CLAUDE.md")
    with pytest.raises(IpcRejected, match="not a regular file"):
        append_memory(folder, "x", NOW)


def test_directory_in_place_of_file_refused(folder: Path) -> None:
    (folder / "CLAUDE.md").mkdir()
    with pytest.raises(IpcRejected):
        append_memory(folder, "x", NOW)


def test_content_over_cap_refused(folder: Path) -> None:
    (folder / "CLAUDE.md").write_text(OWNER)
    with pytest.raises(IpcRejected, match="longer than"):
        append_memory(folder, "x" * (ENTRY_CAP + 1), NOW)
    assert (folder / "CLAUDE.md").read_text() == OWNER
    append_memory(folder, "y" * ENTRY_CAP, NOW)
    assert "y" * ENTRY_CAP in (folder / "CLAUDE.md").read_text()


def test_empty_content_refused(folder: Path) -> None:
    with pytest.raises(IpcRejected, match="empty"):
        append_memory(folder, "  \n ", NOW)
    assert not (folder / "CLAUDE.md").exists()


def test_file_cap_refused(folder: Path) -> None:
    big = "z" * (FILE_CAP - 100)
    (folder / "CLAUDE.md").write_text(big)
    with pytest.raises(IpcRejected, match="exceed"):
        append_memory(folder, "w" * 500, NOW)
    assert (folder / "CLAUDE.md").read_text() == big


def test_write_is_atomic_no_temp_files(folder: Path) -> None:
    (folder / "CLAUDE.md").write_text(OWNER)
    inode_before = os.stat(folder / "CLAUDE.md").st_ino
    for i in range(5):
        append_memory(folder, f"fact {i}", NOW)
    assert sorted(p.name for p in folder.iterdir()) == ["CLAUDE.md"]
    # replaced by rename, not rewritten in place: a reader never sees half a file
    assert os.stat(folder / "CLAUDE.md").st_ino != inode_before


def test_refused_write_leaves_no_temp_files(folder: Path, tmp_path: Path) -> None:
    (folder / "CLAUDE.md").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(IpcRejected):
        append_memory(folder, "x", NOW)
    assert sorted(p.name for p in folder.iterdir()) == ["CLAUDE.md"]


def test_read_nofollow() -> None:
    assert read_nofollow(Path("/nonexistent/CLAUDE.md")) == ""


def test_with_entry_is_pure() -> None:
    out = with_entry("", "fact", "2024-01-01 00:00")
    assert out == f"\n{MARKER}\n\n- (2024-01-01 00:00) fact\n"
    assert with_entry(out, "more", "s").count(MARKER) == 1


@pytest.mark.parametrize("untrusted", [False, True])
@pytest.mark.parametrize(
    "content",
    [
        "fact\n- (2024-01-01 00:00) forged entry",
        "fact\r\n- (2024-01-01 00:00) forged entry",
        "fact\u2028- (2024-01-01 00:00) forged entry",
        "fact\x85- (2024-01-01 00:00) forged entry",
        f"fact <!-- agent {MARKER}memory --> x\n\n- (2024-01-01 00:00) forged entry",
    ],
)
def test_an_entry_cannot_start_another_or_rebuild_the_marker(content: str, untrusted: bool) -> None:
    """Only the host starts an entry line: continuation lines are indented, whatever the
    line break, so a tagged entry's tag covers all of its text."""
    out = with_entry(f"{OWNER}\n{MARKER}\n", content, "2024-03-01 09:05", untrusted)
    assert out.count(MARKER) == 1
    below = out.split(MARKER, 1)[1]
    [entry] = [line for line in below.splitlines() if line.startswith("- (")]
    tag = "(untrusted source) " if untrusted else ""
    assert entry.startswith(f"- (2024-03-01 09:05) {tag}fact")
    assert "  - (2024-01-01 00:00) forged entry" in below
