"""The owner's side of `nanoclaw chat`: the REPL (or piped stdin), slash commands, Ctrl+C.

Lines go to the store as `term:local` like any channel's messages; after a question the
REPL waits for its replies, then prompts again. Ctrl+C at the prompt ends the chat; while
the agent works it stops the run (in-process), and the stopped batch is never asked again.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import signal
import sys
import termios
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal, TextIO

from channels.terminal import TerminalChannel
from nanoclaw.channel import Answer, Inbound
from nanoclaw.cli.tape import repl_tape
from nanoclaw.commands import COMMANDS
from nanoclaw.config import Settings
from nanoclaw.display import printable
from nanoclaw.models import Group, InboundMessage, Message, stored, valid_folder
from nanoclaw.sandbox.run import HELD
from nanoclaw.store.messages import Store
from nanoclaw.supervisor import Stopped
from nanoclaw.trigger import LOCAL_SENDER, triggers

HELP = (
    "commands: /list  /switch GROUP  /history [N]  /add GROUP  /tape [recent|search|stats]  "
    "/quit; for the group's agent: /status  /pause  /resume  /stop"
)
INTERRUPTED = 130  # the exit code of Ctrl+C, as a shell reports a SIGINT
Waited = Literal["replied", "held", "timeout"]
BESIDE_DAEMON = (
    "not stopped: the daemon runs this group's agent and this chat cannot stop it; "
    "its reply will still show here (stopping the daemon ends every run, and asks again)"
)
Stop = Callable[[str, int], Awaitable[Stopped | None]]  # (folder, last message id) -> summary
CONTROL_BESIDE_DAEMON = "the daemon runs this group's agent: send /{} in a chat it serves"
Line = str | Literal[False] | None  # a line, False for Ctrl+C, None at the end of input


def parse_command(line: str) -> tuple[str, str] | None:
    """('switch', 'work') for '/switch work'; None for an ordinary message."""
    if not line.startswith("/") or line.startswith("//"):
        return None
    head, _, arg = line[1:].partition(" ")
    return head.lower(), arg.strip()


def stopped_line(stopped: Stopped | None) -> str:
    """What the owner reads after Ctrl+C stopped the agent (`stop` of the orchestrator)."""
    if stopped is None:
        return "stopped before the agent started; it will not be asked again"
    turns = f"{stopped.turns} turn{'' if stopped.turns == 1 else 's'}"
    return f"stopped run {stopped.run_id} after {stopped.seconds:.0f} s ({turns} done)"


@dataclass
class TerminalChat:
    """Sends lines as `term:local`, runs the slash commands, waits for the replies."""

    store: Store
    inbound: Inbound
    channel: TerminalChannel
    settings: Settings
    folder: str
    stop: Stop | None = None  # the in-process orchestrator's; None beside a daemon
    control: Answer | None = None  # the in-process host's /status, /pause...; None beside one
    interrupted: asyncio.Event = field(default_factory=asyncio.Event)  # set on Ctrl+C

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

    async def question(self, text: str) -> int:
        """Store the line; its id when it starts the agent (a trigger, or none needed), else 0."""
        group = await self.store.group(self.folder)
        msg = await self.send(text)
        if msg is None or group is None:
            return 0
        allowed = self.settings.allowed_senders
        return msg.id if triggers(msg, group, allowed, self.settings.trigger) else 0

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
        if name == "tape":
            return await repl_tape(self.store, arg, self.settings.zone)
        command = COMMANDS.get(name)
        if command is not None and not arg:
            if self.control is None:
                return CONTROL_BESIDE_DAEMON.format(command)
            return await self.control(self.folder, command, 0)
        if name in ("switch", "add") and arg:
            return await self.select(arg, create=name == "add")
        if name == "history":
            count = int(arg) if arg.isdigit() else 20
            said = await self.store.transcript(self.chat_id, count)
            name = self.settings.assistant_name
            return "\n".join(f"{who or name}: {text}" for who, text in said) or "no messages yet"
        return HELP

    async def wait_for_replies(self, last_trigger: int, timeout: float) -> Waited:
        """`replied` once the group's cursor passed `last_trigger` and its replies were
        delivered; `held` when the run cannot be retried until the next message (a refused
        key, tools that cannot be built), once the note saying so was delivered.

        A run of the group at work shows "is working" here too: beside a daemon no router
        of this process hears of its typing.
        """
        deadline = time.monotonic() + timeout
        reported = {run.id for run in await self.store.runs(self.folder, limit=3)}
        held = False
        while time.monotonic() < deadline:
            cursor = await self.store.cursor(self.folder)
            if cursor >= last_trigger and await self.store.pending_outbox(self.chat_id) == 0:
                return "replied"
            runs = await self.store.runs(self.folder, limit=3)
            if cursor < last_trigger and any(run.status == "running" for run in runs):
                await self.channel.set_typing(self.chat_id, True)
            for run in runs:
                if run.status not in ("ok", "running", "stopped") and run.id not in reported:
                    reported.add(run.id)
                    again = "" if run.status in HELD else "; retrying"
                    note = f"(run {run.id} {run.status}: {run.error}{again})"
                    print(printable(note), file=sys.stderr)
                    if run.status in HELD:  # a refused key, no tools: no retry, no reply comes
                        held = True
            if held and await self.store.pending_outbox(self.chat_id) == 0:
                return "held"  # the note that says why was delivered
            await asyncio.sleep(0.05)
        return "timeout"

    async def _until_interrupted(self, work: asyncio.Future[Any]) -> bool:
        """Wait for `work`; False (and `work` cancelled) when Ctrl+C came first."""
        self.interrupted.clear()
        ctrl_c = asyncio.ensure_future(self.interrupted.wait())
        try:
            await asyncio.wait({work, ctrl_c}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ctrl_c.cancel()
            finished = work.done()
            work.cancel()
        return finished

    async def answer(self, last: int) -> int:
        """Wait for the replies to message `last`: 0 once delivered, 1 when none came in
        time, INTERRUPTED when Ctrl+C stopped the agent."""
        timeout = self.settings.agent_timeout_s + 30
        waiting = asyncio.ensure_future(self.wait_for_replies(last, timeout))
        if not await self._until_interrupted(waiting):
            self.channel.show("")  # off the line ^C was echoed on
            stopped = None if self.stop is None else await self.stop(self.folder, last)
            print(BESIDE_DAEMON if self.stop is None else stopped_line(stopped), flush=True)
            return INTERRUPTED
        if waiting.result() != "timeout":
            return 0 if waiting.result() == "replied" else 1
        print("no reply arrived in time; see `nanoclaw doctor` and store/logs/", file=sys.stderr)
        return 1

    async def run(self, stdin: TextIO) -> int:
        """The REPL on a terminal, else the piped lines; Ctrl+C is this chat's meanwhile."""
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGINT, self.interrupted.set)
        try:
            if stdin.isatty():
                return await self.repl(stdin)
            return await self.piped(stdin.read().splitlines())
        finally:
            loop.remove_signal_handler(signal.SIGINT)

    async def piped(self, lines: list[str]) -> int:
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
                continue
            last = await self.question(line) or last
        return await self.answer(last) if last else 0

    async def repl(self, stdin: TextIO) -> int:
        history = self.settings.layout.store / "chat_history"
        try:
            import readline  # line editing and history for input()

            readline.set_history_length(1000)
            if history.exists():
                readline.read_history_file(history)
            self.channel.typed = readline.get_line_buffer
        except (ImportError, OSError):
            readline = None  # type: ignore[assignment]
        # Ctrl+C leaves input() of the reading thread behind, with readline's terminal
        # mode (no echo) in place: the mode of before comes back on the way out.
        mode: list[Any] | None = None
        with contextlib.suppress(termios.error):
            mode = termios.tcgetattr(stdin.fileno())
        try:
            return await self._loop()
        finally:
            if readline is not None:
                with contextlib.suppress(OSError):
                    readline.write_history_file(history)
            if mode is not None:
                with contextlib.suppress(termios.error):
                    termios.tcsetattr(stdin.fileno(), termios.TCSADRAIN, mode)

    async def _read(self, prompt: str) -> Line:
        """One line typed at `prompt`, read by a thread of its own so that Ctrl+C is heard
        at once (a thread in input() cannot be stopped: it is left behind on exit)."""
        loop = asyncio.get_running_loop()
        line: asyncio.Future[str | None] = loop.create_future()

        def settle(text: str | None) -> None:
            if not line.done():
                line.set_result(text)

        def read() -> None:
            try:
                text: str | None = input(prompt)
            except (EOFError, OSError):
                text = None
            loop.call_soon_threadsafe(settle, text)

        self.channel.prompting(prompt)
        threading.Thread(target=read, name="chat-input", daemon=True).start()
        try:
            if not await self._until_interrupted(line):
                return False
        finally:
            self.channel.prompting(None)
        return line.result()

    async def _loop(self) -> int:
        print(f"nanoclaw chat: group {self.folder}. {HELP}", flush=True)
        while True:
            line = await self._read(f"[{self.folder}] > ")
            if line is None or line is False:
                print(flush=True)  # the shell's prompt on a line of its own
                return 0 if line is None else INTERRUPTED
            line = line.strip()
            if not line:
                continue
            parsed = parse_command(line)
            if parsed is None:
                if last := await self.question(line):
                    await self.answer(last)
                continue
            shown = await self.command(*parsed)
            if shown is None:
                return 0
            print(printable(shown), flush=True)  # /history holds the agent's words
