"""The tokens of one model answer, counted as its bytes pass through the proxy: server-sent
events parsed line by line (message_start carries the input side, message_delta the
cumulative output), a JSON answer held up to a cap and parsed at its end.
"""

from __future__ import annotations

import json
from typing import Any

from anthropic.types import MessageDeltaUsage
from pydantic import ValidationError

from nanoclaw.models import Usage

MAX_LINE = 64 * 1024  # usage events are small; a longer line (a big text delta) is skipped
# A JSON answer is at most max_tokens (<= 32,000) of output, well under this; past it the
# body is not held (and its usage not counted) so a broken upstream cannot grow the daemon.
MAX_HELD = 8 * 1024 * 1024
USAGE_EVENTS = (b'"message_start"', b'"message_delta"')


def usage_fields(raw: object) -> dict[str, int]:
    """The token counts of a `usage` object, read with the SDK's type: the counts given, none
    when it is malformed (a fake's, say), negative ones as 0."""
    try:
        parsed = MessageDeltaUsage.model_validate(raw)
    except ValidationError:
        return {}
    counts = {
        "input_tokens": parsed.input_tokens,
        "output_tokens": parsed.output_tokens,
        "cache_read_input_tokens": parsed.cache_read_input_tokens,
        "cache_creation_input_tokens": parsed.cache_creation_input_tokens,
    }
    return {k: max(v, 0) for k, v in counts.items() if isinstance(v, int)}


def usage_of(counts: dict[str, int]) -> Usage:
    return Usage(
        requests=1,
        input_tokens=counts.get("input_tokens", 0),
        output_tokens=counts.get("output_tokens", 0),
        cache_read_tokens=counts.get("cache_read_input_tokens", 0),
        cache_write_tokens=counts.get("cache_creation_input_tokens", 0),
    )


def event_usage(event: Any) -> object:
    """The usage object an event carries, if it is one that does."""
    if not isinstance(event, dict):
        return None
    if event.get("type") == "message_start":
        message = event.get("message")
        return message.get("usage") if isinstance(message, dict) else None
    if event.get("type") == "message_delta":
        return event.get("usage")
    return None


class UsageMeter:
    """Fed an answer's bytes as they pass; `usage()` at any point is what was seen so far."""

    def __init__(self, content_type: str) -> None:
        self.events = content_type.startswith("text/event-stream")
        self._counts: dict[str, int] = {}
        self._buffer = bytearray()
        self._skipping = False  # inside a line past MAX_LINE: dropped up to its end
        self._held: bytearray | None = None if self.events else bytearray()

    def feed(self, chunk: bytes) -> None:
        if not self.events:
            if self._held is not None:
                self._held += chunk
                if len(self._held) > MAX_HELD:
                    self._held = None
            return
        start = 0
        while (end := chunk.find(b"\n", start)) >= 0:
            if not self._skipping:
                self._buffer += chunk[start:end]
                self._line(bytes(self._buffer))
            self._buffer.clear()
            self._skipping = False
            start = end + 1
        if not self._skipping:
            self._buffer += chunk[start:]
            if len(self._buffer) > MAX_LINE:
                self._buffer.clear()
                self._skipping = True

    def _line(self, line: bytes) -> None:
        if not line.startswith(b"data:") or not any(e in line for e in USAGE_EVENTS):
            return
        try:
            raw = event_usage(json.loads(line[5:]))
        except ValueError:
            return
        self._counts.update(usage_fields(raw))

    def usage(self) -> Usage:
        if not self.events and self._held:
            try:
                payload = json.loads(self._held)
            except ValueError:
                payload = None
            raw = payload.get("usage") if isinstance(payload, dict) else None
            return usage_of(usage_fields(raw))
        return usage_of(self._counts)


def response_usage(status: int, content_type: str, data: bytes) -> Usage:
    """Every answered Messages call counts as a request; only a 200 carries tokens."""
    if status != 200:
        return Usage(requests=1)
    meter = UsageMeter(content_type)
    meter.feed(data)
    return meter.usage()
