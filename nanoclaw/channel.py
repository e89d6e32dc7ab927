"""The seam every channel plugs into: the `Channel` protocol, the inbound sink (with its
pairing step), the loader.

The core never imports a channel module directly: `load_channels` imports the enabled
ones by name, so a missing optional dependency disables that channel, not the program.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from nanoclaw import pairing
from nanoclaw.commands import Approval, Command, parse_approval, parse_command
from nanoclaw.config import Settings
from nanoclaw.media.saver import MediaSaver, unsaved, with_media
from nanoclaw.models import InboundMessage, channel_of, chat_id_problem
from nanoclaw.store.db import now_ms
from nanoclaw.store.messages import Store
from nanoclaw.trigger import sender_allowed

log = logging.getLogger(__name__)
MODULES = {"tg": "telegram", "xmpp": "xmpp", "mx": "matrix", "term": "terminal"}
FOREVER_MS = 10**15
# (folder, command, newest message id stored before it) -> the host's answer (`Control.answer`)
Answer = Callable[[str, Command, int], Awaitable[str]]
Approve = Callable[[Approval], Awaitable[str]]  # main's /allow and /deny (`Control.approve`)


class Inbound(Protocol):
    """Where a channel puts what it receives."""

    async def message(self, msg: InboundMessage) -> int | None:
        """A message from a chat the channel serves: stored (a pairing code is not)."""
        ...

    async def unserved(self, msg: InboundMessage) -> None:
        """A message from a chat the channel does not serve: never stored; only a pairing
        code, or the first words of someone unknown in a private chat, are answered."""
        ...

    async def chat_seen(self, chat_id: str, name: str, is_group: bool) -> None: ...

    async def folder_of(self, chat_id: str) -> str | None:
        """The group a chat is registered to, if any (served chats, /start-style answers)."""
        ...

    async def pairing_open_until(self) -> int | None:
        """When the last live pairing code expires (unix ms), or None when none is live."""
        ...


@runtime_checkable
class Channel(Protocol):
    """One chat network. `name` is the chat-id prefix it owns (tg, xmpp, mx, term)."""

    name: str
    max_message_len: int

    async def start(self, inbound: Inbound) -> None: ...

    async def stop(self) -> None: ...

    async def send(self, chat_id: str, text: str, key: str = "") -> None:
        """Deliver one chunk; raise DeliveryError (retried) or PermanentDeliveryError.

        `key` is the same for every attempt at this chunk: a network that deduplicates
        (Matrix transaction ids) turns a retry after a lost response into a no-op.
        """

    async def send_file(
        self, chat_id: str, path: Path, name: str, caption: str = "", key: str = ""
    ) -> None:
        """Upload the file at `path` (a host copy the router owns) as `name`, with a caption.

        A network that cannot carry files raises FilesUnsupported; the router then tells
        the chat in words. Other failures as for `send`.
        """

    async def set_typing(self, chat_id: str, typing: bool) -> None: ...


@runtime_checkable
class Named(Protocol):
    """A channel whose bot has a username that commands may name (Telegram's `/stop@bot`)."""

    @property
    def username(self) -> str: ...


def username_of(channels: Mapping[str, Channel]) -> Callable[[str], str]:
    """The `usernames` of `Ingest`: a channel name to its bot's username, "" for none."""

    def username(name: str) -> str:
        channel = channels.get(name)
        return channel.username if isinstance(channel, Named) else ""

    return username


@dataclass(frozen=True)
class Welcome:
    """What the inbound step needs to pair a chat and to answer someone unknown."""

    assistant: str = "Andy"
    default_trigger: str = "@Andy"
    allowed_senders: tuple[str, ...] = ()


def welcome_of(settings: Settings) -> Welcome:
    return Welcome(settings.assistant_name, settings.trigger, tuple(settings.allowed_senders))


class Ingest:
    """The inbound sink: normalised messages into the store, then wake the orchestrator.

    Before storing, the pairing step takes out a message that holds a pairing code (all
    channels share it). Its answers go through the outbox, so they are retried like any
    reply; a chat no group holds yet gets them under the folder ''.

    Then a chat command (`/stop`, `/status`, `/pause`, `/resume`) from an allowed sender of a
    registered chat is answered by the host (`control`) and never stored: it is no trigger,
    and stored it would reach the model as context of the next prompt (the tape records
    it). From anyone else it is an ordinary message. `usernames` gives a channel's bot
    username, the only one whose `/stop@name` form counts. Main's approvals (`/allow`, `/deny`
    about a group's blocked host) go to `approve` the same way, from main's chats only.
    """

    def __init__(
        self,
        store: Store,
        wake: Callable[[], None] = lambda: None,
        welcome: Welcome = Welcome(),
        reply: Callable[[], None] = lambda: None,
        clock: Callable[[], int] = now_ms,
        control: Answer | None = None,
        usernames: Callable[[str], str] = lambda channel: "",
        approve: Approve | None = None,
        media: MediaSaver | None = None,
    ) -> None:
        self._store = store
        self._wake = wake
        self._welcome = welcome
        self._reply = reply
        self._clock = clock
        self._control = control
        self._usernames = usernames
        self._approve = approve
        self._media = media

    async def message(self, msg: InboundMessage) -> int | None:
        if await self._pair(msg, served=True) or await self._command(msg):
            return None
        if msg.attachments:
            if await self._store.has_message(msg.chat_id, msg.platform_id):
                return None  # delivered again (after a crash): its files are saved already
            msg = await self._save_media(msg)
        msg_id = await self._store.add_message(msg)
        if msg_id is not None:
            self._wake()
            await self._hint(msg)
        return msg_id

    async def _save_media(self, msg: InboundMessage) -> InboundMessage:
        """Attachments into the group's inbox, said in the text; only for a registered chat
        (a chat served through an allowlist alone has no folder: nothing is fetched)."""
        folder = await self._store.folder_of_chat(msg.chat_id)
        if folder is None:
            saved = unsaved(msg.attachments, "this chat is not registered to a group")
        elif self._media is None:
            saved = unsaved(msg.attachments, "media saving is off here")
        else:
            saved = await self._media.save(folder, msg.attachments)
        return with_media(msg, saved)

    async def unserved(self, msg: InboundMessage) -> None:
        await self.chat_seen(msg.chat_id, msg.chat_name, msg.is_group_chat)
        if not await self._pair(msg, served=False):
            await self._hint(msg)

    async def chat_seen(self, chat_id: str, name: str, is_group: bool) -> None:
        await self._store.record_chat(chat_id, name, is_group, now_ms())

    async def folder_of(self, chat_id: str) -> str | None:
        return await self._store.folder_of_chat(chat_id)

    async def pairing_open_until(self) -> int | None:
        return await self._store.pairing_open_until(self._clock())

    async def _pair(self, msg: InboundMessage, served: bool) -> bool:
        """The pairing step: True when the message was an attempt and is used up here."""
        attempt = pairing.parse(msg.text)
        if attempt is None or channel_of(msg.chat_id) == "term" or chat_id_problem(msg.chat_id):
            return False
        store, chat, now = self._store, msg.chat_id, self._clock()
        live = await store.pairing_open_until(now) is not None
        step = pairing.step(attempt, served, live, await store.pair_attempts(chat, now))
        if step == "pass":
            return False
        if step == "check":
            done = await store.redeem_pair_code(attempt.code, chat, msg.sender_id, now)
            log.info(
                "pairing chat=%s sender=%s: %s %s", chat, msg.sender_id, done.outcome, done.folder
            )
            if done.outcome == "paired":
                group = await store.group(done.folder)
                trigger = None
                if group is not None and group.requires_trigger:
                    trigger = group.trigger or self._welcome.default_trigger
                await self._answer(chat, pairing.paired_text(done.folder, msg.sender_id, trigger))
                return True
            if done.outcome == "held":
                await self._answer(chat, pairing.held_text(done.folder))
                return True
            if done.outcome == "nobody":
                await self._answer(chat, pairing.nobody_text(chat))
                return True
            if served and not attempt.explicit:
                return False  # a bare word that only looked like a code: an ordinary message
        else:
            log.info("pairing chat=%s: too many attempts this hour; not checked", chat)
        if await store.notice_due(chat, "wrong_code", now, pairing.HOUR_MS):
            await self._answer(chat, pairing.WRONG)
        return True

    async def _command(self, msg: InboundMessage) -> bool:
        """True when the message was a command the host answered (it is not stored)."""
        if self._control is None:
            return False
        username = self._usernames(channel_of(msg.chat_id))
        command = parse_command(msg.text, username)
        approval = parse_approval(msg.text, username) if self._approve else None
        if command is None and approval is None:
            return False
        folder = await self._store.folder_of_chat(msg.chat_id)
        group = await self._store.group(folder) if folder else None
        if group is None or not sender_allowed(msg.sender_id, self._welcome.allowed_senders, group):
            return False
        if approval is not None and self._approve is not None:
            if not group.is_main:  # approvals are main's alone: elsewhere an ordinary message
                return False
            log.info("approval chat=%s sender=%s: %s", msg.chat_id, msg.sender_id, approval.line)
            await self._answer(msg.chat_id, await self._approve(approval))
            return True
        if command is None:
            return False
        upto = await self._store.max_message_id()
        log.info("command chat=%s sender=%s: /%s", msg.chat_id, msg.sender_id, command)
        await self._answer(msg.chat_id, await self._control(group.folder, command, upto))
        return True

    async def _hint(self, msg: InboundMessage) -> None:
        """Someone the bot does not serve writes in a private chat: say how, once per sender."""
        if msg.is_group_chat or channel_of(msg.chat_id) == "term":
            return
        folder = await self._store.folder_of_chat(msg.chat_id)
        group = await self._store.group(folder) if folder else None
        if group is not None and pairing.sender_allowed(
            msg.sender_id, self._welcome.allowed_senders, group.allowed_senders
        ):
            return
        if await self._store.notice_due(msg.sender_id, "hint", self._clock(), FOREVER_MS):
            text = pairing.hint_text(self._welcome.assistant, msg.chat_id, msg.sender_id)
            await self._answer(msg.chat_id, text)

    async def _answer(self, chat_id: str, text: str) -> None:
        folder = await self._store.folder_of_chat(chat_id) or ""
        await self._store.enqueue_reply(folder, chat_id, text)
        self._reply()


def enabled_channels(settings: Settings) -> list[str]:
    names = []
    if settings.telegram_bot_token is not None:
        names.append("tg")
    if settings.xmpp_jid and settings.xmpp_password is not None:
        names.append("xmpp")
    if settings.matrix_homeserver and settings.matrix_user_id:
        names.append("mx")
    return names


def load_channels(settings: Settings, names: list[str]) -> dict[str, Channel]:
    """Import `channels.<module>` for each name and call its `create(settings)`."""
    out: dict[str, Channel] = {}
    for name in names:
        module_name = f"channels.{MODULES.get(name, name)}"
        try:
            module = importlib.import_module(module_name)
            channel = module.create(settings)
        except ImportError as exc:
            log.error("channel %s disabled: cannot import %s (%s)", name, module_name, exc)
            continue
        out[channel.name] = channel
    return out
