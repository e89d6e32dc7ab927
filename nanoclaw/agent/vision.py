"""Images for the model request, standard library only: the host appends the images of a
turn's messages to the prompt as one trailing <images> line (user text is escaped, so no
sender can write one); the runner takes it off and sends each file as an image block."""

from __future__ import annotations

import base64
import json
import os
import re
import stat
from pathlib import Path
from typing import Any

MAX_IMAGES = 20  # per prompt: the newest kept
MAX_IMAGE_BYTES = 5 * 1024 * 1024  # Anthropic's per-image limit (the host resized to fit)
REQUEST_BUDGET = 2560 * 1024  # image bytes per call: the model proxy takes a 4 MiB body
INBOX_PREFIX = "inbox/"
TRAILER_RE = re.compile(r"\n\n<images>(\[[^\n]*\])</images>\Z")
MAGIC = (
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
)


def images_line(paths: list[str]) -> str:
    """The trailer for a prompt: "" when there are no images."""
    kept = paths[-MAX_IMAGES:]
    return f"\n\n<images>{json.dumps(kept)}</images>" if kept else ""


def split_images(prompt: str) -> tuple[str, list[str]]:
    """The prompt without its trailer, and the workspace-relative image paths it named."""
    match = TRAILER_RE.search(prompt)
    if match is None:
        return prompt, []
    try:
        paths = json.loads(match[1])
    except ValueError:
        return prompt, []
    if not isinstance(paths, list):
        return prompt, []
    good = [p for p in paths if isinstance(p, str) and safe_path(p)]
    return prompt[: match.start()], good[-MAX_IMAGES:]


def safe_path(path: str) -> bool:
    """Pure: a relative path under inbox/ with no way up."""
    parts = path.split("/")
    return path.startswith(INBOX_PREFIX) and all(p not in ("", ".", "..") for p in parts)


def media_type(head: bytes) -> str | None:
    for magic, kind in MAGIC:
        if head.startswith(magic):
            return kind
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    return None


def read_image(workspace: Path, path: str) -> tuple[str, bytes] | str:
    """(media type, bytes) of an image in the workspace, or why it cannot be shown."""
    try:
        fd = os.open(workspace / path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        return f"cannot open it ({exc.strerror or exc})"
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            return "not a regular file"
        data = f.read(MAX_IMAGE_BYTES + 1)
    if len(data) > MAX_IMAGE_BYTES:
        return "over 5 MB"
    kind = media_type(data[:16])
    return (kind, data) if kind else "not a JPEG, PNG, GIF or WebP image"


def image_blocks(workspace: Path, paths: list[str]) -> list[dict[str, Any]]:
    """An image block per path, preceded by a text block naming it; a note for one that
    cannot be shown (gone, replaced) so the model knows it was not seen."""
    blocks: list[dict[str, Any]] = []
    budget = REQUEST_BUDGET
    for path in paths:
        got = read_image(workspace, path)
        if not isinstance(got, str) and len(got[1]) > budget:
            got = "this request has no room left for it"
        if isinstance(got, str):
            blocks.append({"type": "text", "text": f"[image /workspace/{path} not shown: {got}]"})
            continue
        kind, data = got
        budget -= len(data)
        blocks.append({"type": "text", "text": f"[image /workspace/{path}]"})
        source = {"type": "base64", "media_type": kind, "data": base64.b64encode(data).decode()}
        blocks.append({"type": "image", "source": source})
    return blocks


def joined(prompts: list[str]) -> str:
    """Several follow-ups as one prompt with one trailer: each item's images kept."""
    texts, paths = [], []
    for prompt in prompts:
        text, found = split_images(prompt)
        texts.append(text)
        paths.extend(found)
    return "\n\n".join(texts) + images_line(paths)


def without_images(messages: list[dict[str, Any]], first: int, text: str) -> list[dict[str, Any]]:
    """The turn's messages as the history keeps them: the prompt (at `first`) as its text
    alone and no image block anywhere (base64 would fill the history's budget)."""
    out = list(messages)
    if first < len(out):
        out[first] = {"role": "user", "content": text}
    for i in range(first + 1, len(out)):
        content = out[i].get("content")
        if isinstance(content, list) and any(_is_image(b) for b in content):
            out[i] = {**out[i], "content": [b for b in content if not _is_image(b)]}
    return out


def _is_image(block: object) -> bool:
    return isinstance(block, dict) and block.get("type") == "image"
