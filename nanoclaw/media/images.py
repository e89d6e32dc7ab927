"""Images for the model, host side (Pillow): probe what a saved picture is, and make a copy
within the model's limits when it is too large or in a format the model does not take.
An undecodable "image", or one too large to decode safely, is refused with a reason."""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

# Anthropic's limits for an image block: past a long edge of 1568 px the API scales the
# image down anyway (slower, same tokens); past 5 MB per image it refuses the request.
MODEL_LONG_EDGE = 1568
MODEL_MAX_BYTES = 5 * 1024 * 1024
# What one request may carry through the model proxy (a 4 MiB body, base64 adds a third):
# an original larger than this is sent as a smaller JPEG copy.
SEND_MAX_BYTES = 1536 * 1024
MAX_PIXELS = 60_000_000  # decoding more (a "decompression bomb") costs the host too much
MODEL_FORMATS = {"JPEG": "image/jpeg", "PNG": "image/png", "GIF": "image/gif", "WEBP": "image/webp"}
COPY_QUALITY = (85, 70, 50)


@dataclass(frozen=True)
class Probed:
    width: int
    height: int
    copy: bytes | None = None  # a JPEG for the model; None when the original fits as it is
    problem: str = ""  # why the model cannot see it ("" when it can)


def fits(fmt: str | None, width: int, height: int, size: int) -> bool:
    """Pure: whether the model takes the image as it is."""
    return fmt in MODEL_FORMATS and max(width, height) <= MODEL_LONG_EDGE and size <= SEND_MAX_BYTES


def scaled(width: int, height: int, edge: int = MODEL_LONG_EDGE) -> tuple[int, int]:
    """Pure: the size with the long edge at most `edge`, aspect kept, never 0."""
    long = max(width, height)
    if long <= edge:
        return width, height
    return max(1, round(width * edge / long)), max(1, round(height * edge / long))


def probe(data: bytes) -> Probed:
    """What `data` is as an image, with a copy for the model when the original does not fit."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                width, height = img.size
                if width * height > MAX_PIXELS:
                    return Probed(width, height, problem=f"too large to decode ({width}x{height})")
                img.load()
                if fits(img.format, width, height, len(data)):
                    return Probed(width, height)
                return Probed(width, height, copy=_copy(img))
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Warning) as exc:
        return Probed(0, 0, problem=f"not a readable image ({type(exc).__name__})")


def _copy(img: Image.Image) -> bytes:
    """A JPEG within the model's limits."""
    frame = img.convert("RGB")
    frame = frame.resize(scaled(*frame.size), Image.Resampling.LANCZOS)
    out = b""
    for quality in COPY_QUALITY:
        buf = io.BytesIO()
        frame.save(buf, "JPEG", quality=quality)
        out = buf.getvalue()
        if len(out) <= SEND_MAX_BYTES:
            break
    return out
