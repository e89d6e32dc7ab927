"""The `.env` file as nanoclaw writes it: its keys, values set in place, atomic 0600 writes.

Settings read it with python-dotenv (through pydantic-settings), so a value is written the
way dotenv gives it back unchanged: bare when plainly safe, else single-quoted with `\\` and
`'` escaped. Every other line (comments, unknown keys) is kept as it was.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from dotenv import dotenv_values

from nanoclaw.memory import write_atomic

SAFE = re.compile(r"^[A-Za-z0-9_\-.:/@+,~%]+$")
ACTIVE = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=")
COMMENTED = re.compile(r"^\s*#\s*([A-Za-z_][A-Za-z0-9_]*)\s*=")


def env_keys(path: Path) -> list[str]:
    """The keys a .env file sets, in order (read as the settings loader reads it)."""
    return list(dotenv_values(path, encoding="utf-8", interpolate=False))


def quote(value: str) -> str:
    """A value as written after `KEY=`; ValueError for what a .env line cannot hold."""
    if any(c in value for c in "\r\n\0"):
        raise ValueError("a value in .env is one line")
    if "${" in value:  # dotenv expands ${NAME} even inside quotes: no way to write it
        raise ValueError("a value in .env cannot contain '${'")
    if SAFE.match(value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _index(lines: list[str], pattern: re.Pattern[str], key: str) -> list[int]:
    return [i for i, line in enumerate(lines) if (m := pattern.match(line)) and m[1] == key]


def with_values(text: str, values: Mapping[str, str]) -> str:
    """Pure: `text` with each KEY set to its value. An existing line is replaced in place
    (later duplicates, which would win, are dropped); else the setting goes under its
    commented example (`#KEY=...`, as in .env.example); else at the end."""
    lines = text.splitlines()
    for key, value in values.items():
        line = f"{key}={quote(value)}"
        active = _index(lines, ACTIVE, key)
        if active:
            lines[active[0]] = line
            for i in reversed(active[1:]):
                del lines[i]
            continue
        example = _index(lines, COMMENTED, key)
        lines.insert(example[0] + 1 if example else len(lines), line)
    return "\n".join(lines) + "\n"


def write_private(path: Path, text: str) -> None:
    """Replace `path` atomically by a file only its owner can read (it holds the keys)."""
    write_atomic(path, text, mode=0o600)
