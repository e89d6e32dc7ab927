"""A run's progress as the host sees it: each tool call the agent reports (`progress` events)
and whether it waits paused, folded into the `Activity` that `/status`, `/stop` and the
terminal's "Running: ..." lines read. The agent's fields are untrusted: checked and cut here.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from nanoclaw.agent.protocol import Phase
from nanoclaw.commands import shorten

RUNNING, DONE = "Running: ", "Done: "  # the progress lines the terminal prints
NAME_CAP = 40


@dataclass(frozen=True)
class ToolStep:
    """One tool call: as it starts (`phase` "start"), then as it ended."""

    phase: Phase
    tool: str
    what: str  # its command or path, shortened to one printable line
    exit: int | None = None  # a command's exit code; None for other tools or while it runs
    ms: int = 0


Watch = Callable[[ToolStep], Awaitable[None]]  # told of each step as the run's events arrive


def tool_step(ev: dict[str, Any]) -> ToolStep | None:
    """The step of a `progress` event, or None when its fields are not one."""
    phase, code, ms = ev.get("phase"), ev.get("exit"), ev.get("ms", 0)
    if phase not in ("start", "end") or not isinstance(ev.get("tool"), str):
        return None
    if code is not None and (not isinstance(code, int) or isinstance(code, bool)):
        code = None
    if not isinstance(ms, int) or isinstance(ms, bool) or ms < 0:
        ms = 0
    what = ev.get("what")
    return ToolStep(
        "start" if phase == "start" else "end",
        shorten(ev["tool"], NAME_CAP),
        shorten(what if isinstance(what, str) else ""),
        code,
        ms,
    )


@dataclass
class Activity:
    """What a live run is doing: steps (tool calls started), the tool running now, whether
    the owner paused it (`paused`, at once) and whether the agent now waits for the resume
    (`held`, from its own event: it reaches the wait before its next model call or tool)."""

    steps: int = 0
    current: ToolStep | None = None
    paused: bool = False
    held: bool = False

    def apply(self, step: ToolStep) -> None:
        if step.phase == "start":
            self.steps += 1
            self.current = step
        else:
            self.current = None


def running_line(step: ToolStep) -> str:
    """The terminal's line for a step: "Running: npm run build", then how it ended."""
    what = step.what or step.tool
    if step.phase == "start":
        return f"{RUNNING}{what}"
    code = "" if step.exit is None else f"exit {step.exit}, "
    return f"{DONE}{what} ({code}{step.ms / 1000:.1f} s)"
