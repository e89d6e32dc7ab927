"""How the model proxy takes in what a sandbox sends it: connections and requests in flight
capped per run, bodies capped in size and read under timeouts, and the daemon-wide
allowance of body bytes held at once, so no sandbox can make the daemon (which lives
outside every cgroup) buffer without bound.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from typing import Any

from aiohttp import StreamReader, web
from aiohttp.web_protocol import RequestHandler

log = logging.getLogger(__name__)
MiB = 1024 * 1024
# A 200k-token context is under 1 MiB of text (4 characters a token); JSON escaping and the
# tool definitions at most double it. 4 MiB is room to spare for what the agent sends (text
# only: its history is trimmed to 120,000 characters, its memory files to 40,000, each
# tool output to 30,000) and a quarter of what a daemon-wide allowance holds.
MAX_BODY = 4 * MiB
DAEMON_BODY_BYTES = 16 * MiB


@dataclass(frozen=True)
class Limits:
    """Per run: requests handled at once, open connections, one body's size and how long
    its reading may take (between two chunks, and in all)."""

    in_flight: int = 4
    connections: int = 8
    max_body: int = MAX_BODY
    chunk_timeout_s: float = 10.0
    body_timeout_s: float = 30.0


class BodyPool:
    """Bytes of request bodies the daemon holds at once, over every proxy: a request takes
    its declared length before its body is read and gives it back when it is answered."""

    def __init__(self, capacity: int = DAEMON_BODY_BYTES) -> None:
        self.capacity = capacity
        self.free = capacity
        self._changed = asyncio.Event()

    async def take(self, size: int, timeout_s: float) -> bool:
        """Wait up to `timeout_s` for `size` bytes; False when they did not come free."""
        if size > self.capacity:
            return False
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while self.free < size:
            self._changed.clear()
            try:  # asyncio.timeout: wait_for on 3.11 can drop a cancel (see Waker)
                async with asyncio.timeout_at(deadline):
                    await self._changed.wait()
            except TimeoutError:
                return False
        self.free -= size
        return True

    def give(self, size: int) -> None:
        self.free += size
        self._changed.set()


class BodyError(Exception):
    """The body did not arrive whole: `status` 408 for too slow, 400 for cut short."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


async def read_body(content: StreamReader, size: int, limits: Limits) -> bytearray:
    """Exactly `size` bytes (the declared length), each chunk and the whole in time."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limits.body_timeout_s
    body = bytearray()
    while len(body) < size:
        wait = min(limits.chunk_timeout_s, deadline - loop.time())
        try:
            async with asyncio.timeout(max(wait, 0)):
                chunk = await content.readany()
        except TimeoutError:
            message = f"the request body came too slowly: {len(body)} of {size} bytes in time"
            raise BodyError(408, message) from None
        except ConnectionError:  # the sandbox hung up: nobody is left to read an answer
            chunk = b""
        if not chunk:
            raise BodyError(400, f"the request body ended after {len(body)} of {size} bytes")
        body += chunk
    return body  # not copied to bytes: the parser takes it as it is


def raw_refusal(status: int, reason: str, kind: str, message: str) -> bytes:
    """A whole HTTP response for a connection refused before aiohttp reads a request."""
    body = json.dumps({"type": "error", "error": {"type": kind, "message": message}}).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nx-should-retry: false\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body


class RefusedConnection(asyncio.Protocol):
    """A connection past the cap: answered at once and closed, nothing of it read."""

    def __init__(self, answer: bytes) -> None:
        self._answer = answer

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        transport.write(self._answer)
        transport.close()


class CappedServer(web.Server):
    """aiohttp's low-level server, refusing connections past `cap` at once: a sandbox that
    opens many only gets a 429 on each, the daemon keeps its file descriptors. Counted as
    protocols are made, since several connections may be accepted before any is set up."""

    def __init__(self, handler: Any, cap: int, label: str, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._cap = cap
        self._label = label
        self._open = 0
        self._refused = False

    def __call__(self) -> Any:
        if self._open < self._cap:
            self._open += 1
            return super().__call__()
        message = f"nanoclaw: more than {self._cap} connections open for this run"
        if not self._refused:  # logged once per run
            self._refused = True
            log.warning("proxy %s refused: %s", self._label, message)
        return RefusedConnection(raw_refusal(429, "Too Many Requests", "rate_limit_error", message))

    def connection_lost(self, handler: RequestHandler, exc: BaseException | None = None) -> None:
        self._open -= 1
        super().connection_lost(handler, exc)
