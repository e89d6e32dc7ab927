"""The seam every channel plugs into: the `Channel` protocol, the inbound sink, the loader.

The core never imports a channel module directly: `load_channels` imports the enabled
ones by name, so a missing optional dependency disables that channel, not the program.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Protocol, runtime_checkable

from nanoclaw.config import Settings
from nanoclaw.db import now_ms
from nanoclaw.models import InboundMessage
from nanoclaw.store import Store

log = logging.getLogger(__name__)
MODULES = {"tg": "telegram", "xmpp": "xmpp", "mx": "matrix", "term": "terminal"}


class Inbound(Protocol):
    """Where a channel puts what it receives."""

    async def message(self, msg: InboundMessage) -> int | None: ...

    async def chat_seen(self, chat_id: str, name: str, is_group: bool) -> None: ...

    async def folder_of(self, chat_id: str) -> str | None:
        """The group a chat is registered to, if any (for /start-style answers)."""
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


class Ingest:
    """The inbound sink: normalised messages into the store, then wake the orchestrator."""

    def __init__(self, store: Store, wake: Callable[[], None] = lambda: None) -> None:
        self._store = store
        self._wake = wake

    async def message(self, msg: InboundMessage) -> int | None:
        msg_id = await self._store.add_message(msg)
        if msg_id is not None:
            self._wake()
        return msg_id

    async def chat_seen(self, chat_id: str, name: str, is_group: bool) -> None:
        await self._store.record_chat(chat_id, name, is_group, now_ms())

    async def folder_of(self, chat_id: str) -> str | None:
        return await self._store.folder_of_chat(chat_id)


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
