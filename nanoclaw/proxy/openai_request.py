"""An admitted Messages request as a Chat Completions request, pure: system, text, images,
tool use and tool results, tools and tool choice, and the sampling parameters both APIs
document. What has no counterpart (cache_control, thinking, metadata, top_k) is dropped.
"""

from __future__ import annotations

import json
from typing import Any, Literal

OpenAIProvider = Literal["openai", "openai-compatible"]
ERROR_NOTE = "[tool error] "  # a tool_result marked is_error: Chat Completions has no flag


def _text_of(content: Any) -> str:
    """The text of a string or of a list of blocks (text blocks only), joined."""
    if isinstance(content, str):
        return content
    texts = (b.get("text", "") for b in content or () if _is(b, "text"))
    return "\n".join(t for t in texts if isinstance(t, str))


def _is(block: object, kind: str) -> bool:
    return isinstance(block, dict) and block.get("type") == kind


def image_part(block: dict[str, Any]) -> dict[str, Any] | None:
    """An image block as an image_url part: base64 as a data: URL, a url source as it is."""
    source = block.get("source")
    if not isinstance(source, dict):
        return None
    if source.get("type") == "base64":
        url = f"data:{source.get('media_type', 'image/png')};base64,{source.get('data', '')}"
    elif source.get("type") == "url":
        url = str(source.get("url", ""))
    else:
        return None
    return {"type": "image_url", "image_url": {"url": url}}


def _user_parts(blocks: list[Any]) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    for block in blocks:
        if _is(block, "text"):
            parts.append({"type": "text", "text": block.get("text", "")})
        elif _is(block, "image") and (part := image_part(block)) is not None:
            parts.append(part)
    return parts


def _user_content(parts: list[dict[str, Any]]) -> str | list[dict[str, Any]]:
    """Text only goes as a string (what every compatible endpoint takes), else as parts."""
    if all(p["type"] == "text" for p in parts):
        return "\n".join(p["text"] for p in parts)
    return parts


def tool_message(block: dict[str, Any]) -> dict[str, Any]:
    text = _text_of(block.get("content", ""))
    if block.get("is_error"):
        text = ERROR_NOTE + text
    return {"role": "tool", "tool_call_id": str(block.get("tool_use_id", "")), "content": text}


def user_messages(content: Any) -> list[dict[str, Any]]:
    """One user turn: its tool results first, as tool messages (they must follow the
    assistant's tool calls), then what else it says as one user message."""
    if isinstance(content, str):
        return [{"role": "user", "content": content}]
    blocks = list(content or ())
    out = [tool_message(b) for b in blocks if _is(b, "tool_result")]
    parts = _user_parts(blocks)
    if parts:
        out.append({"role": "user", "content": _user_content(parts)})
    return out


def assistant_message(content: Any) -> dict[str, Any]:
    """An assistant turn: its text joined, its tool_use blocks as tool_calls (arguments a
    JSON string); thinking blocks are dropped."""
    if isinstance(content, str):
        return {"role": "assistant", "content": content}
    blocks = list(content or ())
    message: dict[str, Any] = {"role": "assistant", "content": _text_of(blocks) or None}
    calls = [
        {
            "id": str(b.get("id", "")),
            "type": "function",
            "function": {
                "name": str(b.get("name", "")),
                "arguments": json.dumps(b.get("input") or {}),
            },
        }
        for b in blocks
        if _is(b, "tool_use")
    ]
    if calls:
        message["tool_calls"] = calls
    return message


def chat_messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    system = _text_of(body.get("system") or "")
    if system:
        out.append({"role": "system", "content": system})
    for message in body.get("messages", ()):
        content = message.get("content")
        if message.get("role") == "assistant":
            out.append(assistant_message(content))
        else:
            out.extend(user_messages(content))
    return out


def chat_tools(tools: list[Any]) -> list[dict[str, Any]]:
    """The agent's own (custom) tools as functions; server tools have no counterpart."""
    out = []
    for tool in tools:
        if not isinstance(tool, dict) or "input_schema" not in tool:
            continue
        function = {"name": tool.get("name", ""), "parameters": tool["input_schema"]}
        if tool.get("description"):
            function["description"] = tool["description"]
        out.append({"type": "function", "function": function})
    return out


def chat_tool_choice(choice: dict[str, Any]) -> str | dict[str, Any] | None:
    kind = choice.get("type")
    if kind == "tool":
        return {"type": "function", "function": {"name": choice.get("name", "")}}
    return {"auto": "auto", "any": "required", "none": "none"}.get(str(kind))


def chat_request(body: dict[str, Any], provider: OpenAIProvider, model: str) -> dict[str, Any]:
    """The Chat Completions body for `model`; `stream` asks the usage at the stream's end."""
    request: dict[str, Any] = {"model": model, "messages": chat_messages(body)}
    limit = "max_completion_tokens" if provider == "openai" else "max_tokens"
    request[limit] = body["max_tokens"]
    for key in ("temperature", "top_p"):
        if key in body:
            request[key] = body[key]
    if body.get("stop_sequences"):
        request["stop"] = list(body["stop_sequences"])
    tools = chat_tools(body.get("tools") or [])
    if tools:
        request["tools"] = tools
        choice = body.get("tool_choice")
        if isinstance(choice, dict):
            mapped = chat_tool_choice(choice)
            if mapped is not None:
                request["tool_choice"] = mapped
            if choice.get("disable_parallel_tool_use"):
                request["parallel_tool_calls"] = False
    if body.get("stream") is True:
        request["stream"] = True
        request["stream_options"] = {"include_usage": True}
    return request
