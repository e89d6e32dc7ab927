"""The per-message step: each attachment of a message from a registered chat streamed into
the group's inbox within the caps, images probed (a copy for the model if needed), voice
transcribed when configured; one line per attachment says what happened, for the prompt."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

from nanoclaw.config import Settings
from nanoclaw.errors import MediaRefused
from nanoclaw.media import images, inbox
from nanoclaw.media.names import sanitise
from nanoclaw.media.transcribe import TranscribeError, Transcriber
from nanoclaw.models import MEDIA_WORD, Attachment, InboundMessage

log = logging.getLogger(__name__)
GROUP_CAP_FILES = 20  # a group's inbox holds at most 20 files at the cap: MEDIA_MAX_MB x 20
DOWNLOAD_TIMEOUT_S = 300.0
WORKSPACE = "/workspace"
WORD = MEDIA_WORD


@dataclass(frozen=True)
class MediaLimits:
    file_bytes: int
    group_bytes: int
    timeout_s: float = DOWNLOAD_TIMEOUT_S
    max_mb: float = 0.0  # MEDIA_MAX_MB as configured, for the notes


def limits_of(max_mb: float, timeout_s: float = DOWNLOAD_TIMEOUT_S) -> MediaLimits:
    file_bytes = int(max_mb * 1024 * 1024)
    return MediaLimits(file_bytes, file_bytes * GROUP_CAP_FILES, timeout_s, max_mb)


@dataclass(frozen=True)
class Saved:
    lines: tuple[str, ...] = ()  # one per attachment, for the prompt
    images: tuple[str, ...] = ()  # workspace-relative paths the model is shown


def human(n: int) -> str:
    """Pure: a size as people write it (240 KB, 3.1 MB)."""
    if n < 1024:
        return f"{n} B"
    if n < 1024 * 1024:
        return f"{n // 1024} KB"
    return f"{n / (1024 * 1024):.1f} MB"


def _mb(limits: MediaLimits) -> str:
    return f"{limits.max_mb:g}"


class TooLarge(Exception):
    pass


class MediaSaver:
    """Saves attachments into groups/<folder>/inbox/<day>/; `today` gives the day's name."""

    def __init__(
        self,
        groups: Path,
        limits: MediaLimits,
        today: Callable[[], str],
        transcriber: Transcriber | None = None,
    ) -> None:
        self._groups = groups
        self._limits = limits
        self._today = today
        self._transcriber = transcriber

    async def save(self, folder: str, attachments: Sequence[Attachment]) -> Saved:
        lines: list[str] = []
        shown: list[str] = []
        for att in attachments:
            line, image = await self._one(folder, att)
            lines.append(line)
            if image:
                shown.append(image)
        return Saved(tuple(lines), tuple(shown))

    async def _one(self, folder: str, att: Attachment) -> tuple[str, str | None]:
        word, lim = WORD[att.kind], self._limits
        name = sanitise(att.name, att.kind, att.mime)
        if att.size is not None and att.size > lim.file_bytes:
            why = f"{name} is {human(att.size)}, over MEDIA_MAX_MB={_mb(lim)}"
            return f"[{word} not saved: {why}]", None
        day = self._today()
        try:
            box, day_fd = await asyncio.to_thread(inbox.open_day, self._groups, folder, day)
        except inbox.InboxError as exc:
            log.warning("group=%s media: inbox refused: %s", folder, exc)
            return f"[{word} not saved: the inbox cannot take it ({exc})]", None
        try:
            used = await asyncio.to_thread(inbox.usage, box)
            room = min(lim.file_bytes, lim.group_bytes - used)
            if room <= 0 or (att.size is not None and att.size > room):
                why = (
                    f"the group's inbox is full ({human(used)} of {human(lim.group_bytes)}); "
                    "delete old files from /workspace/inbox"
                )
                return f"[{word} not saved: {why}]", None
            try:
                got, size = await self._download(day_fd, name, att, room)
            except TooLarge:
                if room < lim.file_bytes:
                    return f"[{word} not saved: {name} would overfill the group's inbox]", None
                why = f"{name} is over MEDIA_MAX_MB={_mb(lim)}"
                return f"[{word} not saved: {why}]", None
            except MediaRefused as exc:
                return f"[{word} not saved: {exc}]", None
            except TimeoutError:
                return f"[{word} not saved: the download failed (timeout)]", None
            except inbox.InboxError as exc:
                return f"[{word} not saved: the inbox cannot take it ({exc})]", None
            except Exception as exc:  # a channel's fetch: any failure is said, not raised
                log.warning("group=%s media: download of %s failed: %r", folder, name, exc)
                return f"[{word} not saved: the download failed ({type(exc).__name__})]", None
            path = f"{WORKSPACE}/{inbox.INBOX}/{day}/{got}"
            log.info("group=%s media: saved %s (%d bytes)", folder, path, size)
            if att.kind == "image":
                return await self._image(day_fd, day, got, path, size)
            if att.kind in ("voice", "audio"):
                return await self._audio(folder, day_fd, got, att, path, size), None
            return f"[{word} saved: {path}, {human(size)}]", None
        finally:
            os.close(day_fd)
            os.close(box)

    async def _download(self, day: int, name: str, att: Attachment, cap: int) -> tuple[str, int]:
        """Stream the attachment into a new file; (its name, its size). Removed on failure."""
        fd, got = await asyncio.to_thread(inbox.create, day, name)
        size, done = 0, False
        chunks = att.fetch()
        try:
            async with asyncio.timeout(self._limits.timeout_s):
                async for chunk in chunks:
                    size += len(chunk)
                    if size > cap:
                        raise TooLarge
                    await asyncio.to_thread(inbox.write_all, fd, chunk)
            done = True
        finally:
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()
            os.close(fd)
            if not done:
                await asyncio.to_thread(inbox.remove, day, got)
        return got, size

    async def _image(
        self, day_fd: int, day: str, got: str, path: str, size: int
    ) -> tuple[str, str | None]:
        data = await asyncio.to_thread(inbox.read, day_fd, got, self._limits.file_bytes)
        probed = await asyncio.to_thread(images.probe, data)
        if probed.problem:
            return f"[photo saved: {path}, {human(size)}; not shown: {probed.problem}]", None
        line = f"[photo saved: {path}, {probed.width}x{probed.height}, {human(size)}"
        if probed.copy is None:
            return line + "]", f"{inbox.INBOX}/{day}/{got}"
        stem = got.rpartition(".")[0] or got
        copy = await asyncio.to_thread(inbox.write_new, day_fd, f"{stem}.model.jpg", probed.copy)
        w, h = images.scaled(probed.width, probed.height)
        return line + f"; shown resized to {w}x{h}]", f"{inbox.INBOX}/{day}/{copy}"

    async def _audio(
        self, folder: str, day_fd: int, got: str, att: Attachment, path: str, size: int
    ) -> str:
        head = f"[{WORD[att.kind]} saved: {path}, {human(size)}"
        if self._transcriber is None:
            return head + "; not transcribed (no TRANSCRIBE_URL)]"
        data = await asyncio.to_thread(inbox.read, day_fd, got, self._limits.file_bytes)
        try:
            text = await self._transcriber.transcribe(data, got, att.mime)
        except TranscribeError as exc:
            log.warning("group=%s media: transcription of %s failed: %s", folder, got, exc)
            return head + f"; not transcribed ({exc})]"
        return head + f'; transcript: "{text}"]'


def unsaved(attachments: Sequence[Attachment], why: str) -> Saved:
    """Pure: the lines for attachments that are not fetched at all."""
    return Saved(tuple(f"[{WORD[a.kind]} not saved: {why}]" for a in attachments))


def with_media(msg: InboundMessage, saved: Saved) -> InboundMessage:
    """Pure: the message as stored: its caption, then a line per attachment; the images."""
    text = "\n".join(t for t in (msg.text, *saved.lines) if t)
    return replace(msg, text=text, attachments=(), media=saved.images)


def media_saver(settings: Settings) -> MediaSaver:
    """The saver the daemon's ingest uses, from MEDIA_MAX_MB and TRANSCRIBE_URL/KEY."""
    transcriber = None
    if settings.transcribe_url:
        key = settings.transcribe_api_key or settings.openai_api_key
        transcriber = Transcriber(settings.transcribe_url, key.get_secret_value() if key else None)
    zone = settings.zone

    def today() -> str:
        return datetime.now(zone).strftime("%Y-%m-%d")

    return MediaSaver(settings.layout.groups, limits_of(settings.media_max_mb), today, transcriber)
