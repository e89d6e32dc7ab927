"""Telegram messages to nanoclaw's normalised form, as pure functions over aiogram types.

Text or caption with a readable placeholder for media after it, the quoted message as reply
context, and the two platform trigger signals: a mention of the bot and a reply to it.
A forwarded message is marked with its origin and carries neither signal.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from aiogram.types import (
    Message,
    MessageOriginChannel,
    MessageOriginChat,
    MessageOriginHiddenUser,
    MessageOriginUser,
    User,
)

from nanoclaw.models import InboundMessage

COMMANDS = ("start", "chatid", "ping")


@dataclass(frozen=True)
class BotIdentity:
    id: int
    username: str


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


def normalise(msg: Message, me: BotIdentity) -> InboundMessage | None:
    """None for what must not reach the store (messages from bots, service messages)."""
    sender = msg.from_user
    if sender is None or sender.is_bot:
        return None
    text = body(msg)
    if not text:
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
    )
