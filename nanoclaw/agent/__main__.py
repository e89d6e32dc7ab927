"""Entry point inside the sandbox: read the run's config on stdin, answer, wait for follow-ups.

Progress goes to stdout as JSON lines (`ready`, `turn_done`, `error`, `progress` per tool
call, `paused`); replies and memory go to /ipc/outbound as files; the model is reached only
through /ipc/llm.sock. A PAUSE marker in /ipc/input holds it before its next step.
"""

from __future__ import annotations

import os
import re
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from .conversation import history_for, strip_internal, system_prompt, with_breakpoint
from .ipcfiles import Inbox, event, write_json
from .model import ModelClient, ModelError
from .protocol import EGRESS_SOCK, INITIAL_INPUT, INPUT, LLM_SOCK, OUTBOUND, RunConfig, request
from .tools import TOOL_SPECS, Toolbox
from .vision import image_blocks, joined, split_images, without_images

MAX_STEPS = 40
WHAT_CAP = 200  # characters of a tool's command or path in its progress event
EXIT_RE = re.compile(r"exit code (-?[0-9]+)")


def what_of(args: dict[str, Any]) -> str:
    """The part of a tool call a person recognises: its command, else its path."""
    for key in ("command", "path", "name"):
        value = args.get(key)
        if isinstance(value, str):
            return value[:WHAT_CAP]
    return ""


def exit_of(name: str, result: str) -> int | None:
    """A bash call's exit code from its result's first line; None for other tools."""
    match = EXIT_RE.match(result) if name == "bash" else None
    return int(match[1]) if match else None


def _block(block: dict[str, Any]) -> dict[str, Any]:
    """A reply's content block as it goes back into the history: text and tool calls with
    only the fields the API takes back; any other block (thinking...) as it came."""
    if block.get("type") == "text":
        return {"type": "text", "text": block.get("text", "")}
    if block.get("type") == "tool_use":
        return {k: block.get(k) for k in ("type", "id", "name", "input")}
    return {k: v for k, v in block.items() if v is not None}


def _input(block: dict[str, Any]) -> dict[str, Any]:
    value = block.get("input")
    return value if isinstance(value, dict) else {}


def describe_error(exc: ModelError) -> str:
    """One short line for the host's log: the status, the API's error type and message, never
    the whole body. The host decides what an error means (it saw the upstream answer in its
    proxy); this line only says it in words."""
    if exc.status is None:  # the proxy socket itself: timeouts too
        return f"model: cannot reach the model proxy ({exc.kind})"
    status, kind = exc.status, exc.kind
    text = " ".join(exc.message.split())[:300]  # one line, bounded
    if text.startswith("nanoclaw:"):  # the host's own refusal (policy, size, budget)
        return f"model: {text}"
    if status == 502:
        return f"model: cannot reach the model endpoint ({text})"
    if status in (401, 403):
        return f"model: the model refused the key ({status} {kind}: {text})"
    return f"model: {status} {kind}: {text}"


