"""The owner's side of `nanoclaw chat`: the REPL (or piped stdin), slash commands, Ctrl+C.

Lines go to the store as `term:local` like any channel's messages. While the agent works the
prompt stays: a command typed runs at once, a line is a follow-up. Ctrl+C at the prompt ends
the chat; while the agent works it stops the run, whose batch is never asked again.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import signal
import sys
import termios
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal, TextIO

from channels.lines import Typing
from channels.terminal import TerminalChannel
from nanoclaw.channel import Answer, Approve, Inbound
from nanoclaw.cli.tape import repl_tape
from nanoclaw.commands import COMMANDS, parse_approval
from nanoclaw.config import Settings
from nanoclaw.display import printable
from nanoclaw.models import MAIN, Group, InboundMessage, Message, stored, valid_folder
from nanoclaw.sandbox.run import HELD
from nanoclaw.store.messages import Store
from nanoclaw.supervisor import Stopped
from nanoclaw.trigger import LOCAL_SENDER, triggers

HELP = (
    "commands: /list  /switch GROUP  /history [N]  /add GROUP  /tape [recent|search|stats]  "
    "/quit; for the group's agent: /status  /pause  /resume  /stop; "
    "in main: /allow GROUP DOMAIN [once|always]  /deny GROUP DOMAIN"
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
QUIT = ("quit", "exit", "q")


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
    approve: Approve | None = None  # the in-process host's /allow and /deny; None beside one
    interrupted: asyncio.Event = field(default_factory=asyncio.Event)  # set on Ctrl+C
    typing: Typing = field(init=False)  # the owner's lines on a terminal, from one thread

    def __post_init__(self) -> None:
        self.typing = Typing(self.channel)

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

    async def _approval(self, line: str) -> str:
        """Main's answer about a group's blocked host; the local user is main's owner."""
        approval = parse_approval(line)
        if approval is None:
            return "usage: /allow GROUP DOMAIN [once|always] or /deny GROUP DOMAIN"
        if self.approve is None:
            return CONTROL_BESIDE_DAEMON.format(line.split()[0].lstrip("/"))
        if self.folder != MAIN:
            return "approvals are main's: /switch main first"
        return await self.approve(approval)

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
        if name in QUIT:
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
        if name in ("allow", "deny"):
            return await self._approval(f"/{name} {arg}")
        if name in ("switch", "add") and arg:
            return await self.select(arg, create=name == "add")
        if name == "history":
            count = int(arg) if arg.isdigit() else 20
            said = await self.store.transcript(self.chat_id, count)
            name = self.settings.assistant_name
            return "\n".join(f"{who or name}: {text}" for who, text in said) or "no messages yet"
        return HELP

    async def _answered(self, last: int) -> bool:
        """Whether the agent took message `last` and its replies were delivered."""
        cursor = await self.store.cursor(self.folder)
        return cursor >= last and await self.store.pending_outbox(self.chat_id) == 0

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
            if await self._answered(last_trigger):
                return "replied"
            cursor = await self.store.cursor(self.folder)
            runs = await self.store.runs(self.folder, limit=3)
            if cursor < last_trigger and any(run.status == "running" for run in runs):
                await self.channel.set_typing(self.chat_id, True)
            for run in runs:
                if run.status not in ("ok", "running", "stopped") and run.id not in reported:
                    reported.add(run.id)
                    again = "" if run.status in HELD else "; retrying"
                    self._note(f"(run {run.id} {run.status}: {run.error}{again})", sys.stderr)
                    if run.status in HELD:  # a refused key, no tools: no retry, no reply comes
                        held = True
            if held and await self.store.pending_outbox(self.chat_id) == 0:
                return "held"  # the note that says why was delivered
            await asyncio.sleep(0.05)
        return "timeout"

    async def _first(self, *work: asyncio.Future[Any]) -> bool:
        """Wait for the first of `work` to finish (the others go on); False when Ctrl+C came
        first."""
        self.interrupted.clear()
        ctrl_c = asyncio.ensure_future(self.interrupted.wait())
        try:
            await asyncio.wait({*work, ctrl_c}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ctrl_c.cancel()
        return any(w.done() for w in work)

    async def _until_interrupted(self, work: asyncio.Future[Any]) -> bool:
        """Wait for `work`; False (and `work` cancelled) when Ctrl+C came first."""
        try:
            return await self._first(work)
        finally:
            work.cancel()

    def _note(self, text: str, file: TextIO | None = None) -> None:
        """A line of the chat's own: over the prompt when one is on screen."""
        if self.channel.prompt is not None:
            self.channel.show(printable(text))
        else:
            print(printable(text), file=file or sys.stdout, flush=True)

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
        return self._waited(waiting.result())

    def _waited(self, waited: Waited) -> int:
        if waited != "timeout":
            return 0 if waited == "replied" else 1
        self._note("no reply arrived in time; see `nanoclaw doctor` and store/logs/", sys.stderr)
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
        """One line typed at `prompt`; False when Ctrl+C came first."""
        line = self.typing.line(prompt)
        if not await self._first(line):
            return False
        return self.typing.take()

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
                last = await self.question(line)
                code = await self._work(last) if last else None
                if code is not None:
                    return code
                continue
            shown = await self.command(*parsed)
            if shown is None:
                return 0
            print(printable(shown), flush=True)  # /history holds the agent's words

    async def _work(self, last: int) -> int | None:
        """Wait for the replies to message `last` with the prompt on screen: a command typed
        meanwhile runs at once (/stop ends the wait, /quit stops the run too, /switch leaves it
        working), any other line is a follow-up whose replies are waited for as well. The
        chat's exit code when it ends."""
        self.channel.asked()
        folder, timeout = self.folder, self.settings.agent_timeout_s + 30
        prompt = f"[{folder}] > "
        waiting = asyncio.ensure_future(self.wait_for_replies(last, timeout))
        reading = True  # until Ctrl+D: then the replies are waited for and the chat ends
        try:
            while not waiting.done():
                line = self.typing.line(prompt) if reading else None
                if not await self._first(waiting, *([line] if line else [])):
                    return await self._interrupted(last)
                if line is None or not line.done():
                    continue
                text = self.typing.take()
                if text is None:  # Ctrl+D: no prompt again
                    print(flush=True)
                    reading = False
                    continue
                text = text.strip()
                parsed = parse_command(text)
                if parsed is None:  # a follow-up: the orchestrator hands it to the live agent
                    if text and (asked := await self.question(text)):
                        self.channel.asked()
                        waiting.cancel()
                        last = asked
                        waiting = asyncio.ensure_future(self.wait_for_replies(last, timeout))
                    continue
                name, arg = parsed
                if name in QUIT or (name == "stop" and not arg and self.control is not None):
                    if self.control is not None:  # the run stops, its batch counts as handled
                        self._note(await self.control(self.folder, "stop", last))
                    return None if name == "stop" else 0
                self._note(await self.command(name, arg) or HELP)
                if self.folder != folder:  # switched: the run goes on, its replies marked
                    return None
        finally:
            waiting.cancel()
        self._waited(waiting.result())
        return None if reading else 0

    async def _interrupted(self, last: int) -> int | None:
        """Ctrl+C while waiting: the run stops; once its replies are all here (the agent
        only waits for a follow-up) it ends the chat as at the prompt."""
        if await self._answered(last):
            print(flush=True)
            return INTERRUPTED
        stopped = None if self.stop is None else await self.stop(self.folder, last)
        self._note(BESIDE_DAEMON if self.stop is None else stopped_line(stopped))
        return None
