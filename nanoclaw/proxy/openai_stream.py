"""A Chat Completions answer as a Messages answer, pure: a whole completion as Messages JSON,
streamed chunks as Messages server-sent events built as they arrive (text and tool_use blocks,
stop reason, usage with the cached prompt tokens as cache reads), and errors as Anthropic's.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

Event = tuple[str, dict[str, Any]]
STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}


def stop_reason(finish: object) -> str:
    return STOP_REASONS.get(str(finish), "end_turn")


def messages_usage(usage: object) -> dict[str, int]:
    """Prompt tokens less the cached ones are input; the cached ones are cache reads."""
    if not isinstance(usage, Mapping):
        return {"input_tokens": 0, "output_tokens": 0}
    details = usage.get("prompt_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, Mapping) else None
    cached = cached if isinstance(cached, int) else 0
    prompt = usage.get("prompt_tokens")
    completion = usage.get("completion_tokens")
    prompt = prompt if isinstance(prompt, int) else 0
    return {
        "input_tokens": max(prompt - cached, 0),
        "output_tokens": completion if isinstance(completion, int) else 0,
        "cache_read_input_tokens": cached,
        "cache_creation_input_tokens": 0,
    }


def tool_input(arguments: object) -> object:
    """A tool call's arguments parsed; what is not a JSON object is kept as text for the
    agent to see (the model's mistake, not the proxy's)."""
    try:
        parsed = json.loads(str(arguments or "{}"))
    except ValueError:
        return {"_arguments": str(arguments)}
    return parsed if isinstance(parsed, dict) else {"_arguments": str(arguments)}


def message_json(completion: Mapping[str, Any], model: str) -> dict[str, Any]:
    """A whole completion (its first choice) as a Messages answer."""
    choices = completion.get("choices") or [{}]
    choice = choices[0]
    message = choice.get("message") or {}
    content: list[dict[str, Any]] = []
    if message.get("content"):
        content.append({"type": "text", "text": message["content"]})
    if message.get("refusal"):
        content.append({"type": "text", "text": message["refusal"]})
    for call in message.get("tool_calls") or ():
        function = call.get("function") or {}
        content.append(
            {
                "type": "tool_use",
                "id": call.get("id", ""),
                "name": function.get("name", ""),
                "input": tool_input(function.get("arguments")),
            }
        )
    return {
        "id": "msg_" + str(completion.get("id", "")),
        "type": "message",
        "role": "assistant",
        "model": completion.get("model") or model,
        "content": content,
        "stop_reason": stop_reason(choice.get("finish_reason")),
        "stop_sequence": None,
        "usage": messages_usage(completion.get("usage")),
    }


def error_json(status: int, message: str) -> dict[str, Any]:
    kind = ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    return {"type": "error", "error": {"type": kind, "message": message}}


def encode(event: Event) -> bytes:
    name, data = event
    return f"event: {name}\ndata: {json.dumps({'type': name, **data})}\n\n".encode()


class StreamTranslator:
    """Fed the chunks of a streamed completion in order, it answers the Messages events each
    one makes; `finish()` the closing ones (stop reason and usage come last: the usage chunk
    follows the one with the finish reason)."""

    def __init__(self, model: str) -> None:
        self._model = model
        self._started = False
        self._index = -1  # of the open content block; -1: none
        self._kind = ""  # "text" or "tool:<n>" for the open block
        self._finish: object = None
        self._usage: object = None

    def _start(self, chunk: Mapping[str, Any]) -> list[Event]:
        self._started = True
        message: dict[str, Any] = {
            "id": "msg_" + str(chunk.get("id", "")),
            "type": "message",
            "role": "assistant",
            "model": chunk.get("model") or self._model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        return [("message_start", {"message": message})]

    def _open(self, kind: str, block: dict[str, Any]) -> list[Event]:
        events = self._close()
        self._index += 1
        self._kind = kind
        return [*events, ("content_block_start", {"index": self._index, "content_block": block})]

    def _close(self) -> list[Event]:
        if not self._kind:
            return []
        self._kind = ""
        return [("content_block_stop", {"index": self._index})]

    def _delta(self, delta: dict[str, Any]) -> list[Event]:
        return [("content_block_delta", {"index": self._index, "delta": delta})]

    def feed(self, chunk: Mapping[str, Any]) -> list[Event]:
        events = [] if self._started else self._start(chunk)
        if chunk.get("usage"):
            self._usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) != 0:  # n=1 is all the proxy asks
                continue
            events += self._choice_delta(choice.get("delta") or {})
            if choice.get("finish_reason"):
                self._finish = choice["finish_reason"]
        return events

    def _choice_delta(self, delta: Mapping[str, Any]) -> list[Event]:
        events: list[Event] = []
        text = delta.get("content") or delta.get("refusal")
        if text:
            if self._kind != "text":
                events += self._open("text", {"type": "text", "text": ""})
            events += self._delta({"type": "text_delta", "text": text})
        for call in delta.get("tool_calls") or ():
            kind = f"tool:{call.get('index', 0)}"
            function = call.get("function") or {}
            if self._kind != kind:
                block: dict[str, Any] = {
                    "type": "tool_use",
                    "id": call.get("id") or f"call_{self._index + 1}",
                    "name": function.get("name") or "",
                    "input": {},
                }
                events += self._open(kind, block)
            if function.get("arguments"):
                part = {"type": "input_json_delta", "partial_json": function["arguments"]}
                events += self._delta(part)
        return events

    def finish(self) -> list[Event]:
        """The closing events, once the stream has ended."""
        events = [] if self._started else self._start({})
        events += self._close()
        delta = {"stop_reason": stop_reason(self._finish), "stop_sequence": None}
        events.append(("message_delta", {"delta": delta, "usage": messages_usage(self._usage)}))
        events.append(("message_stop", {}))
        return events
