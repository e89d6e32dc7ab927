"""Scripted fake of the OpenAI Chat Completions API (POST /v1/chat/completions) for tests.
Owns the aiohttp server thread, request recording, reply scripting (FIFO script, else the
fake Anthropic's [[directive]] responder read from the chat), JSON and streamed (SSE) answers
with tool calls, usage with cached prompt tokens, scripted errors and an optional key check."""

from __future__ import annotations

import asyncio
import json
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from fake_anthropic import Recorded, directive_reply
from served import Served

ERROR_TYPES = {400: "invalid_request_error", 401: "invalid_api_key", 429: "rate_limit_exceeded"}
PIECES = 3


@dataclass(frozen=True)
class ChatReply:
    text: str = ""
    tool_calls: tuple[tuple[str, dict[str, Any]], ...] = ()
    finish_reason: str | None = None  # None: tool_calls when there are some, else stop
    status: int = 200  # != 200: OpenAI's error JSON with `message`
    message: str = "fake error"
    headers: dict[str, str] = field(default_factory=dict)
    prompt_tokens: int | None = None  # None: a quarter of the request's JSON
    completion_tokens: int | None = None
    cached_tokens: int = 0
    raw_arguments: str | None = None  # the first tool call's arguments as sent, unparsed
    error_after: int | None = None  # streamed: an `error` chunk after this many, then the end


def chat_error(status: int, message: str = "fake error", retry_after: str = "") -> ChatReply:
    headers = {"retry-after": retry_after} if retry_after else {}
    return ChatReply(status=status, message=message, headers=headers)


