"""The terminal channel: what `nanoclaw chat` shows of the agent's replies, files and work.

Replies of `term:` chats and the agent's work are printed above the owner's prompt (there
while the agent works too), which is drawn again with what was typed; a reply a scheduled
task wrote is marked with its time. The owner's side (the REPL, Ctrl+C) is `channels.repl`.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import TextIO
from zoneinfo import ZoneInfo

from nanoclaw.channel import Inbound
from nanoclaw.config import Settings
from nanoclaw.display import printable
from nanoclaw.errors import PermanentDeliveryError
from nanoclaw.ipc import staging
from nanoclaw.router import outbox_id
from nanoclaw.store.messages import Store

ERASE_LINE = "\r\x1b[K"  # back to the line's start and clear it: where the prompt was
Origin = Callable[[str], Awaitable[str]]  # a delivery key -> a mark for its line, or ""


class TerminalChannel:
    name = "term"
    max_message_len = 50_000

    def __init__(
        self,
        assistant_name: str,
        out: TextIO = sys.stdout,
        received: Path | None = None,
        origin: Origin | None = None,
    ) -> None:
        self.assistant_name = assistant_name
        self.received = received  # where files sent to the terminal are kept
        self.current = "term:main"
        self.out = out
        self.delivered = 0
        self.prompt: str | None = None  # on screen while the owner types
        self.typed: Callable[[], str] = lambda: ""  # what the owner typed so far (readline's line)
        self._origin = origin
        self._working = False  # "is working" shown since the owner last asked
        self._inbound: Inbound | None = None

    async def start(self, inbound: Inbound) -> None:
        self._inbound = inbound

    async def stop(self) -> None:
        self._inbound = None

    def prompting(self, prompt: str | None) -> None:
        """The REPL drew `prompt` (None: took the line)."""
        self.prompt = prompt

    def asked(self) -> None:
        """The owner sent a question or a follow-up: its work may show once again."""
        self._working = False

    def show(self, line: str) -> None:
        """A line for the owner; over a prompt on screen, which is drawn again below it."""
        if self.prompt is None or not self.out.isatty():
            print(line, file=self.out, flush=True)
            return
        self.out.write(f"{ERASE_LINE}{line}\n{self.prompt}{self.typed()}")
        self.out.flush()

    async def send(self, chat_id: str, text: str, key: str = "") -> None:
        where = "" if chat_id == self.current else f" [{chat_id.removeprefix('term:')}]"
        mark = await self._origin(key) if self._origin is not None and key else ""
        # the agent's words (and a file's name and caption): no escape sequence reaches the tty
        self.show(printable(f"{self.assistant_name}{where}{mark}: {text}"))
        self.delivered += 1

    async def send_file(
        self, chat_id: str, path: Path, name: str, caption: str = "", key: str = ""
    ) -> None:
        """Keep a copy in `received` (the router deletes its own) and say where, like a reply."""
        try:
            size, where = await asyncio.to_thread(self._keep, path, name)
        except OSError as exc:
            raise PermanentDeliveryError(f"terminal: cannot keep the file {name}: {exc}") from exc
        line = f"📎 {name} ({file_size(size)}) saved at {where}"
        await self.send(chat_id, f"{line}\n{caption}" if caption.strip() else line, key)

    def _keep(self, path: Path, name: str) -> tuple[int, Path]:
        size = path.stat().st_size
        if self.received is None:
            return size, path.absolute()
        self.received.mkdir(parents=True, exist_ok=True, mode=0o700)
        staging.sweep(self.received, staging.RECEIVED_RETENTION)  # the old go as new ones come
        stem, suffix = Path(name).stem or "file", Path(name).suffix
        for n in range(1, 10_000):
            target = self.received / (name if n == 1 else f"{stem} ({n}){suffix}")
            try:
                os.link(path, target)  # same file system: no copy; never overwrites
            except FileExistsError:
                continue
            except OSError:
                with target.open("xb") as out, path.open("rb") as src:
                    shutil.copyfileobj(src, out)
            return size, target.absolute()
        raise OSError(f"too many files named {name} in {self.received}")

    def progress(self, chat_id: str, line: str) -> None:
        """A tool call of the agent as it happens ("Running: npm run build")."""
        where = "" if chat_id == self.current else f" [{chat_id.removeprefix('term:')}]"
        self.show(printable(f"{line}{where}"))  # the model wrote the command: escaped

    async def set_typing(self, chat_id: str, typing: bool) -> None:
        """Once per question, on a line of its own; the in-process router and the REPL's
        look at the store (beside a daemon) both call it."""
        if typing and not self._working and chat_id == self.current and self.out.isatty():
            self._working = True
            self.show(printable(f"{self.assistant_name} is working..."))


def create(settings: Settings) -> TerminalChannel:
    return TerminalChannel(settings.assistant_name, received=settings.layout.received)


def file_size(size: int) -> str:
    """Like 12 B, 12.3 kB or 4.5 MB: decimal units, one decimal past bytes."""
    value, unit = float(size), "B"
    for unit in ("B", "kB", "MB", "GB"):
        if round(value, 1) < 1000 or unit == "GB":
            break
        value /= 1000
    return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"


def scheduled_mark(kind: str, created_ms: int, zone: ZoneInfo, now_ms: int) -> str:
    """' [scheduled 08:00]' for a reply a scheduled task wrote (with its date when not
    today); '' for a reply to the owner's own message."""
    if kind != "task":
        return ""
    at = datetime.fromtimestamp(created_ms / 1000, zone)
    today = datetime.fromtimestamp(now_ms / 1000, zone).date()
    return f" [scheduled {at:%H:%M}]" if at.date() == today else f" [scheduled {at:%Y-%m-%d %H:%M}]"


def origin_of(store: Store, zone: ZoneInfo) -> Origin:
    """The mark of a delivered outbox row, looked up by its delivery key."""

    async def origin(key: str) -> str:
        item = outbox_id(key)
        found = None if item is None else await store.outbox_origin(item)
        return "" if found is None else scheduled_mark(*found, zone, int(time.time() * 1000))

    return origin
