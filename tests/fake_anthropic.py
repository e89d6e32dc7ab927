"""Scripted fake of the Anthropic Messages API (POST /v1/messages) for tests.
Owns the aiohttp server thread, request recording, reply scripting (FIFO script -> custom
responder -> default [[directive]] responder), count_tokens, an optional key check, the
usage of each answer, prompt cache reads and writes included (`prompt_cache`), and a
streamed answer (`fake_stream`) when the request asks `"stream": true`."""

from __future__ import annotations

import asyncio
import html
import json
import re
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from fake_stream import encode, error_event, message_events
from prompt_cache import PromptCache
from served import Served

ERROR_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}
_DIRECTIVE = re.compile(r"\[\[(bash|tool|say|sleep|fail)\b")
_TAG = re.compile(r"<[^<>]*>")
_TOOL_NAME = re.compile(r"\s+([\w.-]+)\s*")
_CLOSE = re.compile(r"\s*\]\]")


@dataclass(frozen=True)
class Recorded:
    path: str
    headers: dict[str, str]  # lower-cased keys
    body: dict[str, Any]
    at: float  # time.time() on arrival

    @property
    def api_key(self) -> str | None:
        """The key sent as `x-api-key` or as `authorization: Bearer <key>` (SDK 2.x)."""
        auth = self.headers.get("authorization", "")
        bearer = auth[7:] if auth.lower().startswith("bearer ") else None
        return self.headers.get("x-api-key", bearer)


@dataclass(frozen=True)
class Reply:
    content: tuple[dict[str, Any], ...] = ()
    stop_reason: str = "end_turn"
    status: int = 200  # != 200 -> Anthropic error JSON built from error_type/error_message
    error_type: str = "api_error"
    error_message: str = ""
    delay: float = 0.0  # seconds the server waits before answering
    headers: dict[str, str] = field(default_factory=dict)  # extra response headers
    input_tokens: int | None = None
    output_tokens: int | None = None
    # Streamed answers only: the connection dropped after this many events; an `error`
    # event of this type sent after message_start (the stream then ends).
    cut_after: int | None = None
    error_event: str = ""


Responder = Callable[[dict[str, Any]], Reply]


def _rid(prefix: str) -> str:
    return prefix + secrets.token_hex(12)


def _tool_block(name: str, input: dict[str, Any]) -> dict[str, Any]:
    return {"type": "tool_use", "id": _rid("toolu_"), "name": name, "input": input}


def text_reply(
    text: str, *, input_tokens: int | None = None, output_tokens: int | None = None
) -> Reply:
    content = ({"type": "text", "text": text},)
    return Reply(content, input_tokens=input_tokens, output_tokens=output_tokens)


def tool_reply(name: str, input: dict[str, Any], *, text: str | None = None) -> Reply:
    lead = () if text is None else ({"type": "text", "text": text},)
    return Reply((*lead, _tool_block(name, input)), stop_reason="tool_use")


def tools_reply(calls: Sequence[tuple[str, dict[str, Any]]]) -> Reply:
    return Reply(tuple(_tool_block(n, i) for n, i in calls), stop_reason="tool_use")


def error_reply(
    status: int,
    error_type: str | None = None,
    message: str = "fake error",
    *,
    headers: dict[str, str] | None = None,
) -> Reply:
    etype = error_type or ERROR_TYPES.get(status, "api_error")
    return Reply(status=status, error_type=etype, error_message=message, headers=headers or {})


