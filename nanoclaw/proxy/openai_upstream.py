"""The proxy's way to an OpenAI-style model: the daemon's AsyncOpenAI client per provider
(its key explicit, nothing read from the environment, foreign headers dropped), and an
admitted Messages request sent through it, its answer translated back as it comes.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx2
import openai
from openai import APIStatusError, AsyncAPIResponse, AsyncOpenAI, DefaultAsyncHttpxClient
from pydantic import SecretStr

from nanoclaw.proxy.openai_request import OpenAIProvider, chat_request
from nanoclaw.proxy.openai_stream import StreamTranslator, encode, error_json, message_json
from nanoclaw.proxy.upstream import HTTP_HEADERS, MAX_RETRIES, SDK_HEADERS, TIMEOUT
from nanoclaw.settingvalues import OPENAI_URL

KEYLESS = "nanoclaw-keyless"  # the SDK wants a key; the header it makes is dropped on the way
SENT_HEADERS = HTTP_HEADERS
SSE = "text/event-stream; charset=utf-8"
JSON = "application/json"


def _header_filter(keyless: bool) -> Callable[[httpx2.Request], Awaitable[None]]:
    sent = SENT_HEADERS - {"authorization"} if keyless else SENT_HEADERS

    async def drop(request: httpx2.Request) -> None:
        for name in [n for n in request.headers if not _sent(n.lower(), sent)]:
            del request.headers[name]

    return drop


def _sent(name: str, sent: frozenset[str]) -> bool:
    return name in sent or name.startswith(SDK_HEADERS)


def openai_client(
    api_key: SecretStr | None, base_url: str | None, max_retries: int = MAX_RETRIES
) -> AsyncOpenAI:
    """One provider's client. Every argument the SDK would read from the environment
    (OPENAI_ORG_ID, OPENAI_PROJECT_ID, OPENAI_ADMIN_KEY, OPENAI_BASE_URL) is given, and
    organization or project headers are dropped anyway: only the key goes upstream."""
    key = api_key.get_secret_value() if api_key is not None else ""
    http = DefaultAsyncHttpxClient(event_hooks={"request": [_header_filter(not key)]})
    return AsyncOpenAI(
        api_key=key or KEYLESS,
        admin_api_key="",
        organization="",
        project="",
        webhook_secret="",
        base_url=base_url or OPENAI_URL,
        max_retries=max_retries,
        timeout=TIMEOUT,
        http_client=http,
    )


@dataclass
class Translated:
    """A translated answer as the proxy relays one: status, headers, bytes as they come."""

    status_code: int
    headers: dict[str, str]
    chunks: AsyncIterator[bytes]

    def iter_bytes(self) -> AsyncIterator[bytes]:
        return self.chunks


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


class StreamError(openai.APIError):
    """An error the endpoint sent inside a stream it had begun: the answer is cut short."""


async def _chunks(response: AsyncAPIResponse[Any]) -> AsyncIterator[dict[str, Any]]:
    """The chunks of a streamed completion, parsed from its server-sent events as they come
    (plain JSON: the SDK's typed chunks cost more than the translation itself)."""
    async for line in response.iter_lines():
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            return
        chunk = json.loads(data)
        if not isinstance(chunk, dict):
            continue
        if chunk.get("error"):
            raise StreamError(str(chunk["error"])[:300], response.http_request, body=chunk)
        yield chunk


async def _events(response: AsyncAPIResponse[Any], model: str) -> AsyncIterator[bytes]:
    translator = StreamTranslator(model)
    async for chunk in _chunks(response):
        events = translator.feed(chunk)
        if events:
            yield b"".join(encode(e) for e in events)
    yield b"".join(encode(e) for e in translator.finish())


@contextlib.asynccontextmanager
async def open_chat(
    client: AsyncOpenAI, provider: OpenAIProvider, model: str, body: bytes
) -> AsyncIterator[Translated]:
    """The admitted request sent as Chat Completions to `model`; raises the SDK's
    APIStatusError (after its retries) or APIConnectionError as the anthropic path does."""
    request = chat_request(json.loads(body), provider, model)
    rest = {k: v for k, v in request.items() if k not in ("model", "messages", "stream")}
    messages: Any = request["messages"]
    if request.get("stream"):
        raw = client.chat.completions.with_streaming_response.create(
            model=model, messages=messages, stream=True, extra_body=rest, timeout=TIMEOUT
        )
        async with raw as response:
            yield Translated(200, {"content-type": SSE}, _events(response, model))
        return
    completion = await client.chat.completions.create(
        model=model, messages=messages, extra_body=rest, timeout=TIMEOUT
    )
    answer = json.dumps(message_json(completion.model_dump(exclude_none=True), model))
    yield Translated(200, {"content-type": JSON}, _once(answer.encode()))


def status_error(exc: APIStatusError) -> tuple[bytes, dict[str, str]]:
    """An OpenAI error as Anthropic's error JSON, with the headers worth forwarding."""
    body = exc.body
    message = exc.message
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        message = body["message"]
    headers = {"content-type": JSON}
    for name, as_name in (("retry-after", "retry-after"), ("x-request-id", "request-id")):
        if name in exc.response.headers:
            headers[as_name] = exc.response.headers[name]
    return json.dumps(error_json(exc.status_code, message)).encode(), headers
