"""Plain frozen records that flow between the store, the orchestrator and the channels.

These are the normalised shapes of SPEC section 3: every channel turns its platform
objects into `InboundMessage`, and the store hands back `Message`, `Group` and `OutboxItem`.
Also the chat id each channel writes, which a registration must match.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Literal

FOLDER_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
CHAT_RE = re.compile(r"^(tg|xmpp|mx|term):[^\s]{1,255}$")
# What each channel writes as a chat id, so a registration can only name a chat that can
# exist: a Telegram chat is a number (a group's is negative), an XMPP chat a lower-case JID
# (a /resource only for a private chat through a room), a Matrix chat a room id (never an
# alias: the channel sees room ids only), a terminal chat a group folder name.
_JID_PART = r"[^\s\"&'/:<>@]"
_LABEL = r"[^\s\"&'/:<>@.]+"
CHAT_FORMS = {
    "tg": (re.compile(r"^-?[1-9][0-9]{0,19}$"), "an integer, like tg:-1001234567890"),
    "xmpp": (
        re.compile(rf"^(?:{_JID_PART}{{1,64}}@)?{_LABEL}(?:\.{_LABEL})*(?:/\S{{1,64}})?$"),
        "a JID, like xmpp:alice@example.org or xmpp:team@conference.example.org",
    ),
    "mx": (re.compile(r"^![!-~]{1,254}$"), "a room id, like mx:!abcdef:example.org"),
    "term": (re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$"), "a group name, like term:main"),
}
NetworkPolicy = Literal["off", "allowlist", "full"]
MAIN = "main"


def valid_folder(name: str) -> bool:
    return bool(FOLDER_RE.match(name)) and name != "global"


def chat_id_problem(chat_id: str) -> str | None:
    """Pure: why `chat_id` cannot be a registered chat, or None when it can."""
    channel, sep, rest = chat_id.partition(":")
    form = CHAT_FORMS.get(channel)
    if not sep or form is None:
        return f"{chat_id!r} is not a chat id: tg:, xmpp:, mx: or term: and the chat's id"
    pattern, like = form
    if channel == "mx" and rest.startswith("#"):
        return f"{chat_id!r} is a room alias: use the room id (mx:!...), as `nanoclaw chats` shows"
    if channel == "xmpp" and rest.split("/", 1)[0] != rest.split("/", 1)[0].lower():
        return f"{chat_id!r}: write the JID in lower case, as the channel does"
    if not pattern.match(rest) or not CHAT_RE.match(chat_id):
        return f"{chat_id!r} is not a chat id: {channel}: takes {like}"
    return None


def chat_problem(chat_id: str, folder: str, holder: str | None) -> str | None:
    """Pure: why group `folder` cannot register `chat_id`, which group `holder` has now."""
    if problem := chat_id_problem(chat_id):
        return problem
    if holder is not None and holder != folder:
        return f"{chat_id} is held by group {holder}"
    return None


def channel_of(chat_id: str) -> str:
    return chat_id.split(":", 1)[0]


MediaKind = Literal["image", "voice", "audio", "video", "file"]
MEDIA_WORD: dict[MediaKind, str] = {  # how a prompt line names each kind
    "image": "photo",
    "voice": "voice note",
    "audio": "audio",
    "video": "video",
    "file": "file",
}
# Yields the bytes of one attachment as the platform serves them; the caller stops reading
# (and closes the iterator) once its size cap is passed.
Fetch = Callable[[], AsyncIterator[bytes]]


@dataclass(frozen=True)
class Attachment:
    """A picture, voice note, audio, video or file that came with a message, not yet fetched:
    the ingest downloads it into the group's inbox (outside the sandbox) before storing."""

    kind: MediaKind
    name: str  # as the platform or sender named it; sanitised when saved
    fetch: Fetch
    mime: str = ""
    size: int | None = None  # as announced by the platform, if it says (not trusted)


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
    attachments: tuple[Attachment, ...] = ()
    media: tuple[str, ...] = ()  # images saved for the model (workspace-relative): host-set


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
    media: tuple[str, ...] = ()  # images the model is shown with it (workspace-relative)


def stored(msg_id: int, msg: InboundMessage) -> Message:
    """The `Message` the store holds for an inbound message it gave `msg_id`."""
    return Message(
        id=msg_id,
        chat_id=msg.chat_id,
        platform_id=msg.platform_id,
        sender_id=msg.sender_id,
        sender_name=msg.sender_name,
        text=msg.text,
        ts_ms=msg.ts_ms,
        mentions_bot=msg.mentions_bot,
        reply_to_bot=msg.reply_to_bot,
        reply_to_sender=msg.reply_to_sender,
        reply_to_text=msg.reply_to_text,
        media=msg.media,
    )


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
    packages: tuple[str, ...] = ()  # nixpkgs attribute names for the group's Nix environment
    profile: str | None = None  # a built-in profile of nanoclaw.nixenv.catalog
    progress: bool = False  # one progress message edited as the agent works (where it can be)
    provider: str | None = None  # LLM_PROVIDER for this group; None: the setting's
    fallback_models: tuple[str, ...] = ()  # tried in order on overload; (): the setting's
    daily_requests: int | None = None  # per-group budgets; None: the GROUP_DAILY_* setting
    daily_tokens: int | None = None
    daily_cost: float | None = None
    vision: bool = True  # images reach the model as image blocks

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
    created_ms: int = 0  # when it reached the outbox (the reply latency metric)


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
class ModelCall:
    """Which provider and model answered one request, for its row in `model_calls`."""

    provider: str
    model: str
    fallback: bool = False  # a model of the fallback chain, not the group's own


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
