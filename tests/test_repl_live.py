"""The REPL while the agent works, on a real pty: /status names the tool running, a line typed
meanwhile is a follow-up the agent's next model request carries, /stop ends the run and not
the chat, and the prompt stays readable around the agent's lines."""

from __future__ import annotations

import re
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from conftest import chat_env
from fake_anthropic import FakeAnthropic, Reply, directive_reply, text_reply
from pty_terminal import Pty, alive, descendants, until

from nanoclaw.store.messages import Store

ARRIVED = "[new messages while you were working]"
GATE = "until [ -e go ]; do sleep 0.1; done"  # the first tool: works until the test says


def steered(body: dict[str, Any]) -> Reply:
    """The default responder, which answers a tool result with its text; a follow-up that
    came with the result is answered by its own directives instead."""
    users = [m for m in body.get("messages", []) if m.get("role") == "user"]
    content = users[-1].get("content") if users else None
    if isinstance(content, list):
        for block in content:
            if block.get("type") == "text" and str(block.get("text", "")).startswith(ARRIVED):
                return directive_reply({"messages": [{"role": "user", "content": block["text"]}]})
    return directive_reply(body)


async def test_commands_and_a_follow_up_while_the_agent_works(
    home: Path, fake: FakeAnthropic, store: Store
) -> None:
    fake.responder = steered
    inputs = home / "store" / "ipc" / "main" / "input"
    argv = [sys.executable, "-m", "nanoclaw.cli.main", "chat"]
    term = Pty(argv, home, chat_env(home, fake.base_url))
    try:
        term.expect("[main] > ")
        term.send(f"@Andy [[bash: {GATE}]]")
        term.expect(f"Running: {GATE}\n[main] > ")  # the prompt drawn again below it
        start = len(term.buffer)
        term.send("/status")
        out = term.expect("no task scheduled\n[main] > ", start=start)
        assert "an agent is working: " in out[start:] and f"running bash: {GATE}\n" in out[start:]

        term.send("also [[bash: sleep 30]]")  # a follow-up, handed to the live agent
        until(lambda: any(inputs.glob("*.json")))
        (home / "groups" / "main" / "go").touch()  # the first tool ends: the next step
        term.expect("Running: sleep 30\n[main] > ", start=start)
        sandboxes = descendants(term.proc.pid)
        assert alive(sandboxes)

        start = len(term.buffer)
        term.send("/pause")
        term.expect("paused: the agent waits before its next step", start=start)
        term.send("/status")
        term.expect("an agent is working (paused): ", start=start)
        term.expect("running bash: sleep 30\n", start=start)
        term.send("/resume")
        term.expect("resumed\n[main] > ", start=start)
        term.send("/stop")
        out = term.expect(" tokens\n[main] > ", start=start)
        assert re.search(r"\nstopped after \d+ s, 2 steps, [\d,]+ tokens\n", out[start:])
        until(lambda: not alive(sandboxes))  # killed mid-tool, the whole sandbox
        start = len(term.buffer)
        term.send("/list")  # the REPL is still there
        term.expect("* main", start=start)
        term.send("/quit")
        assert term.proc.wait(timeout=30) == 0
    finally:
        term.close()

    first, second = (str(r.body["messages"]) for r in fake.requests[:2])
    assert "sleep 30" not in first and ARRIVED in second and "also [[bash: sleep 30]]" in second
    assert len(fake.requests) == 2  # the stopped run asked nothing more
    runs = await store.runs("main")
    assert [r.status for r in runs] == ["stopped"]


async def test_quit_while_the_agent_works_stops_it_and_ends_the_chat(
    home: Path, fake: FakeAnthropic, store: Store
) -> None:
    fake.script(replace(text_reply("too late"), delay=120))
    argv = [sys.executable, "-m", "nanoclaw.cli.main", "chat"]
    term = Pty(argv, home, chat_env(home, fake.base_url))
    try:
        term.expect("[main] > ")
        term.send("a slow question")
        await fake.await_requests(1, timeout=60)  # the agent waits for the model
        sandboxes = descendants(term.proc.pid)
        assert alive(sandboxes)
        term.send("/quit")
        assert term.proc.wait(timeout=30) == 0
        assert re.search(r"\nstopped after \d+ s, 0 steps, [\d,]+ tokens\n", term.expect("tokens"))
        until(lambda: not alive(sandboxes))
    finally:
        term.close()
    assert [r.status for r in await store.runs("main")] == ["stopped"]  # never asked again


async def test_end_of_input_while_the_agent_works_waits_for_the_reply_then_ends(
    home: Path, fake: FakeAnthropic
) -> None:
    """Ctrl+D while the agent works is no stop: as with piped input, the chat ends once the
    replies came."""
    fake.script(replace(text_reply("worth the wait"), delay=2))
    argv = [sys.executable, "-m", "nanoclaw.cli.main", "chat"]
    term = Pty(argv, home, chat_env(home, fake.base_url))
    try:
        term.expect("[main] > ")
        term.send("a slow question")
        await fake.await_requests(1, timeout=60)
        term.ctrl_d()
        term.expect("Andy: worth the wait\n")
        assert term.proc.wait(timeout=30) == 0
    finally:
        term.close()
