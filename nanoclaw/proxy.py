"""The host-side model proxy: a unix socket in the group's IPC dir, served for one agent run.

It forwards only the Messages endpoints, drops whatever credential the sandbox sends,
adds the real key, records token usage for the run and keeps the group's daily budget.
The key never enters the sandbox.

A group's day is the calendar day in TZ: its other runs count on the day they started,
this run's own usage always counts whole. Budget tokens are input + cache writes + output:
cache reads (a tenth of the input price, re-read at every step) do not. A request that
starts under the budget runs to the end, so the last one may overshoot it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

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


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Budget:
    """A group's daily allowance of Messages requests and budget tokens; 0 is unlimited."""

    requests: int = 0
    tokens: int = 0


def budget_tokens(usage: Usage) -> int:
    return usage.input_tokens + usage.cache_write_tokens + usage.output_tokens


def add_usage(a: Usage, b: Usage) -> Usage:
    return Usage(
        a.requests + b.requests,
        a.input_tokens + b.input_tokens,
        a.output_tokens + b.output_tokens,
        a.cache_read_tokens + b.cache_read_tokens,
        a.cache_write_tokens + b.cache_write_tokens,
    )


def day_start(now: datetime, zone: ZoneInfo, days: int = 0) -> datetime:
    """Midnight in `zone` starting the day of `now`, `days` later (negative: earlier)."""
    return datetime.combine(now.astimezone(zone).date() + timedelta(days=days), time(0), zone)


def budget_verdict(
    folder: str, used: Usage, budget: Budget, now: datetime, zone: ZoneInfo
) -> str | None:
    """Why the group may not send another request today, or None when it may."""
    tokens = budget_tokens(used)
    if budget.requests and used.requests >= budget.requests:
        what, n, limit = "request", used.requests, budget.requests
    elif budget.tokens and tokens >= budget.tokens:
        what, n, limit = "token", tokens, budget.tokens
    else:
        return None
    resets = day_start(now, zone, 1)
    return (
        f"nanoclaw: group {folder} is over its daily {what} budget ({n} of {limit}); "
        f"resets at {resets:%H:%M %Z}"
    )


@dataclass(frozen=True)
class BudgetGuard:
    """What the proxy needs to keep one group's budget: `spent(since)` is the group's usage
    by runs other than this one started since that moment (the store's sum)."""

    folder: str
    budget: Budget
    zone: ZoneInfo
    spent: Callable[[datetime], Awaitable[Usage]]
    clock: Callable[[], datetime] = field(default=_utc_now)


def _error(
    status: int, kind: str, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    body = {"type": "error", "error": {"type": kind, "message": message}}
    return web.json_response(body, status=status, headers=headers)


def _remove_stale(sock: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(sock)


class ModelProxy:
    """Serves one socket; `record` receives the usage of each forwarded request.

    Over budget, a request is answered 429 rate_limit_error with `x-should-retry: false`
    and no retry-after: the anthropic SDK obeys that header before its status rules, so
    the agent gets a RateLimitError at once and its run ends instead of backing off.
    """

    def __init__(
        self,
        session: ClientSession,
        base_url: str,
        api_key: str,
        record: Callable[[Usage], Awaitable[None]],
        label: str = "",
        guard: BudgetGuard | None = None,
    ) -> None:
        self._session = session
        self._base_url = base_url.rstrip("/")
        self._api_key = api_key
        self._record = record
        self._label = label
        self._guard = guard
        self._used = Usage()  # this run's own, counted whole even past midnight
        self.refusal: str | None = None  # why the budget stopped this run, if it did
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

    async def _over_budget(self) -> str | None:
        guard = self._guard
        if guard is None or not (guard.budget.requests or guard.budget.tokens):
            return None
        now = guard.clock()
        used = add_usage(await guard.spent(day_start(now, guard.zone)), self._used)
        verdict = budget_verdict(guard.folder, used, guard.budget, now, guard.zone)
        if verdict is not None and self.refusal is None:
            self.refusal = verdict  # once per run: the agent stops at the first refusal anyway
            log.warning("proxy %s group=%s refused: %s", self._label, guard.folder, verdict)
        return verdict

    async def _count(self, usage: Usage) -> None:
        self._used = add_usage(self._used, usage)
        await self._record(usage)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.path not in ALLOWED_PATHS:
            log.warning("proxy %s refused %s %s", self._label, request.method, request.path)
            return _error(404, "not_found_error", "only the Messages API is reachable")
        if request.method != "POST":
            log.warning("proxy %s refused %s %s", self._label, request.method, request.path)
            return _error(405, "invalid_request_error", "use POST", {"allow": "POST"})
        verdict = await self._over_budget()
        if verdict is not None:
            return _error(429, "rate_limit_error", verdict, {"x-should-retry": "false"})
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
        if request.path == "/v1/messages":
            kind = out_headers.get("content-type", "")
            await self._count(response_usage(status, kind, data))
        return web.Response(body=data, status=status, headers=out_headers)
