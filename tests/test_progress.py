"""A run's progress events as the host folds them (the agent's fields are untrusted)."""

from __future__ import annotations

from typing import Any

import pytest

from nanoclaw.progress import Activity, ToolStep, running_line, tool_step


def test_tool_step_takes_a_well_formed_event() -> None:
    ev = {"phase": "end", "tool": "bash", "what": "npm run build", "exit": 2, "ms": 1500}
    assert tool_step(ev) == ToolStep("end", "bash", "npm run build", 2, 1500)


@pytest.mark.parametrize(
    "ev",
    [{"phase": "middle", "tool": "bash"}, {"phase": "start"}, {"phase": "start", "tool": 3}],
)
def test_tool_step_refuses_what_is_not_one(ev: dict[str, Any]) -> None:
    assert tool_step(ev) is None


def test_tool_step_cuts_and_cleans_what_the_agent_wrote() -> None:
    ev = {"phase": "end", "tool": "bash", "what": "x\x1b[2J" * 50, "exit": True, "ms": -5}
    step = tool_step(ev)
    assert step is not None
    assert "\x1b" not in step.what and len(step.what) <= 60
    assert step.exit is None and step.ms == 0  # a bool is no exit code; no negative time


def test_activity_counts_steps_and_knows_the_tool_running_now() -> None:
    activity = Activity()
    start = ToolStep("start", "bash", "make")
    activity.apply(start)
    assert (activity.steps, activity.current) == (1, start)
    activity.apply(ToolStep("end", "bash", "make", 0, 10))
    assert (activity.steps, activity.current) == (1, None)


def test_running_line() -> None:
    assert running_line(ToolStep("start", "bash", "npm run build")) == "Running: npm run build"
    assert running_line(ToolStep("end", "read_file", "a.txt", None, 250)) == "Done: a.txt (0.2 s)"
    assert running_line(ToolStep("end", "bash", "make", 1, 1200)) == "Done: make (exit 1, 1.2 s)"
