"""Safe file names for the inbox, as pure functions: whatever a sender or platform calls a
file, the saved name is one path component with no control, bidi or reserved characters,
bounded in length, never hidden, never a Windows device name."""

from __future__ import annotations

import unicodedata
from collections.abc import Callable

from nanoclaw.models import MediaKind

MAX_NAME_BYTES = 120  # UTF-8 bytes, well below NAME_MAX (255)
MAX_EXT_CHARS = 10
UNSAFE = frozenset('/\\:*?"<>|')
WINDOWS_RESERVED = frozenset(
    {"con", "prn", "aux", "nul"} | {f"com{i}" for i in range(10)} | {f"lpt{i}" for i in range(10)}
)
DEFAULT_STEM: dict[MediaKind, str] = {
    "image": "photo",
    "voice": "voice",
    "audio": "audio",
    "video": "video",
    "file": "file",
}
MIME_EXT = {
    "image/jpeg": ".jpg",
    "image/png": ".png",
    "image/gif": ".gif",
    "image/webp": ".webp",
    "audio/ogg": ".ogg",
    "audio/mpeg": ".mp3",
    "audio/mp4": ".m4a",
    "video/mp4": ".mp4",
    "application/pdf": ".pdf",
}


def _char(c: str) -> str:
    if c in UNSAFE:
        return "_"
    category = unicodedata.category(c)
    # Cc: control (NUL, newline...); Cf: format (bidi overrides, zero-width); Zl/Zp: breaks;
    # Cs/Co/Cn: surrogates, private use, unassigned: none belongs in a name a person reads
    if category in ("Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"):
        return ""
    return " " if category.startswith("Z") else c


def _cut(text: str, limit: int) -> str:
    """The longest prefix of `text` within `limit` UTF-8 bytes."""
    return text.encode("utf-8")[:limit].decode("utf-8", errors="ignore")


def sanitise(name: str, kind: MediaKind, mime: str = "") -> str:
    """Pure: the name to save an attachment under (no directory part, never empty)."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    clean = " ".join("".join(_char(c) for c in unicodedata.normalize("NFC", base)).split())
    clean = clean.strip(". ")  # no hidden file, no "." or "..", no trailing dot (Windows)
    stem, dot, ext = clean.rpartition(".")
    if not dot or not stem or len(ext) > MAX_EXT_CHARS or not ext.isalnum():
        stem, ext = clean, ""
    ext = f".{ext.lower()}" if ext else MIME_EXT.get(mime.lower(), "")
    stem = stem.strip(". ")
    if stem.split(".")[0].lower() in WINDOWS_RESERVED:
        stem = f"_{stem}"
    stem = _cut(stem, MAX_NAME_BYTES - len(ext.encode())).strip(". ")
    return f"{stem or DEFAULT_STEM[kind]}{ext}"


def numbered(name: str, n: int) -> str:
    """Pure: the n-th alternative to a name already taken ("photo.jpg" -> "photo-2.jpg")."""
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem:
        stem, ext = name, ""
    suffix = f"-{n}" + (f".{ext}" if ext else "")
    return _cut(stem, MAX_NAME_BYTES - len(suffix.encode())) + suffix


def unique(name: str, taken: Callable[[str], bool], tries: int = 1000) -> str | None:
    """The first of name, name-2, name-3... that `taken` says is free; None when none is."""
    for n in range(1, tries + 1):
        candidate = name if n == 1 else numbered(name, n)
        if not taken(candidate):
            return candidate
    return None
