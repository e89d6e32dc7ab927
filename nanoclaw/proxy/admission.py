"""What one agent run may ask the model: a pure check of a Messages request against the run's
policy (its model, its network policy and domains, the agent's own tools, a short list of
betas, capped output), returning the request to forward, re-serialised, or why it is refused.

The sandbox's network policy must hold on Anthropic's side too: server tools (web search,
web fetch, code execution), MCP servers and url or file sources make Anthropic's servers
reach out for the run, so they are refused for `off`, kept to the group's domains for
`allowlist`, and passed as asked only for `full`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

from nanoclaw.agent.tools import TOOL_SPECS
from nanoclaw.models import NetworkPolicy

# Output of one request: 8 times what the agent asks (4096), what current Opus models allow;
# caps what a single request can cost at 1.6 % of the default daily token budget.
MAX_TOKENS = 32_000
AGENT_TOOLS = frozenset(str(spec["name"]) for spec in TOOL_SPECS)
MESSAGES_KEYS = frozenset(
    [
        "model",
        "max_tokens",
        "system",
        "messages",
        "tools",
        "tool_choice",
        "temperature",
        "top_p",
        "top_k",
        "stop_sequences",
        "stream",
        "metadata",
        "thinking",
    ]
)
# Harmless betas (caching, tool-call encoding, thinking between tool calls); the agent sends
# none today. Betas that switch on a server tool are allowed only with that tool.
BETAS = frozenset(
    {
        "prompt-caching-2024-07-31",
        "token-efficient-tools-2025-02-19",
        "fine-grained-tool-streaming-2025-05-14",
        "interleaved-thinking-2025-05-14",
    }
)
ServerTool = Literal["web_search", "web_fetch", "code_execution"]
TOOL_BETAS: Mapping[str, ServerTool] = {
    "web-fetch-2025-09-10": "web_fetch",
    "code-execution-2025-08-25": "code_execution",
}
SERVER_TOOLS: Mapping[NetworkPolicy, frozenset[ServerTool]] = {
    "off": frozenset(),
    "allowlist": frozenset({"web_search", "web_fetch"}),
    "full": frozenset({"web_search", "web_fetch", "code_execution"}),
}
PLAIN_BLOCKS = frozenset(
    {"text", "image", "document", "tool_use", "tool_result", "thinking", "redacted_thinking"}
)
SERVER_TOOL_NAMES: Mapping[str, ServerTool] = {  # the `name` of a server_tool_use block
    "web_search": "web_search",
    "web_fetch": "web_fetch",
    "code_execution": "code_execution",
    "bash_code_execution": "code_execution",
    "text_editor_code_execution": "code_execution",
}
SERVER_RESULT_BLOCKS: Mapping[str, ServerTool] = {
    "web_search_tool_result": "web_search",
    "web_fetch_tool_result": "web_fetch",
    "code_execution_tool_result": "code_execution",
    "bash_code_execution_tool_result": "code_execution",
    "text_editor_code_execution_tool_result": "code_execution",
}
INLINE_SOURCES = frozenset({"base64", "text", "content"})  # the bytes travel in the request
MAX_DEPTH = 8  # tool_result > document > content > ... : deeper is not a request the agent makes
PLAIN_NAME = re.compile(r"[\w.-]{1,64}")


@dataclass(frozen=True)
class Policy:
    """What a run may ask: `models` is the group's configured model (or an owner's list)."""

    models: frozenset[str]
    network: NetworkPolicy = "off"
    domains: tuple[str, ...] = ()
    max_tokens: int = MAX_TOKENS


@dataclass(frozen=True)
class Admitted:
    body: bytes  # the validated request, re-serialised: what upstream parses is what we checked
    betas: str  # the anthropic-beta header to forward, "" for none
    max_tokens: int  # what the request may cost in output, for the budget's in-flight estimate


@dataclass(frozen=True)
class Refusal:
    status: int
    kind: str  # the Anthropic error type the agent's SDK maps to an exception
    message: str


class Refused(Exception):
    def __init__(self, message: str, status: int = 403) -> None:
        super().__init__(message)
        self.status = status


def _bad(message: str) -> Refused:
    return Refused(message, 400)


def _name(value: object) -> str:
    """A name the sandbox chose, as a refusal quotes it: plain, or repr'd and cut (it goes
    to the log, where a newline or a megabyte must not)."""
    if isinstance(value, str) and PLAIN_NAME.fullmatch(value):
        return value
    return repr(value)[:80]


def server_tool(kind: str) -> ServerTool | None:
    """The server tool a versioned tool type (`web_search_20250305`) names, if any."""
    for name in SERVER_TOOLS["full"]:
        if kind.startswith(name + "_"):
            return name
    return None


def _allowed(tool: ServerTool, policy: Policy) -> None:
    if tool not in SERVER_TOOLS[policy.network]:
        raise Refused(f"server tool {tool} is not allowed under network policy {policy.network}")
    if policy.network == "allowlist" and not policy.domains:
        raise Refused(f"server tool {tool} needs domains in the group's allowlist; it has none")


def _in_domains(url: object, domains: tuple[str, ...]) -> bool:
    try:
        host = urlsplit(url).hostname if isinstance(url, str) else None
    except ValueError:
        return False
    return host is not None and any(host == d or host.endswith("." + d) for d in domains)


def _check_server_use(block: dict[str, Any], policy: Policy) -> None:
    """A server tool call in the history: Anthropic may carry it out, so it must be allowed."""
    tool = SERVER_TOOL_NAMES.get(str(block.get("name")))
    if tool is None:
        raise Refused(f"server_tool_use block {_name(block.get('name'))} is not allowed")
    _allowed(tool, policy)
    args = block.get("input")
    url = args.get("url") if isinstance(args, dict) else None
    if policy.network == "allowlist" and url is not None and not _in_domains(url, policy.domains):
        raise Refused("a server_tool_use block fetches a url outside the group's domains")


def _check_blocks(content: object, policy: Policy, depth: int = 0) -> None:
    """Content blocks of a message, a system prompt or a tool result, nested ones included."""
    if isinstance(content, str):
        return
    if not isinstance(content, list) or depth > MAX_DEPTH:
        raise _bad("content must be a string or a list of content blocks")
    for block in content:
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            raise _bad("each content block must be an object with a type")
        kind = block["type"]
        if kind in PLAIN_BLOCKS:
            pass
        elif kind == "server_tool_use":
            _check_server_use(block, policy)
        elif kind in SERVER_RESULT_BLOCKS:
            _allowed(SERVER_RESULT_BLOCKS[kind], policy)
        else:  # mcp_tool_use, container_upload, and whatever a later API version adds
            raise Refused(f"content block type {_name(kind)} is not allowed")
        source = block.get("source")
        if isinstance(source, dict):
            origin = source.get("type")
            if origin not in INLINE_SOURCES and policy.network != "full":
                raise Refused(
                    f"a {kind} block with a {_name(origin)} source makes Anthropic fetch it; "
                    f"not allowed under network policy {policy.network}"
                )
            if origin == "content":
                _check_blocks(source.get("content"), policy, depth + 1)
        if kind == "tool_result" and "content" in block:
            _check_blocks(block["content"], policy, depth + 1)


def _check_tool(tool: object, policy: Policy) -> None:
    if not isinstance(tool, dict):
        raise _bad("each tool must be an object")
    kind = tool.get("type", "custom")
    if kind == "custom":
        if tool.get("name") not in AGENT_TOOLS:
            raise Refused(f"tool {_name(tool.get('name'))} is not one of the agent's own tools")
        return
    if not isinstance(kind, str) or (name := server_tool(kind)) is None:
        raise Refused(f"tool type {_name(kind)} is not allowed: only the agent's own tools")
    _allowed(name, policy)
    if policy.network == "allowlist" and name in ("web_search", "web_fetch"):
        tool["allowed_domains"] = list(policy.domains)  # the group's, whatever was asked
        tool.pop("blocked_domains", None)  # Anthropic refuses both together


def _check_betas(header: str, policy: Policy) -> str:
    betas = [b.strip() for b in header.split(",") if b.strip()]
    for beta in betas:
        tool = TOOL_BETAS.get(beta)
        if beta in BETAS or (tool is not None and tool in SERVER_TOOLS[policy.network]):
            continue
        allowed = ", ".join(sorted(BETAS))
        raise Refused(f"anthropic-beta {_name(beta)} is not allowed (allowed: {allowed})")
    return ",".join(betas)


def _reject_constant(name: str) -> object:
    raise _bad(f"{name} is not JSON")


def check(request: Any, betas: str, policy: Policy, counting: bool = False) -> Admitted:
    """The admitted request, or `Refused`; `counting`: a count_tokens call (no max_tokens)."""
    if not isinstance(request, dict):
        raise _bad("the request body must be a JSON object")
    unknown = sorted(set(request) - MESSAGES_KEYS)
    if unknown:
        # mcp_servers, container, context_management, service_tier...: not what the agent asks
        raise Refused(f"request field {_name(unknown[0])} is not allowed through the model proxy")
    if request.get("model") not in policy.models:
        raise Refused(
            f"model {_name(request.get('model'))} is not allowed; this group uses "
            + ", ".join(sorted(policy.models))
        )
    max_tokens = request.get("max_tokens", 0 if counting else None)
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 0:
        raise _bad("max_tokens must be a non-negative integer")
    if max_tokens > policy.max_tokens:
        raise Refused(f"max_tokens {max_tokens} is over the proxy's cap of {policy.max_tokens}")
    tools = request.get("tools", [])
    if not isinstance(tools, list):
        raise _bad("tools must be a list")
    for tool in tools:
        _check_tool(tool, policy)
    choice = request.get("tool_choice")
    if isinstance(choice, dict) and choice.get("type") == "tool":
        names = {str(t.get("name")) for t in tools}
        if choice.get("name") not in names:
            raise Refused(
                f"tool_choice names {_name(choice.get('name'))}: not a tool of the request"
            )
    _check_blocks(request.get("system", ""), policy)
    messages = request.get("messages")
    if not isinstance(messages, list):
        raise _bad("messages must be a list")
    for message in messages:
        if not isinstance(message, dict) or set(message) - {"role", "content"}:
            raise _bad("each message must be an object with only role and content")
        _check_blocks(message.get("content"), policy)
    header = _check_betas(betas, policy)
    body = json.dumps(request, separators=(",", ":")).encode()
    return Admitted(body, header, max_tokens)


def admit(
    body: bytes | bytearray, betas: str, policy: Policy, counting: bool = False
) -> Admitted | Refusal:
    """Parse and check a request body; a refusal says what was refused and why."""
    try:
        request = json.loads(body, parse_constant=_reject_constant)
        return check(request, betas, policy, counting)
    except Refused as exc:
        kind = "permission_error" if exc.status == 403 else "invalid_request_error"
        return Refusal(exc.status, kind, f"nanoclaw: {exc}")
    except (ValueError, RecursionError) as exc:
        return Refusal(400, "invalid_request_error", f"nanoclaw: the body is not JSON: {exc}")