def _error_json(error_type: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": error_type, "message": message}}


def _blocks_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(
        b.get("text", "") for b in content or [] if isinstance(b, dict) and b.get("type") == "text"
    )


def _parse_tool(text: str, i: int) -> tuple[tuple[str, dict[str, Any]], int] | None:
    """Parse ` NAME {json}]]` starting at i: ((name, input), end) or None."""
    nm = _TOOL_NAME.match(text, i)
    if nm is None:
        return None
    try:
        obj, end = json.JSONDecoder().raw_decode(text, nm.end())
    except ValueError:
        return None
    close = _CLOSE.match(text, end)
    if close is None or not isinstance(obj, dict):
        return None
    return (nm.group(1), obj), close.end()


def _scan(text: str) -> list[tuple[str, str | tuple[str, dict[str, Any]]]]:
    """Directives in order of appearance: (kind, argument) pairs."""
    found: list[tuple[str, str | tuple[str, dict[str, Any]]]] = []
    pos = 0
    while m := _DIRECTIVE.search(text, pos):
        kind, i = m.group(1), m.end()
        if kind == "tool":
            parsed = _parse_tool(text, i)
            if parsed is not None:
                found.append((kind, parsed[0]))
            pos = i if parsed is None else parsed[1]
            continue
        depth, j = 1, i  # balanced scan so `[[bash: [[ -f x ]] && ls]]` works
        while j < len(text) and depth:
            if text.startswith("[[", j):
                depth, j = depth + 1, j + 2
            elif text.startswith("]]", j):
                depth, j = depth - 1, j + 2
            else:
                j += 1
        if depth:
            break
        found.append((kind, text[i : j - 2].lstrip(":").strip()))
        pos = j
    return found


def directive_reply(body: dict[str, Any]) -> Reply:
    """The default responder: tool_result -> "RESULT: ...", [[directives]], else echo."""
    users = [m for m in body.get("messages", []) if m.get("role") == "user"]
    content: Any = users[-1].get("content", "") if users else ""
    if isinstance(content, list):
        results = [b for b in content if isinstance(b, dict) and b.get("type") == "tool_result"]
        if results:
            texts = (_blocks_text(r.get("content")) for r in results)
            return text_reply("RESULT: " + "\n".join(texts))
    raw = _blocks_text(content)
    delay, fail = 0.0, 0
    blocks: list[dict[str, Any]] = []
    tools: list[dict[str, Any]] = []
    for kind, arg in _scan(html.unescape(raw)):
        if isinstance(arg, tuple):
            tools.append(_tool_block(*arg))
        elif kind == "sleep":
            delay += float(arg)
        elif kind == "fail":
            fail = fail or int(arg)
        elif kind == "say":
            blocks.append({"type": "text", "text": arg})
        elif kind == "bash":
            tools.append(_tool_block("bash", {"command": arg}))
    if fail:
        etype = ERROR_TYPES.get(fail, "api_error")
        return Reply(status=fail, error_type=etype, error_message=f"fake {fail}", delay=delay)
    if not blocks and not tools:
        lines = (html.unescape(_TAG.sub("", ln)).strip() for ln in reversed(raw.splitlines()))
        blocks.append({"type": "text", "text": "echo: " + next((ln for ln in lines if ln), "")})
    stop = "tool_use" if tools else "end_turn"
    return Reply(tuple(blocks + tools), stop_reason=stop, delay=delay)


def _output_len(content: Sequence[dict[str, Any]]) -> int:
    return sum(len(b.get("text", "")) + len(json.dumps(b.get("input", {}))) for b in content)


class FakeAnthropic:
    """`with FakeAnthropic() as fake:` then point the SDK at `fake.base_url`."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.base_url = ""
        self.cache = PromptCache(clock)  # `clock`: when cached prefixes expire
        self.responder: Responder | None = None
        self._cond = threading.Condition()
        self._requests: list[Recorded] = []
        self._usages: list[dict[str, int]] = []  # of each 200 answer, in order
        self._script: deque[Reply] = deque()
        self._served = Served("fake-anthropic")
        self._delayed: set[asyncio.Task[Any]] = set()  # answers waiting out their delay
        # When set, a request carrying another key is answered 401, as the real API does.
        self.api_key: str | None = None

    @property
    def requests(self) -> list[Recorded]:
        with self._cond:
            return list(self._requests)

    @property
    def usages(self) -> list[dict[str, int]]:
        with self._cond:
            return list(self._usages)

    def script(self, *replies: Reply) -> None:
        with self._cond:
            self._script.extend(replies)

    def reset(self) -> None:
        with self._cond:
            self._script.clear()
            self._requests.clear()
            self._usages.clear()
            self.responder = None
            self.cache.clear()

    def wait_for_requests(self, n: int, timeout: float = 10.0) -> list[Recorded]:
        with self._cond:
            if not self._cond.wait_for(lambda: len(self._requests) >= n, timeout):
                paths = [r.path for r in self._requests]
                raise TimeoutError(
                    f"FakeAnthropic: wanted >= {n} requests within {timeout}s, "
                    f"got {len(paths)}: {paths}"
                )
            return list(self._requests)

    async def await_requests(self, n: int, timeout: float = 10.0) -> list[Recorded]:
        return await asyncio.to_thread(self.wait_for_requests, n, timeout)

    def start(self) -> FakeAnthropic:
        self.base_url = self._served.start(self._app)
        return self

    def stop(self) -> None:
        # A delayed answer whose client hung up is no longer the server's to cancel: cancel
        # it here, or it is left pending when the loop closes.
        self._served.call_soon(lambda: [task.cancel() for task in self._delayed])
        self._served.stop()

    def __enter__(self) -> FakeAnthropic:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/messages", self._messages)
        app.router.add_post("/v1/messages/count_tokens", self._count_tokens)
        app.router.add_route("*", "/{tail:.*}", self._not_found)
        return app

    async def _record(self, request: web.Request) -> dict[str, Any]:
        text = await request.text()
        try:
            parsed = json.loads(text) if text else {}
        except ValueError:
            parsed = None
        body: dict[str, Any] = parsed if isinstance(parsed, dict) else {"_raw": text}
        headers = {k.lower(): v for k, v in request.headers.items()}
        with self._cond:
            self._requests.append(Recorded(request.path, headers, body, time.time()))
            self._cond.notify_all()
        return body

    async def _not_found(self, request: web.Request) -> web.Response:
        await self._record(request)
        msg = f"fake Anthropic: no route {request.method} {request.path}"
        return web.json_response(_error_json("not_found_error", msg), status=404)

    def _refused(self, request: web.Request) -> web.Response | None:
        """401 for a wrong key, with the real API's body; None when the key is fine."""
        key = request.headers.get("x-api-key")
        auth = request.headers.get("authorization", "")
        key = key or (auth[7:] if auth.lower().startswith("bearer ") else None)
        if self.api_key is None or key == self.api_key:
            return None
        error = _error_json("authentication_error", "invalid x-api-key")
        return web.json_response(error, status=401, headers={"request-id": _rid("req_")})

    async def _count_tokens(self, request: web.Request) -> web.Response:
        body = await self._record(request)
        return self._refused(request) or web.json_response(
            {"input_tokens": len(json.dumps(body)) // 4}
        )

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        body = await self._record(request)
        refused = self._refused(request)
        if refused is not None:
            return refused
        with self._cond:
            reply = self._script.popleft() if self._script else None
        try:
            if reply is None:
                reply = (self.responder or directive_reply)(body)
        except Exception as exc:  # surface responder bugs to the test as a 500
            reply = error_reply(500, "api_error", f"fake responder raised {exc!r}")
        if reply.delay > 0:
            task = asyncio.current_task()
            assert task is not None
            self._delayed.add(task)
            try:
                await asyncio.sleep(reply.delay)
            finally:
                self._delayed.discard(task)
        headers = {"request-id": _rid("req_"), **reply.headers}
        if reply.status != 200:
            err = _error_json(reply.error_type, reply.error_message or f"HTTP {reply.status}")
            return web.json_response(err, status=reply.status, headers=headers)
        n_in, n_out = reply.input_tokens, reply.output_tokens
        read = write = 0
        if n_in is None:  # a scripted count is the whole input, the cache left out
            with self._cond:
                cached = self.cache.account(body)
            read, write = cached.read, cached.write
            n_in = max(0, len(json.dumps(body)) // 4 - read - write)
        usage = {
            "input_tokens": n_in,
            "output_tokens": _output_len(reply.content) // 4 + 1 if n_out is None else n_out,
            "cache_creation_input_tokens": write,
            "cache_read_input_tokens": read,
        }
        with self._cond:
            self._usages.append(usage)
        message = {
            "id": _rid("msg_"),
            "type": "message",
            "role": "assistant",
            "model": body.get("model", "claude-fake"),
            "content": list(reply.content),
            "stop_reason": reply.stop_reason,
            "stop_sequence": None,
            "usage": usage,
        }
        if body.get("stream") is True:
            return await self._stream(request, message, reply, headers)
        return web.json_response(message, headers=headers)

    async def _stream(
        self, request: web.Request, message: dict[str, Any], reply: Reply, headers: dict[str, str]
    ) -> web.StreamResponse:
        events = message_events(message)
        if reply.error_event:
            events = [events[0], error_event(reply.error_event, "fake error event")]
        kind = {"content-type": "text/event-stream; charset=utf-8", "cache-control": "no-cache"}
        response = web.StreamResponse(headers={**headers, **kind})
        await response.prepare(request)
        for sent, (name, data) in enumerate(events):
            if sent == reply.cut_after and request.transport is not None:
                request.transport.close()  # no end of the chunked body: a broken reply
                return response
            await response.write(encode(name, data))
        await response.write_eof()
        return response
