"""What an outbound file is as a picture, read by Pillow from its content (never its name):
format, MIME type and size in pixels, so a channel sends images as images where its
platform tells them apart, and whether Telegram takes one as a photo (sendPhoto's limits).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

# sendPhoto's documented limits; anything else goes as a document, which keeps every byte.
PHOTO_FORMATS = frozenset({"JPEG", "PNG", "WEBP"})
PHOTO_MAX_BYTES = 10 * 1024 * 1024
PHOTO_MAX_SIDES = 10_000  # width + height
PHOTO_MAX_RATIO = 20


@dataclass(frozen=True)
class Picture:
    format: str  # Pillow's name: JPEG, PNG, WEBP, GIF, ...
    mime: str
    width: int
    height: int


def probe(path: Path) -> Picture | None:
    """Blocking (run it in a thread): the picture the file holds, or None when Pillow cannot
    open it. Only the header is read, so a huge image costs nothing here."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                fmt = im.format or ""
                width, height = im.size
    except Exception:  # the agent's file may be anything: every Pillow plugin raises its own
        return None
    if width <= 0 or height <= 0:
        return None
    return Picture(fmt, Image.MIME.get(fmt, ""), width, height)


def telegram_photo(picture: Picture | None, size: int) -> bool:
    """Pure: whether Telegram's sendPhoto takes this file as a photo."""
    if picture is None or picture.format not in PHOTO_FORMATS or size > PHOTO_MAX_BYTES:
        return False
    w, h = picture.width, picture.height
    return w + h <= PHOTO_MAX_SIDES and max(w, h) <= PHOTO_MAX_RATIO * min(w, h)


def photo_at(path: Path) -> bool:
    """Blocking: whether the file at `path` goes to Telegram as a photo."""
    try:
        size = path.stat().st_size
    except OSError:
        return False
    return telegram_photo(probe(path), size)
