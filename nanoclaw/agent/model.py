"""The model as the runner sees it: the Messages API over HTTP, standard library only.

`ModelClient.create()` POSTs one streamed request to /v1/messages through the host's proxy on
/ipc/llm.sock (or a TCP base URL, for tests) and assembles the server-sent events into the
reply a non-streamed call returns, as a plain dict (`Assembler`); failures are `ModelError`s,
retried with backoff where the answer allows it (`x-should-retry`, `retry-after`, the
status, an `error` event, a stream cut short), as the Anthropic SDK does.
"""

from __future__ import annotations

import http.client
import json
import random
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

API_VERSION = "2023-06-01"
RETRY_STATUSES = frozenset({408, 409, 429})  # and every 5xx
MAX_BACKOFF_S = 8.0
MAX_RETRY_AFTER_S = 60.0  # a longer wait asked for is not honoured: the usual backoff is used
MAX_REPLY_BYTES = 64 * 1024 * 1024
MAX_ERROR_BYTES = 1024 * 1024
MAX_LINE = 16 * 1024 * 1024  # one event's data line; a text delta is far shorter
# The statuses of the API's error types, for an error that comes as an event of a 200 stream.
ERROR_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "overloaded_error": 529,
}
RETRY_EVENTS = frozenset({"overloaded_error", "api_error"})


@dataclass
class ModelError(Exception):
    """A failed model call. `status` is None when no HTTP answer came (the socket, a timeout);
    `kind` is the API's error type, or the exception's class name then."""

    status: int | None
    kind: str
    message: str
    retryable: bool = False
    retry_after: str | None = None  # the answer's header: how long the server asks to wait

    def __str__(self) -> str:
        return f"{self.status or '-'} {self.kind}: {self.message}"


class UnixHTTPConnection(http.client.HTTPConnection):
    """Plain HTTP over a unix socket: the host's model proxy; no TLS, no DNS."""

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("model-proxy.invalid", timeout=timeout)
        self.socket_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self.socket_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


def error_of(status: int, body: bytes, should_retry: str | None) -> ModelError:
    """The error an HTTP answer means: the API's `{"type":"error","error":{...}}` when the
    body is one, and whether to retry it (the header first, then the status)."""
    kind, message = "", ""
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    err = data.get("error") if isinstance(data, dict) else None
    if isinstance(err, dict):
        kind, message = str(err.get("type", "")), str(err.get("message", ""))
    else:
        message = body[:300].decode(errors="replace")
    if should_retry in ("true", "false"):
        retryable = should_retry == "true"
    else:
        retryable = status in RETRY_STATUSES or status >= 500
    return ModelError(status, kind or f"http_{status}", message, retryable)


def backoff_s(attempt: int, retry_after: str | None) -> float:
    """How long to wait before retry number `attempt` (0-based)."""
    if retry_after:
        try:
            asked = float(retry_after)
        except ValueError:
            asked = -1.0
        if 0 <= asked <= MAX_RETRY_AFTER_S:
            return asked
    base = min(0.5 * 2**attempt, MAX_BACKOFF_S)
    return float(base * (1 - 0.25 * random.random()))  # jitter, not a secret


def event_error(data: dict[str, Any]) -> ModelError:
    """An `error` event: the API failed after its 200 answer began (overloaded, say)."""
    err = data.get("error")
    err = err if isinstance(err, dict) else {}
    kind = str(err.get("type") or "api_error")
    message = str(err.get("message", ""))[:300]
    return ModelError(ERROR_STATUS.get(kind, 500), kind, message, kind in RETRY_EVENTS)


