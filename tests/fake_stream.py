"""A Messages reply as the real API streams it (server-sent events), for the fake server and
for tests that feed the runner a stream of their own: message_start with the input usage,
each content block in a few deltas (tool input as input_json_delta chunks), message_delta
with the stop reason and the output usage, message_stop."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

Event = tuple[str, dict[str, Any]]
PIECES = 3  # a text arrives in about this many deltas
MAX_PIECE = 8192  # and none longer: a long answer is many events, as the real one is


def pieces(text: str) -> list[str]:
    size = min(MAX_PIECE, max(1, -(-len(text) // PIECES)))
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def _block_events(index: int, block: dict[str, Any]) -> Iterator[Event]:
    kind = block.get("type")
    if kind == "text":
        yield "content_block_start", {"index": index, "content_block": {**block, "text": ""}}
        for part in pieces(str(block.get("text", ""))):
            delta = {"type": "text_delta", "text": part}
            yield "content_block_delta", {"index": index, "delta": delta}
    elif kind in ("tool_use", "server_tool_use"):
        yield "content_block_start", {"index": index, "content_block": {**block, "input": {}}}
        for part in pieces(json.dumps(block.get("input", {}))):
            delta = {"type": "input_json_delta", "partial_json": part}
            yield "content_block_delta", {"index": index, "delta": delta}
    elif kind == "thinking":
        start = {**block, "thinking": "", "signature": ""}
        yield "content_block_start", {"index": index, "content_block": start}
        for part in pieces(str(block.get("thinking", ""))):
            delta = {"type": "thinking_delta", "thinking": part}
            yield "content_block_delta", {"index": index, "delta": delta}
        delta = {"type": "signature_delta", "signature": block.get("signature", "")}
        yield "content_block_delta", {"index": index, "delta": delta}
    else:  # redacted thinking and the like come whole
        yield "content_block_start", {"index": index, "content_block": block}
    yield "content_block_stop", {"index": index}


def message_events(message: dict[str, Any]) -> list[Event]:
    """The events of a whole (non-streamed) message, in the API's order."""
    usage = dict(message.get("usage") or {})
    start = {**message, "content": [], "stop_reason": None, "stop_sequence": None}
    start["usage"] = {**usage, "output_tokens": min(1, usage.get("output_tokens", 0))}
    events: list[Event] = [("message_start", {"message": start}), ("ping", {})]
    for index, block in enumerate(message.get("content", [])):
        events.extend(_block_events(index, block))
    delta = {"stop_reason": message.get("stop_reason"), "stop_sequence": None}
    output = {"output_tokens": usage.get("output_tokens", 0)}
    events.append(("message_delta", {"delta": delta, "usage": output}))
    events.append(("message_stop", {}))
    return events


def error_event(error_type: str, message: str) -> Event:
    return "error", {"error": {"type": error_type, "message": message}}


def encode(name: str, data: dict[str, Any]) -> bytes:
    """One event on the wire: its name, its JSON (with its `type`), a blank line."""
    return f"event: {name}\ndata: {json.dumps({'type': name, **data})}\n\n".encode()


def stream_bytes(events: list[Event]) -> bytes:
    return b"".join(encode(name, data) for name, data in events)
