"""The host-side model proxy: a unix socket in the group's IPC dir, served for one agent run.

It forwards only the Messages endpoints and only what the run may ask (`admission`), read
within the limits of `intake`, drops whatever credential the sandbox sends, sends it with the
daemon's SDK client for the run's provider (`upstream`, `openai_upstream`: they hold the real
keys; Chat Completions answers are translated back to Messages), falls back along the group's
model chain on overload (`fallback`), streams the answer back as it comes, and counts each
request against the group's daily budget (`budget`, tokens by `usage`) before it goes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import anthropic
import openai
from aiohttp import web
from anthropic import AsyncAnthropic
from httpx2 import HTTPError

from nanoclaw.models import ModelCall, Usage
from nanoclaw.proxy.admission import Admitted, Policy, Refusal, admit
from nanoclaw.proxy.budget import BudgetGuard, RunBudget
from nanoclaw.proxy.fallback import fallback_answered, fallback_log, fallback_note, falls_back
from nanoclaw.proxy.intake import BodyError, BodyPool, CappedServer, Limits, read_body
from nanoclaw.proxy.openai_upstream import Translated, open_chat, status_error
from nanoclaw.proxy.providers import Route, Target, Upstreams
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
StatusError = (anthropic.APIStatusError, openai.APIStatusError)
ConnectionFailed = (anthropic.APIConnectionError, openai.APIConnectionError, TimeoutError)
BrokenOff = (HTTPError, OSError, TimeoutError, openai.APIError)  # OSError: the agent hung up
Answer = anthropic.AsyncAPIResponse[Any] | Translated
Opened = AbstractAsyncContextManager[Answer]
OnFallback = Callable[[str], Awaitable[None]]


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
        client: AsyncAnthropic | Upstreams,
        record: Callable[[Usage], Awaitable[None]],
        label: str = "",
        guard: BudgetGuard | None = None,
        *,
        policy: Policy,
        limits: Limits | None = None,
        pool: BodyPool | None = None,
        route: Route | None = None,
        on_fallback: OnFallback | None = None,
    ) -> None:
        self._clients = Upstreams.of(client)
        self._route = route or Route()
        self._on_fallback = on_fallback
        self._fell_back = False  # the run noted a fallback already (the chat is told once)
        self.last_answered: ModelCall | None = None  # who answered the run's last request
        self._label = label
        self._policy = policy
        self._limits = limits or Limits()
        self._pool = pool or BodyPool()
        self._budget = RunBudget(guard, record)
        self._in_flight = 0
        self._logged: set[str] = set()
        self.key_refused: int | None = None  # upstream answered 401/403: the key is wrong
        self.key_provider = "anthropic"  # whose key that was
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
        """Forward an admitted request along the group's model chain; a Messages call is
        reserved once (for the group's model) and settled with whoever answered it."""
        chain = self._route.chain(self._model_of(admitted))
        if request.path == COUNT_TOKENS:  # free: no budget, no fallback
            if chain[0].provider != "anthropic":
                message = f"nanoclaw: count_tokens is not available with {chain[0].provider}"
                return self._refuse(404, "not_found_error", message)
            return await self._forward(request, admitted, chain[:1], None)
        over = await self._budget.reserve(admitted.max_tokens, chain[0].model)
        if over is not None:
            return self._refuse(429, "rate_limit_error", over)
        try:
            return await self._forward(request, admitted, chain, self._budget)
        finally:
            self._budget.release(admitted.max_tokens)

    def _model_of(self, admitted: Admitted) -> str:
        """The model asked: admission let only the policy's through, so with one model in
        the policy (the usual case) the body need not be parsed again for it."""
        if len(self._policy.models) == 1:
            return next(iter(self._policy.models))
        return str(json.loads(admitted.body)["model"])

    def _open(self, target: Target, admitted: Admitted, counting: bool) -> Opened | None:
        if target.provider == "anthropic":
            return open_call(self._clients.anthropic, admitted, counting, target.model)
        client = self._clients.chat(target.provider)
        if client is None:
            return None
        return open_chat(client, target.provider, target.model, admitted.body)

    def _falling_back(self, chain: tuple[Target, ...], tried: int, status: int) -> None:
        log.info("proxy %s: %s", self._label, fallback_log(chain[tried], status, chain[tried + 1]))

    async def _answered_by(self, target: Target) -> None:
        """A fallback answered: the first time in the run, a warning and a line in the chat."""
        if self._fell_back:
            return
        self._fell_back = True
        log.warning("proxy %s: %s", self._label, fallback_answered(target))
        if self._on_fallback is not None:
            try:  # the note is a courtesy: the answer itself must not fail with it
                await self._on_fallback(fallback_note(target))
            except Exception:
                log.exception("proxy %s: the chat could not be told of the fallback", self._label)

    async def _forward(
        self,
        request: web.BaseRequest,
        admitted: Admitted,
        chain: tuple[Target, ...],
        budget: RunBudget | None,
    ) -> web.StreamResponse:
        """Send through the SDK (which retries 429/5xx as the answer asks), the next model of
        the chain when it still fails, and relay the answer. Errors are the upstream's own,
        told not to be retried again: the host did."""
        counting = request.path == COUNT_TOKENS
        deadline = asyncio.get_running_loop().time() + TOTAL_S
        for tried, target in enumerate(chain):
            call = self._open(target, admitted, counting)
            if call is None:
                self.unreachable = f"no client for provider {target.provider}"
                return _error(502, "api_error", f"nanoclaw: {self.unreachable}", NO_RETRY)
            try:
                async with contextlib.AsyncExitStack() as stack:
                    async with asyncio.timeout_at(deadline):  # the SDK's waits between tries too
                        upstream: Answer = await stack.enter_async_context(call)
                    self.unreachable = ""
                    who = ModelCall(target.provider, target.model, tried > 0)
                    self.last_answered = who
                    if tried:
                        await self._answered_by(target)
                    return await self._relay(request, upstream, budget, deadline, who)
            except StatusError as exc:
                self.unreachable = ""
                if tried + 1 < len(chain) and falls_back(exc.status_code):
                    self._falling_back(chain, tried, exc.status_code)
                    continue
                return self._status_answer(exc, target)
            except ConnectionFailed as exc:
                return await self._connection_failed(exc, budget)
        raise AssertionError("a chain has a model")  # pragma: no cover

    def _status_answer(
        self, exc: anthropic.APIStatusError | openai.APIStatusError, target: Target
    ) -> web.StreamResponse:
        if exc.status_code in (401, 403):  # the key itself: our refusals never get here
            self.key_refused = exc.status_code
            self.key_provider = target.provider
        if isinstance(exc, openai.APIStatusError):
            body, headers = status_error(exc)
        else:
            body, headers = exc.response.content, forwarded(exc.response.headers)
        return web.Response(body=body, status=exc.status_code, headers={**headers, **NO_RETRY})

    async def _connection_failed(
        self, exc: BaseException, budget: RunBudget | None
    ) -> web.StreamResponse:
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
        upstream: Answer,
        budget: RunBudget | None,
        deadline: float,
        who: ModelCall,
    ) -> web.StreamResponse:
        """The answer back to the agent chunk by chunk, its usage counted on the way (a
        translated answer is counted from the Messages events made of it). Cut short
        (upstream broke off, or the deadline), the agent's connection is closed without the
        end of the body, so its client sees a broken reply and retries."""
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
        except BrokenOff as exc:
            broken = str(exc)[:300] or exc.__class__.__name__
        if budget is not None:  # what was streamed before a break counts too
            await budget.settle(meter.usage(), who)
        if not broken:
            with contextlib.suppress(OSError):  # the agent hung up at the very end
                await response.write_eof()
            return response
        log.info("proxy %s: an answer was cut short: %s", self._label, broken)
        response.force_close()
        if request.transport is not None:
            request.transport.close()
        return response
