"""Telegram messages to nanoclaw's normalised form, as pure functions over aiogram types.

Text or caption with the message's file as an Attachment (or a readable placeholder), the
quoted message as reply context, and the two platform trigger signals: a mention of the bot
and a reply to it. A forwarded message is marked with its origin and carries neither signal.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from aiogram.types import (
    Message,
    MessageOriginChannel,
    MessageOriginChat,
    MessageOriginHiddenUser,
    MessageOriginUser,
    User,
)

from nanoclaw.models import Attachment, Fetch, InboundMessage, MediaKind

COMMANDS = ("start", "chatid", "ping")


@dataclass(frozen=True)
class BotIdentity:
    id: int
    username: str


@dataclass(frozen=True)
class MediaRef:
    """A file of a message as the Bot API names it: fetched later through getFile."""

    kind: MediaKind
    file_id: str
    name: str
    mime: str
    size: int | None


def media_of(msg: Message) -> MediaRef | None:
    """The message's one file (a photo in its largest size), or None."""
    mid = msg.message_id
    if msg.photo:
        best = max(msg.photo, key=lambda p: (p.width * p.height, p.file_size or 0))
        return MediaRef("image", best.file_id, f"photo-{mid}.jpg", "image/jpeg", best.file_size)
    if msg.voice:
        v = msg.voice
        return MediaRef("voice", v.file_id, f"voice-{mid}.ogg", v.mime_type or "", v.file_size)
    if msg.audio:
        a = msg.audio
        return MediaRef(
            "audio", a.file_id, a.file_name or f"audio-{mid}", a.mime_type or "", a.file_size
        )
    if msg.video_note:
        n = msg.video_note
        return MediaRef("video", n.file_id, f"video-note-{mid}.mp4", "video/mp4", n.file_size)
    if msg.animation:  # Telegram sets `document` too on an animation: asked first
        g = msg.animation
        name = g.file_name or f"animation-{mid}.mp4"
        return MediaRef("video", g.file_id, name, g.mime_type or "", g.file_size)
    if msg.video:
        v2 = msg.video
        name = v2.file_name or f"video-{mid}.mp4"
        return MediaRef("video", v2.file_id, name, v2.mime_type or "", v2.file_size)
    if msg.document:
        d, mime = msg.document, msg.document.mime_type or ""
        kind: MediaKind = "image" if mime.startswith("image/") else "file"
        return MediaRef(kind, d.file_id, d.file_name or f"file-{mid}", mime, d.file_size)
    return None


def attachment(ref: MediaRef, fetcher: Callable[[MediaRef], Fetch]) -> Attachment:
    return Attachment(ref.kind, ref.name, fetcher(ref), ref.mime, ref.size)


def placeholder(msg: Message) -> str:
    """A readable stand-in for what is not text ("" for plain text)."""
    if msg.photo:
        return "[Photo]"
    if msg.voice:
        return "[Voice message]"
    if msg.audio:
        return f"[Audio: {msg.audio.title or msg.audio.file_name or 'audio'}]"
    if msg.video:
        return "[Video]"
    if msg.video_note:
        return "[Video message]"
    if msg.document:
        return f"[Document: {msg.document.file_name or 'file'}]"
    if msg.sticker:
        return f"[Sticker {msg.sticker.emoji or ''}]".replace(" ]", "]")
    if msg.location:
        return "[Location]"
    if msg.contact:
        return "[Contact]"
    if msg.poll:
        return f"[Poll: {msg.poll.question}]"
    return ""


def body(msg: Message) -> str:
    text = msg.text or msg.caption or ""
    mark = placeholder(msg)
    # the caption first: a trigger word opens a caption as it opens a text message
    return f"{text} {mark}".strip() if mark else text


def display_name(user: User | None) -> str:
    if user is None:
        return "unknown"
    return user.full_name or (f"@{user.username}" if user.username else str(user.id))