class Assembler:
    """A streamed reply put back together, event by event, into the dict a non-streamed call
    answers: the message of message_start, its content blocks grown by their deltas (a tool's
    input JSON parsed at the block's stop), stop reason and usage from message_delta."""

    def __init__(self) -> None:
        self.message: dict[str, Any] | None = None
        self.blocks: dict[int, dict[str, Any]] = {}
        self.json_parts: dict[int, list[str]] = {}
        self.done = False

    def feed(self, event: str, data: dict[str, Any]) -> None:
        kind = data.get("type", event)
        if kind == "error":
            raise event_error(data)
        if kind == "message_start" and isinstance(data.get("message"), dict):
            self.message = data["message"]
        elif kind == "content_block_start" and isinstance(data.get("content_block"), dict):
            self.blocks[int(data.get("index", len(self.blocks)))] = dict(data["content_block"])
        elif kind == "content_block_delta" and isinstance(data.get("delta"), dict):
            self._delta(int(data.get("index", 0)), data["delta"])
        elif kind == "content_block_stop":
            self._stop(int(data.get("index", 0)))
        elif kind == "message_delta":
            self._message_delta(data)
        elif kind == "message_stop":
            self.done = True
        # ping, and whatever a later API version adds: nothing to keep

    def _delta(self, index: int, delta: dict[str, Any]) -> None:
        block = self.blocks.setdefault(index, {"type": "text", "text": ""})
        kind = delta.get("type")
        if kind == "text_delta":
            block["text"] = block.get("text", "") + str(delta.get("text", ""))
        elif kind == "input_json_delta":
            self.json_parts.setdefault(index, []).append(str(delta.get("partial_json", "")))
        elif kind == "thinking_delta":
            block["thinking"] = block.get("thinking", "") + str(delta.get("thinking", ""))
        elif kind == "signature_delta":
            block["signature"] = delta.get("signature", "")
        elif kind == "citations_delta":
            block.setdefault("citations", []).append(delta.get("citation"))

    def _stop(self, index: int) -> None:
        parts = self.json_parts.pop(index, None)
        if parts is None or index not in self.blocks:
            return
        text = "".join(parts)
        try:
            self.blocks[index]["input"] = json.loads(text) if text else {}
        except ValueError as exc:
            raise ModelError(200, "invalid_reply", f"a tool input is not JSON: {exc}") from exc

    def _message_delta(self, data: dict[str, Any]) -> None:
        if self.message is None:
            return
        delta = data.get("delta")
        if isinstance(delta, dict):
            for key in ("stop_reason", "stop_sequence"):
                if key in delta:
                    self.message[key] = delta[key]
        usage = data.get("usage")
        if isinstance(usage, dict):
            merged = self.message.get("usage")
            merged = merged if isinstance(merged, dict) else {}
            merged.update({k: v for k, v in usage.items() if v is not None})
            self.message["usage"] = merged

    def reply(self) -> dict[str, Any]:
        """The whole message; a stream that ended before message_stop is worth retrying."""
        if self.message is None or not self.done:
            raise ModelError(200, "incomplete_reply", "the reply stream ended early", True)
        return {**self.message, "content": [self.blocks[i] for i in sorted(self.blocks)]}


def read_events(response: http.client.HTTPResponse) -> dict[str, Any]:
    """Server-sent events read a line at a time, each event fed to an `Assembler` at its
    blank line; the whole and each line within caps."""
    assembler = Assembler()
    event, data, total = "", [], 0
    while not assembler.done:
        line = response.readline(MAX_LINE + 1)
        total += len(line)
        if len(line) > MAX_LINE or total > MAX_REPLY_BYTES:
            raise ModelError(200, "invalid_reply", "the reply stream is over the size cap")
        if not line:
            break
        text = line.decode("utf-8", errors="replace").rstrip("\r\n")
        if text.startswith("event:"):
            event = text[6:].strip()
        elif text.startswith("data:"):
            data.append(text[5:].removeprefix(" "))
        elif not text and data:
            try:
                parsed = json.loads("\n".join(data))
            except ValueError as exc:
                raise ModelError(200, "invalid_reply", f"an event is not JSON: {exc}") from exc
            try:
                assembler.feed(event, parsed if isinstance(parsed, dict) else {})
            except (TypeError, ValueError) as exc:  # an index that is no number, say
                raise ModelError(200, "invalid_reply", f"a malformed event: {exc}") from exc
            event, data = "", []
    return assembler.reply()


class ModelClient:
    """The Messages API through one address: a unix socket path, or an http:// base URL."""

    def __init__(
        self,
        address: str | Path,
        max_retries: int = 2,
        timeout: float = 600.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.address = str(address)
        self.max_retries = max_retries
        self.timeout = timeout
        self.sleep = sleep

    def _connection(self) -> http.client.HTTPConnection:
        if self.address.startswith("http://"):
            url = urlsplit(self.address)
            return http.client.HTTPConnection(url.hostname or "", url.port, timeout=self.timeout)
        return UnixHTTPConnection(self.address, self.timeout)

    def create(self, **params: Any) -> dict[str, Any]:
        """One Messages API call, streamed; the reply's JSON object, or a `ModelError` after
        retries."""
        body = json.dumps({**params, "stream": True}).encode()
        for attempt in range(self.max_retries + 1):
            try:
                return self._post(body)
            except ModelError as exc:
                if not exc.retryable or attempt == self.max_retries:
                    raise
                self.sleep(backoff_s(attempt, exc.retry_after))
        raise AssertionError("unreachable")  # pragma: no cover

    def _post(self, body: bytes) -> dict[str, Any]:
        conn = self._connection()
        headers = {
            "content-type": "application/json",
            "accept": "text/event-stream",
            "anthropic-version": API_VERSION,
            "content-length": str(len(body)),
        }
        try:
            conn.request("POST", "/v1/messages", body=body, headers=headers)
            response = conn.getresponse()
            if response.status != 200:
                data = response.read(MAX_ERROR_BYTES)
                error = error_of(response.status, data, response.getheader("x-should-retry"))
                error.retry_after = response.getheader("retry-after")
                raise error
            if (response.getheader("content-type") or "").startswith("text/event-stream"):
                return read_events(response)
            data = response.read(MAX_REPLY_BYTES + 1)
        except (OSError, http.client.HTTPException) as exc:  # timeouts are OSErrors
            raise ModelError(None, exc.__class__.__name__, str(exc)[:300], True) from exc
        finally:
            conn.close()
        try:
            reply = json.loads(data)
        except ValueError:
            reply = None
        if not isinstance(reply, dict) or not isinstance(reply.get("content"), list):
            raise ModelError(200, "invalid_reply", "the reply is not a Messages API object")
        return reply
