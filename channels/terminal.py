"""The terminal channel: `nanoclaw chat`, a local REPL (or piped stdin) on the same store.

It writes normalised messages to SQLite like any other channel and delivers the replies
of `term:` chats. Beside a running daemon it only ingests and delivers; on its own it
runs the core in-process.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import os
import shutil
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from nanoclaw import staging
from nanoclaw.channel import Inbound
from nanoclaw.config import Settings
from nanoclaw.display import printable
from nanoclaw.errors import PermanentDeliveryError
from nanoclaw.models import Group, InboundMessage, Message, stored, valid_folder
from nanoclaw.store import Store
from nanoclaw.trigger import LOCAL_SENDER, triggers

HELP = "commands: /list  /switch GROUP  /history [N]  /add GROUP  /quit"


class TerminalChannel:
    name = "term"
    max_message_len = 50_000

    def __init__(
        self, assistant_name: str, out: TextIO = sys.stdout, received: Path | None = None
    ) -> None:
        self.assistant_name = assistant_name
        self.received = received  # where files sent to the terminal are kept
        self.current = "term:main"
        self.out = out
        self.delivered = 0
        self._inbound: Inbound | None = None

    async def start(self, inbound: Inbound) -> None:
        self._inbound = inbound

    async def stop(self) -> None:
        self._inbound = None

    async def send(self, chat_id: str, text: str, key: str = "") -> None:
        where = "" if chat_id == self.current else f" [{chat_id.removeprefix('term:')}]"
        # the agent's words (and a file's name and caption): no escape sequence reaches the tty
        print(printable(f"{self.assistant_name}{where}: {text}"), file=self.out, flush=True)
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

    async def set_typing(self, chat_id: str, typing: bool) -> None:
        if typing and self.out.isatty():
            print(f"({self.assistant_name} is working...)", file=self.out, flush=True)


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


def parse_command(line: str) -> tuple[str, str] | None:
    """('switch', 'work') for '/switch work'; None for an ordinary message."""
    if not line.startswith("/") or line.startswith("//"):
        return None
    head, _, arg = line[1:].partition(" ")
    return head.lower(), arg.strip()


@dataclass
class TerminalChat:
    """The user's side: sends lines as `term:local`, runs the slash commands."""

    store: Store
    inbound: Inbound
    channel: TerminalChannel
    settings: Settings
    folder: str

    @property
    def chat_id(self) -> str:
        return f"term:{self.folder}"

    async def select(self, folder: str, create: bool = False) -> str:
        group = await self.store.group(folder)
        if group is None:
            if not create:
                return f"no group {folder!r}; /add {folder} creates it"
            if not valid_folder(folder):
                return f"{folder!r} is not a valid group name (a-z, 0-9, _ and -)"
            await self.store.save_group(
                Group(folder=folder, name=folder, chats=(f"term:{folder}",), requires_trigger=False)
            )
        await self.store.bind_chat(folder, f"term:{folder}")
        self.folder = folder
        self.channel.current = self.chat_id
        return f"now chatting in {folder}"

    async def send(self, text: str) -> Message | None:
        msg = InboundMessage(
            chat_id=self.chat_id,
            platform_id=uuid.uuid4().hex,
            sender_id=LOCAL_SENDER,
            sender_name=getpass.getuser(),
            text=text,
            ts_ms=int(time.time() * 1000),
            chat_name=f"terminal ({self.folder})",
            is_group_chat=False,
        )
        msg_id = await self.inbound.message(msg)
        return None if msg_id is None else stored(msg_id, msg)

    async def command(self, name: str, arg: str) -> str | None:
        """Run a slash command; returns the text to show, or None to quit."""
        if name in ("quit", "exit", "q"):
            return None
        if name == "list":
            lines = []
            for g in await self.store.groups():
                mark = "*" if g.folder == self.folder else " "
                lines.append(f"{mark} {g.folder:<16} {', '.join(g.chats)}")
            return "\n".join(lines) or "no groups"
        if name in ("switch", "add") and arg:
            return await self.select(arg, create=name == "add")
        if name == "history":
            count = int(arg) if arg.isdigit() else 20
            said = await self.store.transcript(self.chat_id, count)
            name = self.settings.assistant_name
            return "\n".join(f"{who or name}: {text}" for who, text in said) or "no messages yet"
        return HELP

    async def wait_for_replies(self, last_trigger: int, timeout: float) -> bool:
        """True once the group's cursor passed `last_trigger` and its replies were delivered."""
        deadline = time.monotonic() + timeout
        reported = {run.id for run in await self.store.runs(self.folder, limit=3)}
        while time.monotonic() < deadline:
            cursor = await self.store.cursor(self.folder)
            if cursor >= last_trigger and await self.store.pending_outbox(self.chat_id) == 0:
                return True
            for run in await self.store.runs(self.folder, limit=3):
                if run.status not in ("ok", "running") and run.id not in reported:
                    reported.add(run.id)
                    note = f"(run {run.id} {run.status}: {run.error}; retrying)"
                    print(printable(note), file=sys.stderr)
            await asyncio.sleep(0.05)
        return False

    async def piped(self, lines: list[str]) -> int:
        group = await self.store.group(self.folder)
        last = 0
        for line in (raw.strip() for raw in lines):
            if not line:
                continue
            parsed = parse_command(line)
            if parsed is not None:
                shown = await self.command(*parsed)
                if shown is None:
                    break
                print(printable(shown), flush=True)
                group = await self.store.group(self.folder)
                continue
            msg = await self.send(line)
            if msg is not None and group is not None:
                allowed = self.settings.allowed_senders
                if triggers(msg, group, allowed, self.settings.trigger):
                    last = msg.id
        if not last:
            return 0
        if await self.wait_for_replies(last, self.settings.agent_timeout_s + 30):
            return 0
        print("no reply arrived in time; see `nanoclaw doctor` and store/logs/", file=sys.stderr)
        return 1

    async def repl(self) -> int:
        history = self.settings.layout.store / "chat_history"
        try:
            import readline  # line editing and history for input()

            readline.set_history_length(1000)
            if history.exists():
                readline.read_history_file(history)
        except (ImportError, OSError):
            readline = None  # type: ignore[assignment]
        try:
            return await self._loop()
        finally:
            if readline is not None:
                with contextlib.suppress(OSError):
                    readline.write_history_file(history)

    async def _loop(self) -> int:
        print(f"nanoclaw chat: group {self.folder}. {HELP}", flush=True)
        while True:
            try:
                line = await asyncio.to_thread(input, f"[{self.folder}] > ")
            except EOFError:
                return 0
            line = line.strip()
            if not line:
                continue
            parsed = parse_command(line)
            if parsed is None:
                await self.send(line)
                continue
            shown = await self.command(*parsed)
            if shown is None:
                return 0
            print(printable(shown), flush=True)  # /history holds the agent's words
