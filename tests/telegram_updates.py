"""Update builders of the fake Bot API: messages as Telegram sends them (text, bot, photo,
voice, document, sticker, location), with the ids and chats the fake keeps."""

from __future__ import annotations

import secrets
import threading
import time
from typing import Any, Unpack

from bot_api import Msg, MsgOpts


class UpdateBuilder:
    """Mixed into `FakeTelegram`, which owns the lock, the counters and the known chats."""

    bot_user: Msg
    _cond: threading.Condition
    _chats: dict[Any, Msg]
    _next_update: int
    _next_message: int

    def update(self, message: Msg) -> dict[str, Any]:
        with self._cond:
            uid, self._next_update = self._next_update, self._next_update + 1
        return {"update_id": uid, "message": message}

    def _message_id(self, given: int | None = None) -> int:
        with self._cond:
            mid = self._next_message if given is None else given
            self._next_message = max(self._next_message, mid + 1)
            return mid

    def _message(self, chat_id: int, content: Msg, o: MsgOpts, sender: Msg | None = None) -> Msg:
        name, ctype = o.get("first_name", "Alice"), o.get("chat_type", "group")
        chat: Msg = {"id": chat_id, "type": ctype}
        chat.update(
            {"first_name": name} if ctype == "private" else {"title": o.get("chat_title", "Team")}
        )
        user: Msg = {"id": o.get("user_id", 111), "is_bot": False, "first_name": name}
        if o.get("username"):
            user["username"] = o.get("username")
        if o.get("thread_id") is not None:
            chat["is_forum"] = True
        with self._cond:
            self._chats.setdefault(chat_id, chat)
        mid, date = self._message_id(o.get("message_id")), o.get("date") or int(time.time())
        msg: Msg = {"message_id": mid, "from": sender or user, "chat": chat, "date": date}
        msg.update(content)
        if o.get("caption") is not None and "text" not in content:
            msg["caption"] = o.get("caption")
        if o.get("reply_to") is not None:
            msg["reply_to_message"] = o.get("reply_to")
        if o.get("thread_id") is not None:
            msg["message_thread_id"], msg["is_topic_message"] = o.get("thread_id"), True
        if o.get("entities"):
            msg["entities" if "text" in content else "caption_entities"] = o.get("entities")
        return msg

    @staticmethod
    def _file(**extra: Any) -> Msg:
        ids = {"file_id": "F" + secrets.token_hex(8), "file_unique_id": secrets.token_hex(4)}
        return {**ids, "file_size": 2048, **extra}

    def media_message(self, chat_id: int, content: Msg, **o: Unpack[MsgOpts]) -> Msg:
        """A message with `content` such as {"voice": fake.put_file(data, duration=2)}."""
        return self._message(chat_id, content, o)

    def text_message(self, chat_id: int, text: str, **o: Unpack[MsgOpts]) -> Msg:
        return self._message(chat_id, {"text": text}, o)

    def bot_message(self, chat_id: int, text: str, **o: Unpack[MsgOpts]) -> Msg:
        """A message as if sent by the bot, e.g. for `reply_to=`."""
        return self._message(chat_id, {"text": text}, o, sender=self.bot_user)

    def photo_message(self, chat_id: int, **o: Unpack[MsgOpts]) -> Msg:
        sizes = [self._file(width=w, height=w * 3 // 4) for w in (90, 320, 1280)]
        return self._message(chat_id, {"photo": sizes}, o)

    def voice_message(self, chat_id: int, duration: int = 3, **o: Unpack[MsgOpts]) -> Msg:
        voice = self._file(duration=duration, mime_type="audio/ogg")
        return self._message(chat_id, {"voice": voice}, o)

    def document_message(self, chat_id: int, file_name: str = "a.pdf", **o: Unpack[MsgOpts]) -> Msg:
        doc = self._file(file_name=file_name, mime_type="application/octet-stream")
        return self._message(chat_id, {"document": doc}, o)

    def sticker_message(self, chat_id: int, emoji: str = "👍", **o: Unpack[MsgOpts]) -> Msg:
        flags = {"type": "regular", "is_animated": False, "is_video": False}
        sticker = self._file(width=512, height=512, emoji=emoji, **flags)
        return self._message(chat_id, {"sticker": sticker}, o)

    def location_message(
        self, chat_id: int, latitude: float = 52.52, longitude: float = 13.4, **o: Unpack[MsgOpts]
    ) -> Msg:
        return self._message(
            chat_id, {"location": {"latitude": latitude, "longitude": longitude}}, o
        )
