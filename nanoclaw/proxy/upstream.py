"""The proxy's way to the model: one anthropic SDK client per daemon, holding the real key and
nothing else of the daemon's environment, and an admitted request sent through it as a raw,
streamed response (the SDK retries 429/5xx and honours retry-after; the body is not read).
"""

from __future__ import annotations

import json
from contextlib import AbstractAsyncContextManager
from typing import Any

import httpx2
from anthropic import AsyncAnthropic, AsyncAPIResponse, DefaultAsyncHttpxClient
from pydantic import SecretStr

from nanoclaw.proxy.admission import Admitted

API_VERSION = "2023-06-01"  # the only one; pinned, like everything else the proxy sends
MAX_RETRIES = 2
# A request may ask 32,000 tokens: the SDK's own guess of the longest answer (an hour for
# 128,000) gives 15 minutes, the proxy's deadline for a whole answer (see server.TOTAL_S).
TIMEOUT = httpx2.Timeout(900.0, connect=10.0)
ARGS = ("model", "max_tokens", "messages")  # the SDK's keyword arguments; the rest is extra_body
COUNT_ARGS = ("model", "messages")
# What goes upstream: the SDK's own headers, the key and the version. ANTHROPIC_CUSTOM_HEADERS
# (read by the SDK from the daemon's environment) or anything else is dropped on the way out.
HTTP_HEADERS = frozenset(  # what any SDK's request needs; each provider adds its own
    {
        "host",
        "accept",
        "accept-encoding",
        "connection",
        "content-type",
        "content-length",
        "user-agent",
        "authorization",
    }
)
SENT_HEADERS = HTTP_HEADERS | frozenset(
    {
        "x-api-key",
        "anthropic-version",
        "anthropic-beta",
        "idempotency-key",
    }
)
SDK_HEADERS = "x-stainless-"  # the SDK's bookkeeping (retry count, timeout, raw-response mode)
Call = AbstractAsyncContextManager[AsyncAPIResponse[Any]]


def sent_header(name: str) -> bool:
    name = name.lower()
    return name in SENT_HEADERS or name.startswith(SDK_HEADERS)


async def _drop_foreign_headers(request: httpx2.Request) -> None:
    for name in [n for n in request.headers if not sent_header(n)]:
        del request.headers[name]


def upstream_client(
    api_key: SecretStr, base_url: str, max_retries: int = MAX_RETRIES
) -> AsyncAnthropic:
    """The daemon's one client. The key is passed explicitly, so the SDK reads no credential
    (ANTHROPIC_AUTH_TOKEN, profiles, federation) from the environment; it sends the key as a
    bearer token and, as Anthropic-compatible endpoints expect, as `x-api-key` too."""
    key = api_key.get_secret_value()
    http = DefaultAsyncHttpxClient(event_hooks={"request": [_drop_foreign_headers]})
    return AsyncAnthropic(
        api_key=key,
        base_url=base_url,
        max_retries=max_retries,
        timeout=TIMEOUT,
        default_headers={"anthropic-version": API_VERSION, "x-api-key": key},
        open_telemetry=False,  # no spans, no trace headers added to what goes upstream
        http_client=http,
    )


def open_call(
    client: AsyncAnthropic, admitted: Admitted, counting: bool, model: str | None = None
) -> Call:
    """The admitted request as the SDK's streamed raw response: status and headers when
    entered, the body read as it is iterated. The request is plain JSON (nothing in it is a
    file the SDK would read) and goes as checked: what is not a keyword goes in extra_body.
    `model`: a fallback's, instead of the one asked."""
    request: dict[str, Any] = json.loads(admitted.body)
    if model is not None:
        request["model"] = model
    headers = {"anthropic-beta": admitted.betas} if admitted.betas else None
    stream = client.messages.with_streaming_response
    if counting:  # max_tokens, when sent, goes as it came, in extra_body
        return stream.count_tokens(
            model=request["model"],
            messages=request["messages"],
            extra_body={k: v for k, v in request.items() if k not in COUNT_ARGS},
            extra_headers=headers,
            timeout=TIMEOUT,
        )
    return stream.create(
        model=request["model"],
        max_tokens=request["max_tokens"],
        messages=request["messages"],
        extra_body={k: v for k, v in request.items() if k not in ARGS},
        extra_headers=headers,
        timeout=TIMEOUT,
    )


def never_sent(exc: BaseException) -> bool:
    """Whether a failed call never reached upstream: the connection itself was not made."""
    cause = exc.__cause__
    return isinstance(cause, (httpx2.ConnectError, httpx2.ConnectTimeout))


def failure(exc: BaseException) -> str:
    """What went wrong, in a few words: the transport's own error rather than the SDK's
    "Connection error."."""
    cause = exc.__cause__ or exc
    return (str(cause) or cause.__class__.__name__)[:300]