def _pieces(text: str) -> list[str]:
    size = max(1, -(-len(text) // PIECES))
    return [text[i : i + size] for i in range(0, len(text), size)]


def _last_turn(body: dict[str, Any]) -> dict[str, Any]:
    """The chat's last turn as a Messages body the directive responder reads."""
    messages = body.get("messages", [])
    results: list[str] = []
    for message in reversed(messages):
        if message.get("role") != "tool":
            break
        results.insert(0, str(message.get("content", "")))
    if results:
        blocks = [{"type": "tool_result", "content": r} for r in results]
        return {"messages": [{"role": "user", "content": blocks}]}
    users = [m for m in messages if m.get("role") == "user"]
    content = users[-1].get("content", "") if users else ""
    if isinstance(content, list):
        content = "\n".join(p.get("text", "") for p in content if p.get("type") == "text")
    return {"messages": [{"role": "user", "content": content}]}


def directive_chat_reply(body: dict[str, Any]) -> ChatReply:
    reply = directive_reply(_last_turn(body))
    if reply.status != 200:
        return ChatReply(status=reply.status, message=reply.error_message)
    text = "".join(b.get("text", "") for b in reply.content if b["type"] == "text")
    calls = tuple((b["name"], b["input"]) for b in reply.content if b["type"] == "tool_use")
    return ChatReply(text=text, tool_calls=calls)


class FakeOpenAI:
    """`with FakeOpenAI() as fake:` then point the SDK at `fake.base_url` (ends in /v1)."""

    def __init__(self) -> None:
        self.base_url = ""
        self.api_key: str | None = None  # when set, another key is answered 401
        self._cond = threading.Condition()
        self._requests: list[Recorded] = []
        self._usages: list[dict[str, Any]] = []
        self._script: deque[ChatReply] = deque()
        self._served = Served("fake-openai")
        self.models = ["gpt-fake", "gpt-5-mini", "llama3:8b"]  # what GET /models lists

    @property
    def requests(self) -> list[Recorded]:
        with self._cond:
            return list(self._requests)

    @property
    def usages(self) -> list[dict[str, Any]]:
        with self._cond:
            return list(self._usages)

    def script(self, *replies: ChatReply) -> None:
        with self._cond:
            self._script.extend(replies)

    def start(self) -> FakeOpenAI:
        self.base_url = self._served.start(self._app) + "/v1"
        return self

    def stop(self) -> None:
        self._served.stop()

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._completions)
        app.router.add_get("/v1/models", self._models)
        app.router.add_route("*", "/{tail:.*}", self._not_found)
        return app

    async def _record(self, request: web.Request) -> dict[str, Any]:
        body = json.loads(await request.text() or "{}")
        headers = {k.lower(): v for k, v in request.headers.items()}
        with self._cond:
            self._requests.append(Recorded(request.path, headers, body, time.time()))
            self._cond.notify_all()
        return body if isinstance(body, dict) else {}

    async def _not_found(self, request: web.Request) -> web.Response:
        await self._record(request)
        return _error(404, f"fake OpenAI: no route {request.method} {request.path}", {})

    async def _models(self, request: web.Request) -> web.Response:
        await self._record(request)
        if self.api_key is not None and request.headers.get("authorization", "") != (
            f"Bearer {self.api_key}"
        ):
            return _error(401, "Incorrect API key provided", {})
        listed = [{"id": m, "object": "model", "owned_by": "fake"} for m in self.models]
        return web.json_response({"object": "list", "data": listed})

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        body = await self._record(request)
        auth = request.headers.get("authorization", "")
        if self.api_key is not None and auth != f"Bearer {self.api_key}":
            return _error(401, "Incorrect API key provided", {})
        with self._cond:
            reply = self._script.popleft() if self._script else None
        reply = reply or directive_chat_reply(body)
        headers = {"x-request-id": "req_" + secrets.token_hex(8), **reply.headers}
        if reply.status != 200:
            return _error(reply.status, reply.message, headers)
        usage = _usage(body, reply)
        with self._cond:
            self._usages.append(usage)
        if body.get("stream") is True:
            return await self._stream(request, body, reply, usage, headers)
        return web.json_response(_completion(body, reply, usage), headers=headers)

    async def _stream(
        self,
        request: web.Request,
        body: dict[str, Any],
        reply: ChatReply,
        usage: dict[str, Any],
        headers: dict[str, str],
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={**headers, "content-type": "text/event-stream"})
        await response.prepare(request)
        cid, model = "chatcmpl-" + secrets.token_hex(8), body.get("model", "gpt-fake")

        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            choice = {"index": 0, "delta": delta, "finish_reason": finish}
            return {"id": cid, "object": "chat.completion.chunk", "created": 0, "model": model,
                    "choices": [choice]}  # fmt: skip

        chunks = [chunk({"role": "assistant", "content": ""})]
        chunks += [chunk({"content": p}) for p in _pieces(reply.text)]
        for n, (call_id, name, arguments) in enumerate(_calls(reply)):
            head = {"index": n, "id": call_id, "type": "function"}
            chunks.append(chunk({"tool_calls": [{**head, "function": {"name": name}}]}))
            for part in _pieces(arguments):
                call = {"index": n, "function": {"arguments": part}}
                chunks.append(chunk({"tool_calls": [call]}))
        chunks.append(chunk({}, _finish(reply)))
        if (body.get("stream_options") or {}).get("include_usage"):
            last = chunk({})
            chunks.append({**last, "choices": [], "usage": usage})
        if reply.error_after is not None:
            error = {"message": "fake stream error", "type": "server_error"}
            chunks = [*chunks[: reply.error_after], {"error": error}]
        for data in chunks:
            await response.write(f"data: {json.dumps(data)}\n\n".encode())
            await asyncio.sleep(0)
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response


def _error(status: int, message: str, headers: dict[str, str]) -> web.Response:
    kind = ERROR_TYPES.get(status, "server_error")
    error = {"message": message, "type": kind, "param": None, "code": kind}
    return web.json_response({"error": error}, status=status, headers=headers)


def _calls(reply: ChatReply) -> list[tuple[str, str, str]]:
    out = []
    for n, (name, args) in enumerate(reply.tool_calls):
        raw = reply.raw_arguments if n == 0 and reply.raw_arguments is not None else None
        out.append(("call_" + secrets.token_hex(6), name, raw or json.dumps(args)))
    return out


def _finish(reply: ChatReply) -> str:
    return reply.finish_reason or ("tool_calls" if reply.tool_calls else "stop")


def _usage(body: dict[str, Any], reply: ChatReply) -> dict[str, Any]:
    prompt = len(json.dumps(body)) // 4 if reply.prompt_tokens is None else reply.prompt_tokens
    size = len(reply.text) + sum(len(json.dumps(a)) for _, a in reply.tool_calls)
    out = size // 4 + 1 if reply.completion_tokens is None else reply.completion_tokens
    return {
        "prompt_tokens": prompt,
        "completion_tokens": out,
        "total_tokens": prompt + out,
        "prompt_tokens_details": {"cached_tokens": reply.cached_tokens},
    }


def _completion(body: dict[str, Any], reply: ChatReply, usage: dict[str, Any]) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": reply.text or None}
    calls = [
        {"id": cid, "type": "function", "function": {"name": name, "arguments": args}}
        for cid, name, args in _calls(reply)
    ]
    if calls:
        message["tool_calls"] = calls
    choice = {"index": 0, "message": message, "finish_reason": _finish(reply)}
    return {
        "id": "chatcmpl-" + secrets.token_hex(8),
        "object": "chat.completion",
        "created": 0,
        "model": body.get("model", "gpt-fake"),
        "choices": [choice],
        "usage": usage,
    }