def forwarded_from(msg: Message) -> str | None:
    """Who wrote a forwarded message ("Mallory (tg:666)"), or None when it is not one."""
    origin = msg.forward_origin
    if origin is None:
        return None
    if isinstance(origin, MessageOriginUser):
        who = f"{display_name(origin.sender_user)} (tg:{origin.sender_user.id})"
    elif isinstance(origin, MessageOriginHiddenUser):
        who = origin.sender_user_name
    elif isinstance(origin, MessageOriginChat):
        who = f"{origin.sender_chat.title or 'a chat'} (tg:{origin.sender_chat.id})"
    elif isinstance(origin, MessageOriginChannel):
        who = f"channel {origin.chat.title or ''} (tg:{origin.chat.id})"
    else:
        who = "unknown"
    # one line and bounded: the mark must stay a mark whatever name its author chose
    return " ".join(who.replace("]", ")").split())[:120] or "unknown"


def mentions(msg: Message, username: str) -> bool:
    """Whether the message mentions @username through an entity (or plainly in the text)."""
    text = msg.text or msg.caption or ""
    handle = f"@{username}".casefold()
    for entity in (msg.entities or []) + (msg.caption_entities or []):
        if entity.type == "mention":
            found = text.encode("utf-16-le")[
                entity.offset * 2 : (entity.offset + entity.length) * 2
            ]
            if found.decode("utf-16-le").casefold() == handle:
                return True
    # a whole handle only: "@andy_bot2" is another account, not a mention of @andy_bot
    return re.search(rf"(?<!\w){re.escape(handle)}(?!\w)", text.casefold()) is not None


def command(msg: Message, username: str) -> str | None:
    """'start' for '/start' or '/start@andy_bot'; None when not one of ours."""
    text = (msg.text or "").strip()
    if not text.startswith("/"):
        return None
    head = text[1:].split(maxsplit=1)[0] if len(text) > 1 else ""
    name, _, target = head.partition("@")
    if target and target.casefold() != username.casefold():
        return None
    return name.lower() if name.lower() in COMMANDS else None


def normalise(
    msg: Message, me: BotIdentity, fetcher: Callable[[MediaRef], Fetch] | None = None
) -> InboundMessage | None:
    """None for what must not reach the store (messages from bots, service messages).

    With a `fetcher`, a file comes as an Attachment (saved by the ingest, which says what
    became of it) and the text is the caption alone; without, a placeholder names it."""
    sender = msg.from_user
    if sender is None or sender.is_bot:
        return None
    ref = media_of(msg) if fetcher is not None else None
    attachments = (attachment(ref, fetcher),) if ref is not None and fetcher is not None else ()
    text = (msg.caption or "") if attachments else body(msg)
    if not text and not attachments:
        return None
    quoted = msg.reply_to_message
    # In a forum, every message "replies" to the topic's first message: not a real quote.
    if quoted is not None and msg.is_topic_message and quoted.message_id == msg.message_thread_id:
        quoted = None
    reply_to_bot = bool(quoted and quoted.from_user and quoted.from_user.id == me.id)
    origin = forwarded_from(msg)
    if origin is not None:
        # Someone else's words, passed on: marked at the very start, so neither a trigger
        # word at their start nor a mention of the bot in them makes the forward trigger.
        text = f"[forwarded from {origin}] {text}"
    chat = msg.chat
    return InboundMessage(
        chat_id=f"tg:{chat.id}",
        platform_id=str(msg.message_id),
        sender_id=f"tg:{sender.id}",
        sender_name=display_name(sender),
        text=text,
        ts_ms=int(msg.date.timestamp() * 1000),
        chat_name=chat.title or chat.full_name or str(chat.id),
        is_group_chat=chat.type != "private",
        mentions_bot=origin is None and mentions(msg, me.username),
        reply_to_bot=origin is None and reply_to_bot,
        reply_to_sender=display_name(quoted.from_user) if quoted else "",
        reply_to_text=body(quoted) if quoted else "",
        attachments=attachments,
    )
