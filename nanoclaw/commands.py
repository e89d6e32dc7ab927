"""The chat commands the host answers itself (`/stop`, `/status`, `/pause`, `/resume`, and in
`main` the approvals `/allow` and `/deny`): the parser of a chat line into one, and the words
of their answers. Pure: no store, no clock. What a command does is the `control` module's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

Command = Literal["stop", "status", "pause", "resume"]
COMMANDS: dict[str, Command] = {
    "stop": "stop",
    "status": "status",
    "pause": "pause",
    "resume": "resume",
}
# "/stop", "/stop@andy_bot" (Telegram's form in groups), then nothing but blanks: "/stop now"
# or "/stopping" is an ordinary message for the model, not a command.
COMMAND_RE = re.compile(r"\A/(?P<name>[A-Za-z]+)(?:@(?P<bot>[A-Za-z0-9_]{1,64}))?\s*\Z")
# "/allow family api.example.org", "/allow family api.example.org always", "/deny family x.org"
APPROVAL_RE = re.compile(
    r"\A/(?P<verb>allow|deny)(?:@(?P<bot>[A-Za-z0-9_]{1,64}))?\s+(?P<folder>\S+)\s+"
    r"(?P<domain>\S+)(?:\s+(?P<scope>once|always))?\s*\Z",
    re.IGNORECASE,
)
Verdict = Literal["once", "always", "deny"]
WHAT_CAP = 60  # characters of a tool's command shown in /status and progress lines


def parse_command(text: str, bot_username: str = "") -> Command | None:
    """The command in `text`, or None for anything else. The `@bot` form counts only when it
    names this bot (`bot_username`, case-insensitive): `/stop@other_bot` is another bot's."""
    match = COMMAND_RE.match(text.strip())
    if match is None:
        return None
    bot = match["bot"]
    if bot is not None and (not bot_username or bot.casefold() != bot_username.casefold()):
        return None
    return COMMANDS.get(match["name"].lower())


@dataclass(frozen=True)
class Approval:
    """`/allow GROUP DOMAIN [once|always]` (once when not said) or `/deny GROUP DOMAIN`, as
    written: the control module checks that the group exists and the domain is one."""

    verdict: Verdict
    folder: str
    domain: str

    @property
    def line(self) -> str:
        if self.verdict == "deny":
            return f"/deny {self.folder} {self.domain}"
        return f"/allow {self.folder} {self.domain} {self.verdict}"


def parse_approval(text: str, bot_username: str = "") -> Approval | None:
    """The approval in `text`, or None for anything else (the `@bot` form as for commands)."""
    match = APPROVAL_RE.match(text.strip())
    if match is None:
        return None
    bot = match["bot"]
    if bot is not None and (not bot_username or bot.casefold() != bot_username.casefold()):
        return None
    verdict: Verdict = "deny"
    if match["verb"].lower() == "allow":
        verdict = "always" if (match["scope"] or "").lower() == "always" else "once"
    elif match["scope"]:
        return None  # "/deny g d always" is no form of ours
    return Approval(verdict, match["folder"], match["domain"].lower())


def shorten(text: str, cap: int = WHAT_CAP) -> str:
    """One printable line of at most `cap` characters: a tool's command as shown to people
    (it may hold anything the model wrote, so control characters become blanks)."""
    line = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    return line if len(line) <= cap else line[: cap - 3] + "..."


def count(n: int, what: str) -> str:
    return f"{n:,} {what}{'' if n == 1 else 's'}"


def stopped_text(seconds: float, steps: int, tokens: int) -> str:
    """ "stopped after 42 s, 6 steps, 12,400 tokens"."""
    return f"stopped after {seconds:.0f} s, {count(steps, 'step')}, {count(tokens, 'token')}"


NOTHING_TO_STOP = "nothing to stop: no agent is working here"


@dataclass(frozen=True)
class Status:
    """What `/status` reports of one group, gathered by the control module."""

    live: bool = False
    seconds: float = 0.0  # how long the run has worked
    steps: int = 0  # tool calls it started
    tool: str = ""  # the tool running now, "" between tools
    what: str = ""  # its command or path, shortened
    paused: bool = False
    task: bool = False  # a scheduled run, not one for messages
    queue_position: int = 0  # 1 for the first group waiting for a slot; 0: not waiting
    budget_left: str = ""  # "" when the group has no daily budget
    next_task: str = ""  # "" when no task is scheduled


def status_text(s: Status) -> str:
    lines: list[str] = []
    if s.live:
        kind = "a scheduled task" if s.task else "an agent"
        state = " (paused)" if s.paused else ""
        lines.append(f"{kind} is working{state}: {s.seconds:.0f} s, step {s.steps}")
        if s.tool:
            lines.append(f"running {s.tool}: {s.what}" if s.what else f"running {s.tool}")
    elif s.queue_position:
        lines.append(f"waiting for a free slot: position {s.queue_position}")
    else:
        lines.append("no agent is working")
    if s.budget_left:
        lines.append(f"budget left today: {s.budget_left}")
    lines.append(f"next task: {s.next_task}" if s.next_task else "no task scheduled")
    return "\n".join(lines)
