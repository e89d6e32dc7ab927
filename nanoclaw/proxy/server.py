"""The host-side model proxy: a unix socket in the group's IPC dir, served for one agent run.

It forwards only the Messages endpoints and only what the run may ask (`admission`), read
within the limits of `intake`, drops whatever credential the sandbox sends, sends it with the
daemon's one SDK client (`upstream`, which holds the real key), streams the answer back as it
comes, and counts each request against the group's daily budget (`budget`, tokens by
`usage`) before it goes. The key never enters the sandbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from aiohttp import web
from anthropic import APIConnectionError, APIStatusError, AsyncAnthropic, AsyncAPIResponse
from httpx2 import HTTPError

from nanoclaw.models import Usage
from nanoclaw.proxy.admission import Admitted, Policy, Refusal, admit
from nanoclaw.proxy.budget import BudgetGuard, RunBudget
from nanoclaw.proxy.intake import BodyError, BodyPool, CappedServer, Limits, read_body
from nanoclaw.proxy.upstream import failure, never_sent, open_call
from nanoclaw.proxy.usage import UsageMeter

log = logging.getLogger(__name__)
MESSAGES = "/v1/messages"
COUNT_TOKENS = "/v1/messages/count_tokens"
ALLOWED_PATHS = frozenset({MESSAGES, COUNT_TOKENS})
FORWARD_RESPONSE_HEADERS = ("content-type", "request-id", "retry-after", "x-should-retry")
NO_RETRY = {"x-should-retry": "false"}
KEEPALIVE_S = 75.0
TOTAL_S = 900.0  # one request, the SDK's retries and the whole answer streamed back
MAX_LOGGED = 20  # distinct refusals logged per run: a sandbox cannot flood the log


def forwarded(headers: Mapping[str, str]) -> dict[str, str]:
    return {k: headers[k] for k in FORWARD_RESPONSE_HEADERS if k in headers}


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
    and no retry-after: the runner's client (as the anthropic SDK) obeys that header before
    its status rules, so the agent gets the error at once, and over budget its run ends
    instead of backing off. Upstream's errors come with it too: the host's SDK retried them.
    """

    def __init__(
        self,
        client: AsyncAnthropic,
        record: Callable[[Usage], Awaitable[None]],
        label: str = "",
        guard: BudgetGuard | None = None,
        *,
        policy: Policy,
        limits: Limits | None = None,
        pool: BodyPool | None = None,
    ) -> None:
        self._client = client
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
        """Send through the SDK (which retries 429/5xx as the answer asks) and relay the
        answer. Errors are the upstream's own, told not to be retried again: the host did."""
        counting = request.path == COUNT_TOKENS
        deadline = asyncio.get_running_loop().time() + TOTAL_S
        try:
            async with contextlib.AsyncExitStack() as stack:
                async with asyncio.timeout_at(deadline):  # the SDK's waits between tries too
                    upstream = await stack.enter_async_context(
                        open_call(self._client, admitted, counting)
                    )
                self.unreachable = ""
                return await self._relay(request, upstream, budget, deadline)
        except APIStatusError as exc:
            self.unreachable = ""
            if exc.status_code in (401, 403):  # the key itself: our refusals never get here
                self.key_refused = exc.status_code
            headers = {**forwarded(exc.response.headers), **NO_RETRY}
            return web.Response(body=exc.response.content, status=exc.status_code, headers=headers)
        except (APIConnectionError, TimeoutError) as exc:
            # The run's outcome line says it, once: not one warning per try.
            self.unreachable = failure(exc)
            log.debug("proxy %s upstream error: %s", self._label, self.unreachable)
            # Judged by the last try: one that failed to connect after an earlier try was
            # answered 5xx is refunded too (the answered one cost nothing but a request).
            if budget is not None and never_sent(exc):
                await budget.refund()
            kind = (exc.__cause__ or exc).__class__.__name__
            # The SDK has tried already: a retry by the runner would multiply the tries.
            return _error(502, "api_error", f"model endpoint unreachable: {kind}", NO_RETRY)

    async def _relay(
        self,
        request: web.BaseRequest,
        upstream: AsyncAPIResponse[Any],
        budget: RunBudget | None,
        deadline: float,
    ) -> web.StreamResponse:
        """The answer back to the agent chunk by chunk, its usage counted on the way. Cut
        short (upstream broke off, or the deadline), the agent's connection is closed
        without the end of the body, so its client sees a broken reply and retries."""
        headers = forwarded(upstream.headers)
        meter = UsageMeter(headers.get("content-type", ""))
        response = web.StreamResponse(status=upstream.status_code, headers=headers)
        broken = ""
        try:
            await response.prepare(request)
            async with asyncio.timeout_at(deadline):
                async for chunk in upstream.iter_bytes():
                    meter.feed(chunk)
                    await response.write(chunk)
        except (HTTPError, OSError, TimeoutError) as exc:  # OSError: the agent hung up
            broken = str(exc)[:300] or exc.__class__.__name__
        if budget is not None:  # what was streamed before a break counts too
            await budget.settle(meter.usage())
        if not broken:
            with contextlib.suppress(OSError):  # the agent hung up at the very end
                await response.write_eof()
            return response
        log.info("proxy %s: an answer was cut short: %s", self._label, broken)
        response.force_close()
        if request.transport is not None:
            request.transport.close()
        return response
