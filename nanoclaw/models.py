"""Plain frozen records that flow between the store, the orchestrator and the channels.

These are the normalised shapes of SPEC section 3: every channel turns its platform
objects into `InboundMessage`, and the store hands back `Message`, `Group` and `OutboxItem`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

FOLDER_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
CHAT_RE = re.compile(r"^(tg|xmpp|mx|term):[^\s]{1,255}$")
NetworkPolicy = Literal["off", "allowlist", "full"]
MAIN = "main"


def valid_folder(name: str) -> bool:
    return bool(FOLDER_RE.match(name)) and name != "global"


def channel_of(chat_id: str) -> str:
    return chat_id.split(":", 1)[0]


@dataclass(frozen=True)
class InboundMessage:
    """What a channel adapter hands to the store."""

    chat_id: str
    platform_id: str
    sender_id: str
    sender_name: str
    text: str
    ts_ms: int
    chat_name: str = ""
    is_group_chat: bool = True
    mentions_bot: bool = False
    reply_to_bot: bool = False
    reply_to_sender: str = ""
    reply_to_text: str = ""


@dataclass(frozen=True)
class Message:
    id: int
    chat_id: str
    platform_id: str
    sender_id: str
    sender_name: str
    text: str
    ts_ms: int
    mentions_bot: bool = False
    reply_to_bot: bool = False
    reply_to_sender: str = ""
    reply_to_text: str = ""


def stored(msg_id: int, msg: InboundMessage) -> Message:
    """The `Message` the store holds for an inbound message it gave `msg_id`."""
    return Message(
        id=msg_id, chat_id=msg.chat_id, platform_id=msg.platform_id, sender_id=msg.sender_id,
        sender_name=msg.sender_name, text=msg.text, ts_ms=msg.ts_ms,
        mentions_bot=msg.mentions_bot, reply_to_bot=msg.reply_to_bot,
        reply_to_sender=msg.reply_to_sender, reply_to_text=msg.reply_to_text,
    )  # fmt: skip


@dataclass(frozen=True)
class Group:
    folder: str
    name: str
    chats: tuple[str, ...] = ()
    trigger: str | None = None
    requires_trigger: bool = True
    network: NetworkPolicy = "off"
    allowed_senders: tuple[str, ...] = ()
    mounts: tuple[str, ...] = ()
    exports: tuple[str, ...] = ()
    model: str | None = None
    domains: tuple[str, ...] = ()  # reachable under network="allowlist", subdomains included

    @property
    def is_main(self) -> bool:
        return self.folder == MAIN


@dataclass(frozen=True)
class OutboxItem:
    id: int
    folder: str
    chat_id: str
    text: str
    attempts: int
    chunks_sent: int
    run_id: int | None = None
    file_path: str | None = None  # a file to upload (the host's own copy); text is its caption
    file_name: str | None = None


@dataclass(frozen=True)
class Reply:
    """What an IPC file puts in the outbox, committed together with its name."""

    chat_id: str
    text: str
    run_id: int | None = None
    file_path: str | None = None
    file_name: str | None = None


@dataclass(frozen=True)
class ChatInfo:
    chat_id: str
    name: str
    is_group_chat: bool
    last_seen_ms: int
    folder: str | None = None


@dataclass(frozen=True)
class Usage:
    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0


@dataclass
class RunRecord:
    id: int
    folder: str
    status: str
    started_ms: int
    ended_ms: int | None = None
    error: str = ""
    usage: Usage = field(default_factory=Usage)
