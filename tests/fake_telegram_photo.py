"""sendPhoto for the fake Bot API: FakeTelegram with photo uploads recorded in `photos`.

Like Telegram, it decodes the upload: bytes that are no picture answer 400
IMAGE_PROCESS_FAILED and sides over the limits PHOTO_INVALID_DIMENSIONS."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any

from bot_api import Params, as_int, bad, check_document
from fake_telegram import FakeTelegram
from PIL import Image

MAX_SIDES = 10_000  # width + height, as Telegram documents it


@dataclass(frozen=True)
class Photo:
    """One sendPhoto upload as the fake received it."""

    chat_id: int | str
    filename: str
    data: bytes
    width: int
    height: int
    caption: str  # as sent ("" when none)
    parse_mode: str | None
    visible: str
    message_thread_id: int | None
    message_id: int
    params: dict[str, Any] = field(default_factory=dict, compare=False)


def decode(data: bytes) -> tuple[int, int]:
    """The picture's size, or the ApiError Telegram answers for bytes it cannot use."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            width, height = im.size
    except Exception as exc:  # any decoder error is Telegram's IMAGE_PROCESS_FAILED
        raise bad("IMAGE_PROCESS_FAILED") from exc
    if width + height > MAX_SIDES:
        raise bad("PHOTO_INVALID_DIMENSIONS")
    return width, height


class FakeTelegramPhotos(FakeTelegram):
    """FakeTelegram that also answers sendPhoto (the handler is found by its method name)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._photos: list[Photo] = []

    @property
    def photos(self) -> list[Photo]:
        return self._copy(self._photos)

    async def _m_sendphoto(self, params: Params) -> Any:
        as_document = {**params, "document": params.get("photo")}
        upload, visible = self._checked(check_document, as_document, "caption")
        width, height = self._checked(lambda _: decode(upload.data), params, "caption")
        chat_id, thread = params["chat_id"], as_int(params.get("message_thread_id"))
        size = self._file(width=width, height=height, file_size=len(upload.data))
        msg = self._outgoing(chat_id, thread, {"photo": [size]})
        if visible:
            msg["caption"] = visible
        photo = Photo(
            chat_id,
            upload.filename,
            upload.data,
            width,
            height,
            str(params.get("caption") or ""),
            params.get("parse_mode"),
            visible,
            thread,
            msg["message_id"],
            params,
        )
        with self._cond:
            self._photos.append(photo)
            self._cond.notify_all()
        return msg


__all__ = ["FakeTelegramPhotos", "Photo"]
