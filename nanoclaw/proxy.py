"""The host-side model proxy: a unix socket in the group's IPC dir, served for one agent run.

It forwards only the Messages endpoints, drops whatever credential the sandbox sends,
adds the real key, and records token usage for the run. The key never enters the sandbox.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import ClientError, ClientSession, ClientTimeout, web

from nanoclaw.models import Usage

log = logging.getLogger(__name__)
ALLOWED_PATHS = frozenset({"/v1/messages", "/v1/messages/count_tokens"})
FORWARD_REQUEST_HEADERS = ("content-type", "anthropic-version", "anthropic-beta", "accept")
FORWARD_RESPONSE_HEADERS = ("content-type", "request-id", "retry-after", "x-should-retry")
MAX_BODY = 32 * 1024 * 1024


def usage_of(payload: Any) -> Usage:
    """Token counts from a Messages response body; zeros when absent or malformed."""
    raw = payload.get("usage") if isinstance(payload, dict) else None
    if not isinstance(raw, dict):
        return Usage(requests=1)

    def num(key: str) -> int:
        value = raw.get(key)
        return value if isinstance(value, int) and value >= 0 else 0

    return Usage(
        requests=1,
        input_tokens=num("input_tokens"),
        output_tokens=num("output_tokens"),
        cache_read_tokens=num("cache_read_input_tokens"),
        cache_write_tokens=num("cache_creation_input_tokens"),
    )


def _error(status: int, kind: str, message: str) -> web.Response:
    body = {"type": "error", "error": {"type": kind, "message": message}}
    return web.json_response(body, status=status)


def _remove_stale(sock: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(sock)


class ModelProxy:
    """Serves one socket; `record` receives the usage of each forwarded request."""

    def __init__(
        self,
        session: ClientSession,
        base_url: str,
        api_key: str,
        record: Callable[[Usage], Awaitable[None]],
        label: str = "",
    ) -> None:
        self._session = session
        self._base_url = base_url.rstrip("/")
        self._api_key = api_key
        self._record = record
        self._label = label
        self._runner: web.AppRunner | None = None

    async def start(self, sock: Path) -> None:
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # A run that ended has no use for answers still in flight: do not wait for them.
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        _remove_stale(sock)
        site = web.UnixSite(self._runner, str(sock))
        await site.start()
        os.chmod(sock, 0o600)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.method != "POST" or request.path not in ALLOWED_PATHS:
            log.warning("proxy %s refused %s %s", self._label, request.method, request.path)
            return _error(403, "permission_error", "only the Messages API is reachable")
        body = await request.read()
        headers = {k: request.headers[k] for k in FORWARD_REQUEST_HEADERS if k in request.headers}
        headers["x-api-key"] = self._api_key
        headers.setdefault("anthropic-version", "2023-06-01")
        url = self._base_url + request.path
        try:
            async with self._session.post(
                url, data=body, headers=headers, timeout=ClientTimeout(total=900)
            ) as upstream:
                data = await upstream.read()
                status = upstream.status
                out_headers = {
                    k: upstream.headers[k]
                    for k in FORWARD_RESPONSE_HEADERS
                    if k in upstream.headers
                }
        except (ClientError, TimeoutError) as exc:
            log.warning("proxy %s upstream error: %s", self._label, exc)
            return _error(502, "api_error", f"model endpoint unreachable: {exc.__class__.__name__}")
        if status == 200 and request.path == "/v1/messages":
            try:
                await self._record(usage_of(json.loads(data)))
            except ValueError:
                await self._record(Usage(requests=1))
        return web.Response(body=data, status=status, headers=out_headers)
