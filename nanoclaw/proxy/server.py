"""The host-side model proxy: a unix socket in the group's IPC dir, served for one agent run.

It forwards only the Messages endpoints and only what the run may ask (`admission`), read
within the limits of `intake`, drops whatever credential the sandbox sends, adds the real
key, and counts each request against the group's daily budget (`budget`) before it goes.
The key never enters the sandbox.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import ClientConnectorError, ClientError, ClientSession, ClientTimeout, web
from pydantic import SecretStr

from nanoclaw.models import Usage
from nanoclaw.proxy.admission import Admitted, Policy, Refusal, admit
from nanoclaw.proxy.budget import BudgetGuard, RunBudget
from nanoclaw.proxy.intake import BodyError, BodyPool, CappedServer, Limits, read_body

log = logging.getLogger(__name__)
MESSAGES = "/v1/messages"
COUNT_TOKENS = "/v1/messages/count_tokens"
ALLOWED_PATHS = frozenset({MESSAGES, COUNT_TOKENS})
API_VERSION = "2023-06-01"  # the only one; pinned, like everything else the proxy sends
FORWARD_RESPONSE_HEADERS = ("content-type", "request-id", "retry-after", "x-should-retry")
NO_RETRY = {"x-should-retry": "false"}
KEEPALIVE_S = 75.0
MAX_LOGGED = 20  # distinct refusals logged per run: a sandbox cannot flood the log


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


def usage_of_events(data: bytes) -> Usage:
    """Token counts from a streamed (server-sent events) Messages response: message_start
    carries the input side, message_delta the cumulative output."""
    merged: dict[str, Any] = {}
    for line in data.splitlines():
        if not line.startswith(b"data:"):
            continue
        try:
            event = json.loads(line[5:])
        except ValueError:
            continue
        if not isinstance(event, dict):
            continue
        message = event.get("message")
        if event.get("type") == "message_start" and isinstance(message, dict):
            raw = message.get("usage")
        elif event.get("type") == "message_delta":
            raw = event.get("usage")
        else:
            continue
        if isinstance(raw, dict):
            merged.update({k: v for k, v in raw.items() if v is not None})
    return usage_of({"usage": merged})


def response_usage(status: int, content_type: str, data: bytes) -> Usage:
    """Every answered Messages call counts as a request; only a 200 carries tokens."""
    if status != 200:
        return Usage(requests=1)
    if content_type.startswith("text/event-stream"):
        return usage_of_events(data)
    try:
        return usage_of(json.loads(data))
    except ValueError:
        return Usage(requests=1)


def _error(
    status: int, kind: str, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    body = {"type": "error", "error": {"type": kind, "message": message}}
    return web.json_response(body, status=status, headers=headers)


def _remove_stale(sock: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(sock)


class ModelProxy:
    """Serves one socket; `record` adds to the run's row in the store.

    Refused requests (policy, size, budget) are answered 4xx with `x-should-retry: false`
    and no retry-after: the anthropic SDK obeys that header before its status rules, so the
    agent gets the error at once, and over budget its run ends instead of backing off.
    """

    def __init__(
        self,
        session: ClientSession,
        base_url: str,
        api_key: SecretStr,
        record: Callable[[Usage], Awaitable[None]],
        label: str = "",
        guard: BudgetGuard | None = None,
        *,
        policy: Policy,
        limits: Limits | None = None,
        pool: BodyPool | None = None,
    ) -> None:
        self._session = session
        self._base_url = base_url.rstrip("/")
        self._api_key = api_key
        self._label = label
        self._policy = policy
        self._limits = limits or Limits()
        self._pool = pool or BodyPool()
        self._budget = RunBudget(guard, record)
        self._in_flight = 0
        self._logged: set[str] = set()
        self.key_refused: int | None = None  # upstream answered 401/403: the key is wrong
        self.unreachable = ""  # why the endpoint could not be reached, if the last try failed
        self._runner: web.BaseRunner | None = None

    @property
    def refusal(self) -> str | None:
        """Why the budget stopped this run, if it did."""
        return self._budget.refusal

    async def start(self, sock: Path) -> None:
        # No lingering: what a refused request did not send is not waited for. An idle
        # connection is closed after a while, so a dead one does not hold a slot for long.
        server = CappedServer(
            self._handle,
            self._limits.connections,
            self._label,
            access_log=None,
            lingering_time=0,
            keepalive_timeout=KEEPALIVE_S,
        )
        # A run that ended has no use for answers still in flight: do not wait for them.
        self._runner = web.ServerRunner(server, shutdown_timeout=0.5)
        await self._runner.setup()
        _remove_stale(sock)
        site = web.UnixSite(self._runner, str(sock))
        await site.start()
        os.chmod(sock, 0o600)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def _refuse(
        self, status: int, kind: str, message: str, headers: dict[str, str] | None = None
    ) -> web.Response:
        """A refusal the agent sees at once; logged once per run and reason. The connection
        is closed after it: whatever of the body was not read is not waited for."""
        if message not in self._logged and len(self._logged) < MAX_LOGGED:
            self._logged.add(message)
            last = len(self._logged) == MAX_LOGGED
            more = " (the run's last refusal logged)" if last else ""
            log.warning("proxy %s refused %s: %s%s", self._label, status, message, more)
        response = _error(status, kind, message, {**NO_RETRY, **(headers or {})})
        response.force_close()
        return response

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        if request.path not in ALLOWED_PATHS:
            message = f"nanoclaw: only the Messages API is reachable, not {request.path[:200]}"
            return self._refuse(404, "not_found_error", message)
        if request.method != "POST":
            message = "nanoclaw: use POST"
            return self._refuse(405, "invalid_request_error", message, {"allow": "POST"})
        if self._in_flight >= self._limits.in_flight:
            n = self._limits.in_flight
            message = f"nanoclaw: more than {n} requests in flight for this run"
            return self._refuse(429, "rate_limit_error", message)
        self._in_flight += 1
        try:
            return await self._take(request)
        finally:
            self._in_flight -= 1

    async def _take(self, request: web.BaseRequest) -> web.StreamResponse:
        """The body read within the limits, holding its bytes in the daemon's pool."""
        size = request.content_length
        if size is None:
            return self._refuse(411, "invalid_request_error", "nanoclaw: send a content-length")
        if size > self._limits.max_body:
            message = f"nanoclaw: a request body is at most {self._limits.max_body} bytes"
            return self._refuse(413, "request_too_large", message)
        if not await self._pool.take(size, self._limits.body_timeout_s):
            log.warning("proxy %s: the daemon's body allowance is full", self._label)
            return _error(503, "overloaded_error", "nanoclaw: the model proxy is busy")
        try:
            try:
                body = await read_body(request.content, size, self._limits)
            except BodyError as exc:
                return self._refuse(exc.status, "invalid_request_error", f"nanoclaw: {exc}")
            betas = request.headers.get("anthropic-beta", "")
            verdict = admit(body, betas, self._policy, request.path == COUNT_TOKENS)
            del body
            if isinstance(verdict, Refusal):
                return self._refuse(verdict.status, verdict.kind, verdict.message)
            return await self._send(request, verdict)
        finally:
            self._pool.give(size)

    async def _send(self, request: web.BaseRequest, admitted: Admitted) -> web.StreamResponse:
        """Forward an admitted request; a Messages call is reserved first and settled after."""
        if request.path == COUNT_TOKENS:  # free: no budget
            return await self._forward(request, admitted, None)
        over = await self._budget.reserve(admitted.max_tokens)
        if over is not None:
            return self._refuse(429, "rate_limit_error", over)
        try:
            return await self._forward(request, admitted, self._budget)
        finally:
            self._budget.release(admitted.max_tokens)

    async def _forward(
        self, request: web.BaseRequest, admitted: Admitted, budget: RunBudget | None
    ) -> web.StreamResponse:
        headers = {
            "content-type": "application/json",
            "anthropic-version": API_VERSION,
            "x-api-key": self._api_key.get_secret_value(),
        }
        if admitted.betas:
            headers["anthropic-beta"] = admitted.betas
        try:
            async with self._session.post(
                self._base_url + request.path,
                data=admitted.body,
                headers=headers,
                timeout=ClientTimeout(total=900),
            ) as upstream:
                data = await upstream.read()
                status = upstream.status
                out_headers = {
                    k: upstream.headers[k]
                    for k in FORWARD_RESPONSE_HEADERS
                    if k in upstream.headers
                }
        except (ClientError, TimeoutError) as exc:
            # The run's outcome line says it, once: not one warning per retry of the SDK.
            self.unreachable = str(exc)[:300] or exc.__class__.__name__
            log.debug("proxy %s upstream error: %s", self._label, exc)
            if budget is not None and isinstance(exc, ClientConnectorError):
                await budget.refund()  # never reached upstream
            return _error(502, "api_error", f"model endpoint unreachable: {exc.__class__.__name__}")
        self.unreachable = ""
        if status in (401, 403):  # the key itself, not a policy of ours (those never get here)
            self.key_refused = status
        if budget is not None:
            kind = out_headers.get("content-type", "")
            await budget.settle(response_usage(status, kind, data))
        return web.Response(body=data, status=status, headers=out_headers)
