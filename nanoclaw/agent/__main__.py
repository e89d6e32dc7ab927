"""Entry point inside the sandbox: read the run's config on stdin, answer, wait for follow-ups.

Progress goes to stdout as JSON lines (`ready`, `turn_done`, `error`); replies and memory
go to /ipc/outbound as files; the model is reached only through /ipc/llm.sock.
"""

from __future__ import annotations

import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import anthropic

try:  # the SDK's own HTTP library: httpx2 in anthropic 2.x, httpx before
    import httpx2 as httpx
except ImportError:  # pragma: no cover
    import httpx  # type: ignore[no-redef,import-not-found,unused-ignore]

from .conversation import history_for, strip_internal, system_prompt
from .ipcfiles import Inbox, event, write_json
from .protocol import EGRESS_SOCK, INITIAL_INPUT, INPUT, LLM_SOCK, OUTBOUND, RunConfig, request
from .relay import start_relay
from .tools import TOOL_SPECS, Toolbox

MAX_STEPS = 40


def _block(block: Any) -> dict[str, Any]:
    if block.type == "text":
        return {"type": "text", "text": block.text}
    if block.type == "tool_use":
        return {"type": "tool_use", "id": block.id, "name": block.name, "input": block.input}
    data: dict[str, Any] = block.model_dump(mode="json", exclude_none=True)
    return data


def describe_error(exc: anthropic.APIError) -> str:
    """One short line for the host's log: the status, the API's error type and message, never
    the SDK's dump of the whole body. The host decides what an error means (it saw the
    upstream answer in its proxy); this line only says it in words."""
    if isinstance(exc, anthropic.APIConnectionError):  # the proxy socket itself: timeouts too
        return f"model: cannot reach the model proxy ({exc.__class__.__name__})"
    status = exc.status_code if isinstance(exc, anthropic.APIStatusError) else "?"
    err = exc.body.get("error") if isinstance(exc.body, dict) else None
    kind = str(err.get("type", "")) if isinstance(err, dict) else ""
    text = str(err.get("message", "")) if isinstance(err, dict) else exc.__class__.__name__
    text = " ".join(text.split())[:300]  # one line, bounded
    if text.startswith("nanoclaw:"):  # the host's own refusal (policy, size, budget)
        return f"model: {text}"
    if status == 502:
        return f"model: cannot reach the model endpoint ({text})"
    if status in (401, 403):
        return f"model: the model refused the key ({status} {kind}: {text})"
    return f"model: {status} {kind}: {text}"


def proxy_client(ipc: Path, max_retries: int) -> anthropic.Anthropic:
    """The model, reached only through the host's proxy on /ipc/llm.sock."""
    # Plain HTTP over a unix socket: no TLS context to build (saves ~30 ms at start).
    transport = httpx.HTTPTransport(uds=str(ipc / LLM_SOCK), verify=False)
    return anthropic.Anthropic(
        api_key="sandbox-has-no-key",
        base_url="http://model-proxy.invalid",
        http_client=anthropic.DefaultHttpxClient(transport=transport, timeout=600),
        max_retries=max_retries,
    )


class Agent:
    def __init__(
        self, cfg: RunConfig, root: Path = Path("/"), client: anthropic.Anthropic | None = None
    ) -> None:
        self.cfg = cfg
        self.workspace = root / "workspace"
        self.ipc = root / "ipc"
        self.client = client or proxy_client(self.ipc, cfg.max_retries)
        self.tools = Toolbox(
            self.workspace,
            self.send,
            bash_timeout_s=cfg.bash_timeout_s,
            ipc=self.ipc,
            confirm_s=cfg.confirm_s,
        )
        self.history = history_for(cfg, self.workspace)
        self.root = root

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
        messages.append({"role": "user", "content": f"[now: {now}]\n{prompt}"})
        final = ""
        for _ in range(MAX_STEPS):
            reply = self.client.messages.create(
                model=self.cfg.model,
                max_tokens=self.cfg.max_tokens,
                system=[{"type": "text", "text": system, "cache_control": {"type": "ephemeral"}}],
                tools=tools,  # type: ignore[arg-type]
                messages=messages,  # type: ignore[arg-type]
            )
            messages.append({"role": "assistant", "content": [_block(b) for b in reply.content]})
            uses = [b for b in reply.content if b.type == "tool_use"]
            final = "".join(b.text for b in reply.content if b.type == "text")
            if reply.stop_reason != "tool_use" or not uses:
                break
            results = [
                {
                    "type": "tool_result",
                    "tool_use_id": b.id,
                    "content": self.tools.run(b.name, b.input),
                }
                for b in uses
            ]
            messages.append({"role": "user", "content": results})
        else:
            final = final or "I stopped after too many steps; ask me to continue."
        self.history.save(messages)
        return strip_internal(final)

    def serve(self, prompt: str, idle_timeout: float) -> None:
        inbox = Inbox(self.ipc / INPUT)
        name = INITIAL_INPUT
        while True:
            answer = self.turn(prompt)
            if answer:
                self.send(request("send_message", text=answer))
            event("turn_done", input=name)
            items, close = inbox.wait(idle_timeout)
            if not items:
                return
            prompt = "\n\n".join(p for _, p in items)
            name = items[-1][0]
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
        failure = start_relay(Path("/ipc") / EGRESS_SOCK, cfg.egress_port)
        if failure:
            print(f"egress relay not started: {failure}", file=sys.stderr)
    agent = Agent(cfg)
    event("ready", startup_ms=int((time.monotonic() - started) * 1000))
    try:
        agent.serve(cfg.prompt, cfg.idle_timeout_s)
    except anthropic.APIError as exc:
        event("error", error=describe_error(exc))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
