"""The router: delivers outbox rows through the channel that owns each chat, until sent.

Replies are split to the channel's limit; progress is kept per chunk so a retry never
sends a chunk twice; failures back off exponentially and survive restarts in the store.
A file is uploaded from the router's own copy, deleted once the row is settled.
"""

from __future__ import annotations

import contextlib
import logging
import os
import zlib
from collections.abc import Callable, Mapping
from pathlib import Path

from nanoclaw.channel import Channel
from nanoclaw.errors import DeliveryError, FilesUnsupported, PermanentDeliveryError
from nanoclaw.models import OutboxItem, channel_of
from nanoclaw.store.db import now_ms
from nanoclaw.store.messages import Store
from nanoclaw.waker import Waker

log = logging.getLogger(__name__)
MAX_BACKOFF_S = 300.0


def split_text(text: str, limit: int) -> list[str]:
    """Chunks of at most `limit` characters, cut at a paragraph, line or space where possible."""
    text = text.strip()
    chunks: list[str] = []
    while len(text) > limit:
        window = text[: limit + 1]
        cut = -1
        for sep in ("\n\n", "\n", " "):
            cut = window.rfind(sep, 0, limit + 1)
            if cut > limit // 3:
                break
        if cut <= 0:
            cut = limit
        chunks.append(text[:cut].rstrip())
        text = text[cut:].lstrip()
    if text:
        chunks.append(text)
    return chunks


def backoff_s(attempts: int, retry_after: float | None = None) -> float:
    if retry_after is not None and retry_after >= 0:
        return min(retry_after, MAX_BACKOFF_S * 4)
    return min(2.0**attempts, MAX_BACKOFF_S)


def outbox_id(key: str) -> int | None:
    """The outbox row a delivery key names (`nanoclaw-ID-...`, as `_deliver` builds them)."""
    head, _, rest = key.partition("-")
    number = rest.split("-", 1)[0]
    return int(number) if head == "nanoclaw" and number.isdigit() else None


class Router:
    def __init__(
        self,
        store: Store,
        channels: Mapping[str, Channel],
        poll_s: float,
        on_sent: Callable[[OutboxItem], None] | None = None,  # the reply latency metric
    ) -> None:
        self._store = store
        self._channels = channels
        self._poll_s = poll_s
        self._on_sent = on_sent
        self._waker = Waker()

    def wake(self) -> None:
        self._waker.set()

    async def deliver_once(self) -> int:
        """The step: send every due row this process owns; returns how many were sent."""
        items = await self._store.claim_outbox(list(self._channels))
        sent = 0
        for item in items:
            sent += await self._deliver(item)
        return sent

    async def _deliver(self, item: OutboxItem) -> int:
        channel = self._channels[channel_of(item.chat_id)]
        chunks = split_text(item.text, channel.max_message_len)
        try:
            if item.file_path is not None:
                await self._send_file(channel, item)
                chunks = []
            for index in range(item.chunks_sent, len(chunks)):
                key = f"nanoclaw-{item.id}-{index}-{zlib.crc32(chunks[index].encode()):08x}"
                await channel.send(item.chat_id, chunks[index], key)
                if index + 1 < len(chunks):
                    await self._store.outbox_progress(item.id, index + 1)
        except PermanentDeliveryError as exc:
            log.error("router outbox=%s chat=%s failed for good: %s", item.id, item.chat_id, exc)
            await self._store.outbox_failed(item.id, str(exc))
            self._forget_file(item)
            return 0
        except Exception as exc:  # any channel failure is retried; the row stays in the outbox
            retry_after = exc.retry_after if isinstance(exc, DeliveryError) else None
            delay = backoff_s(item.attempts, retry_after)
            log.warning(
                "router outbox=%s chat=%s attempt=%d failed (%s); retry in %.1fs",
                item.id,
                item.chat_id,
                item.attempts + 1,
                exc,
                delay,
            )
            await self._store.outbox_retry(item.id, int(delay * 1000), str(exc))
            return 0
        await self._store.outbox_sent(item.id)
        self._forget_file(item)
        if self._on_sent is not None:
            self._on_sent(item)
        return 1

    async def _send_file(self, channel: Channel, item: OutboxItem) -> None:
        """Upload (the caption goes with it); a network without files is told in words."""
        assert item.file_path is not None
        name = item.file_name or "file"
        key = f"nanoclaw-{item.id}-file"
        try:
            await channel.send_file(item.chat_id, Path(item.file_path), name, item.text, key)
        except FilesUnsupported as exc:
            log.info("router outbox=%s chat=%s: %s", item.id, item.chat_id, exc)
            note = f"(I have a file for you, {name}, but this chat cannot receive files.)"
            text = f"{note}\n{item.text}" if item.text else note
            for index, chunk in enumerate(split_text(text, channel.max_message_len)):
                await channel.send(item.chat_id, chunk, f"{key}-note-{index}")

    @staticmethod
    def _forget_file(item: OutboxItem) -> None:
        if item.file_path is not None:
            with contextlib.suppress(OSError):
                os.unlink(item.file_path)

    async def typing(self, chat_id: str, on: bool) -> None:
        channel = self._channels.get(channel_of(chat_id))
        if channel is None:
            return
        try:
            await channel.set_typing(chat_id, on)
        except Exception as exc:  # typing is cosmetic; never let it fail a run
            log.debug("typing chat=%s failed: %s", chat_id, exc)

    async def run(self) -> None:
        while True:
            try:
                await self.deliver_once()
                due = await self._store.next_outbox_due_ms(list(self._channels))
            except Exception:
                log.exception("router step failed")
                due = None
            timeout = self._poll_s
            if due is not None:
                timeout = max(0.0, min(timeout, (due - now_ms()) / 1000))
            await self._waker.wait(timeout)