class Agent:
    def __init__(
        self, cfg: RunConfig, root: Path = Path("/"), client: ModelClient | None = None
    ) -> None:
        self.cfg = cfg
        self.workspace = root / "workspace"
        self.ipc = root / "ipc"
        self.client = client or ModelClient(self.ipc / LLM_SOCK, cfg.max_retries)
        self.tools = Toolbox(
            self.workspace,
            self.send,
            bash_timeout_s=cfg.bash_timeout_s,
            ipc=self.ipc,
            confirm_s=cfg.confirm_s,
        )
        self.history = history_for(cfg, self.workspace)
        self.root = root
        self.inbox = Inbox(self.ipc / INPUT)
        self.last_input = INITIAL_INPUT  # the newest input this agent took: its turn_done names it
        self.closing = False  # the host asked to close while a turn ran: exit after it

    def send(self, payload: dict[str, Any]) -> str:
        return write_json(self.ipc / OUTBOUND, payload)

    def turn(self, prompt: str) -> str:
        """One user turn through the tool loop; returns the final text."""
        zone = ZoneInfo(self.cfg.tz)
        now = datetime.now(zone).strftime("%A %Y-%m-%d %H:%M %Z")
        system = system_prompt(self.cfg, self.workspace, self.root / "global", self.root / "skills")
        tools = [dict(t) for t in TOOL_SPECS]
        tools[-1]["cache_control"] = {"type": "ephemeral"}
        messages = self.history.load()
        first = len(messages)
        text, images = split_images(prompt)
        said = f"[now: {now}]\n{text}"
        shown = image_blocks(self.workspace, images)
        messages.append(
            {"role": "user", "content": [*shown, {"type": "text", "text": said}] if shown else said}
        )
        final = ""
        for _ in range(MAX_STEPS):
            self.hold()
            reply = self.client.create(
                model=self.cfg.model,
                max_tokens=self.cfg.max_tokens,
                system=[{"type": "text", "text": system, "cache_control": {"type": "ephemeral"}}],
                tools=tools,
                messages=with_breakpoint(messages),  # the history itself stays unmarked
            )
            content = [b for b in reply["content"] if isinstance(b, dict)]
            messages.append({"role": "assistant", "content": [_block(b) for b in content]})
            uses = [b for b in content if b.get("type") == "tool_use"]
            final = "".join(str(b.get("text", "")) for b in content if b.get("type") == "text")
            if reply.get("stop_reason") != "tool_use" or not uses:
                break
            results = [
                {"type": "tool_result", "tool_use_id": b.get("id"), "content": self.tool(b)}
                for b in uses
            ]
            messages.append({"role": "user", "content": [*results, *self._arrived()]})
        else:
            final = final or "I stopped after too many steps; ask me to continue."
        self.history.save(without_images(messages, first, said))
        return strip_internal(final)

    def hold(self) -> None:
        """Wait here while the owner paused the run: before each model call and each tool."""
        if self.inbox.paused():
            event("paused", on=True)
            self.inbox.hold()
            event("paused", on=False)

    def tool(self, block: dict[str, Any]) -> str:
        """Run one tool call, reported as it starts and as it ends."""
        self.hold()
        name, args = str(block.get("name")), _input(block)
        what = what_of(args)
        event("progress", phase="start", tool=name, what=what)
        began = time.monotonic()
        result = self.tools.run(name, args)
        ms = int((time.monotonic() - began) * 1000)
        event("progress", phase="end", tool=name, what=what, exit=exit_of(name, result), ms=ms)
        return result

    def _arrived(self) -> list[dict[str, Any]]:
        """Follow-ups that came while tools ran, as a text block for the next model call:
        the agent reads them between tool steps, not only after its turn."""
        items, close = self.inbox.take()
        self.closing = self.closing or close
        if not items:
            return []
        self.last_input = items[-1][0]
        text, images = split_images(joined([p for _, p in items]))
        heading = {"type": "text", "text": f"[new messages while you were working]\n{text}"}
        return [heading, *image_blocks(self.workspace, images)]

    def serve(self, prompt: str, idle_timeout: float) -> None:
        while True:
            answer = self.turn(prompt)
            if answer:
                self.send(request("send_message", text=answer))
            event("turn_done", input=self.last_input)
            if self.closing:
                idle_timeout = 0.0
            items, close = self.inbox.wait(idle_timeout)
            if not items:
                return
            prompt = joined([p for _, p in items])
            self.last_input = items[-1][0]
            if close:
                idle_timeout = 0.0


def main() -> int:
    started = time.monotonic()
    try:
        cfg = RunConfig.from_json(sys.stdin.read())
    except ValueError as exc:  # a host and runner of different versions: say so, do nothing
        event("error", error=str(exc)[:500])
        return 2
    if cfg.egress_port:  # allowlist policy: tools reach /ipc/egress.sock through it
        from .relay import start_relay  # asyncio: ~20 ms of start-up only a relay needs

        failure = start_relay(Path("/ipc") / EGRESS_SOCK, cfg.egress_port)
        if failure:
            print(f"egress relay not started: {failure}", file=sys.stderr)
    agent = Agent(cfg)
    event("ready", startup_ms=int((time.monotonic() - started) * 1000))
    try:
        agent.serve(cfg.prompt, cfg.idle_timeout_s)
    except ModelError as exc:
        event("error", error=describe_error(exc))
        return 1
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # Everything is written (IPC files are renamed into place, the history saved): skip the
    # interpreter's teardown, ~15 ms on the way to the next group's run. An exception in
    # main() still ends the usual way, with its traceback.
    os._exit(code)
