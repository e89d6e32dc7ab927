"""The model as the runner sees it: the Messages API as JSON over HTTP, standard library only.

`ModelClient.create()` POSTs one request to /v1/messages through the host's proxy on
/ipc/llm.sock (or a TCP base URL, for tests) and returns the reply as a plain dict; failures
are `ModelError`s, retried with backoff where the answer allows it (`x-should-retry`,
`retry-after`, the status), as the Anthropic SDK does.
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
        """One Messages API call; the reply's JSON object, or a `ModelError` after retries."""
        body = json.dumps(params).encode()
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
            "accept": "application/json",
            "anthropic-version": API_VERSION,
            "content-length": str(len(body)),
        }
        try:
            conn.request("POST", "/v1/messages", body=body, headers=headers)
            response = conn.getresponse()
            data = response.read(MAX_REPLY_BYTES + 1)
        except (OSError, http.client.HTTPException) as exc:  # timeouts are OSErrors
            raise ModelError(None, exc.__class__.__name__, str(exc)[:300], True) from exc
        finally:
            conn.close()
        if response.status != 200:
            error = error_of(response.status, data, response.getheader("x-should-retry"))
            error.retry_after = response.getheader("retry-after")
            raise error
        try:
            reply = json.loads(data)
        except ValueError:
            reply = None
        if not isinstance(reply, dict) or not isinstance(reply.get("content"), list):
            raise ModelError(200, "invalid_reply", "the reply is not a Messages API object")
        return reply
