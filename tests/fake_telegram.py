"""Fake Telegram Bot API server (POST /bot<token>/<method>) for tests, on the real wire format.
Owns the aiohttp server thread, pending updates with long polling (the updates are built
by `telegram_updates.UpdateBuilder`),
recording of sendMessage / editMessageText / sendDocument (multipart uploads; HTML checks
from bot_api) / sendChatAction, fault injection; getFile and downloads in `telegram_files`."""

from __future__ import annotations

import asyncio
import mimetypes
import threading
import time
from collections import deque
from collections.abc import Callable
from http import HTTPStatus
from typing import Any, TypeVar

from aiohttp import web
from bot_api import (
    Action,
    ApiError,
    Document,
    Edit,
    Msg,
    Params,
    Rejected,
    Sent,
    as_int,
    attached,
    check_document,
    check_message,
    form_value,
)
from bot_api import check_html as check_html  # re-exported for the tests
from served import Served
from telegram_files import FileServer
from telegram_updates import UpdateBuilder

T = TypeVar("T")
MAX_UPLOAD = 50 * 1024 * 1024  # the Bot API's limit for files bots upload
_WEBHOOK_INFO = {"url": "", "has_custom_certificate": False, "pending_update_count": 0}
_TRIVIAL: dict[str, Any] = {"setwebhook": True, "getwebhookinfo": _WEBHOOK_INFO}


class FakeTelegram(UpdateBuilder, FileServer):
    """`with FakeTelegram() as fake:` then `TelegramAPIServer.from_base(fake.base_url)`."""

    def __init__(self, token: str = "123456:TEST-token", *, username: str = "andy_bot") -> None:
        self.token, self.base_url = token, ""
        self.bot_user: Msg = {"id": 999000, "is_bot": True, "first_name": "Andy"}
        self.bot_user["username"] = username  # edit bot_user for another identity
        self._cond = threading.Condition()
        self._pending: list[dict[str, Any]] = []
        self._sent: list[Sent] = []
        self._edits: list[Edit] = []
        self._texts: dict[tuple[Any, int], str] = {}  # (chat, message id) -> what the bot sent
        self._documents: list[Document] = []
        self._rejected: list[Rejected] = []
        self._actions: list[Action] = []
        self._offsets: list[int | None] = []
        self._calls: list[tuple[str, dict[str, Any]]] = []
        self._faults: dict[str, deque[ApiError]] = {}
        self._chats: dict[Any, Msg] = {}
        self._files: dict[str, tuple[str, bytes, int]] = {}  # file_id -> (path, bytes, size)
        self._downloads: list[str] = []  # file paths fetched, in order
        self._next_update = self._next_message = 1
        self._wake: asyncio.Event | None = None
        self._closing = False
        self._served = Served("fake-telegram")

    # --- recorded state: thread-safe copies ---
    def _copy(self, items: list[Any]) -> list[Any]:
        with self._cond:
            return list(items)

    @property
    def sent(self) -> list[Sent]:
        return self._copy(self._sent)

    @property
    def edits(self) -> list[Edit]:
        return self._copy(self._edits)

    @property
    def documents(self) -> list[Document]:
        return self._copy(self._documents)

    @property
    def rejected(self) -> list[Rejected]:
        return self._copy(self._rejected)

    @property
    def actions(self) -> list[Action]:
        return self._copy(self._actions)

    @property
    def get_updates_offsets(self) -> list[int | None]:
        return self._copy(self._offsets)

    @property
    def calls(self) -> list[tuple[str, dict[str, Any]]]:
        """Every call with the right token as (lower-cased method, params), failed ones too."""
        return self._copy(self._calls)

    @property
    def pending(self) -> list[dict[str, Any]]:
        """Updates not yet confirmed by a getUpdates offset."""
        return self._copy(self._pending)

    def wait_until(
        self, predicate: Callable[[], bool], timeout: float = 10.0, what: str = ""
    ) -> None:
        """Block until predicate() (run under the lock) holds, else TimeoutError."""
        with self._cond:
            if not self._cond.wait_for(predicate, timeout):
                raise TimeoutError(f"FakeTelegram: no {what or 'success'} within {timeout}s")

    def wait_for_sent(self, n: int, timeout: float = 10.0) -> list[Sent]:
        what = f">= {n} sent messages (have {len(self._sent)}, rejected {self._rejected})"
        self.wait_until(lambda: len(self._sent) >= n, timeout, what)
        return self.sent

    async def await_sent(self, n: int, timeout: float = 10.0) -> list[Sent]:
        return await asyncio.to_thread(self.wait_for_sent, n, timeout)

    def wait_for_documents(self, n: int, timeout: float = 10.0) -> list[Document]:
        what = f">= {n} documents (have {len(self._documents)}, rejected {self._rejected})"
        self.wait_until(lambda: len(self._documents) >= n, timeout, what)
        return self.documents

    async def await_documents(self, n: int, timeout: float = 10.0) -> list[Document]:
        return await asyncio.to_thread(self.wait_for_documents, n, timeout)

    def wait_for_actions(self, n: int, timeout: float = 10.0) -> list[Action]:
        self.wait_until(lambda: len(self._actions) >= n, timeout, f">= {n} chat actions")
        return self.actions

    def fail_next(
        self,
        method: str,
        status: int,
        *,
        retry_after: int | None = None,
        description: str | None = None,
        times: int = 1,
    ) -> None:
        """The next `times` calls of `method` (any case) answer with this Bot API error."""
        if status == 429:
            retry_after = 1 if retry_after is None else retry_after
            description = description or f"Too Many Requests: retry after {retry_after}"
        err = ApiError(status, description or HTTPStatus(status).phrase, retry_after)
        with self._cond:
            self._faults.setdefault(method.lower(), deque()).extend([err] * times)

    # --- updates and their builders ---
    def push_update(self, update: dict[str, Any]) -> int:
        """Queue an update (a bare message is wrapped, update_id assigned if missing)."""
        update = {"message": update} if "message_id" in update else update
        with self._cond:
            uid = int(update.setdefault("update_id", self._next_update))
            self._next_update = max(self._next_update, uid + 1)
            self._pending.append(update)
            self._cond.notify_all()
        self._served.call_soon(self._notify)
        return uid

    def _notify(self) -> None:  # on the server loop: wake every long poll
        if self._wake is not None:
            self._wake.set()
        self._wake = asyncio.Event()

    # --- lifecycle ---
    def start(self) -> FakeTelegram:
        self._closing = False
        self.base_url = self._served.start(self._app)
        return self

    def stop(self) -> None:
        self._closing = True
        self._served.call_soon(self._notify)  # long polls answer [] at once
        self._served.stop()

    def __enter__(self) -> FakeTelegram:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _app(self) -> web.Application:
        self._wake = asyncio.Event()  # made on the server's loop, where it is awaited
        app = web.Application(client_max_size=MAX_UPLOAD + 1024 * 1024)  # file + other fields
        app.router.add_route("*", "/bot{token}/{method}", self._handle)
        app.router.add_get("/file/bot{token}/{path:.*}", self._download)
        app.router.add_route("*", "/{tail:.*}", self._not_found)
        return app

    # --- HTTP ---
    async def _not_found(self, request: web.Request) -> web.Response:
        return ApiError(404, "Not Found").response()

    async def _handle(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            return ApiError(401, "Unauthorized").response()
        method = request.match_info["method"].lower()
        params = {k: form_value(k, v) for k, v in request.query.items()}
        if request.content_type == "application/json":
            body = await request.json()
            params.update(body if isinstance(body, dict) else {})
        else:  # aiogram: urlencoded form, or multipart/form-data when uploading files
            try:
                form = await request.post()
            except web.HTTPRequestEntityTooLarge:
                return ApiError(413, "Request Entity Too Large").response()
            params = attached({**params, **{k: form_value(k, v) for k, v in form.items()}})
        with self._cond:
            self._calls.append((method, params))
            faults = self._faults.get(method)
            fault = faults.popleft() if faults else None
            self._cond.notify_all()
        handler = getattr(self, f"_m_{method}", None)
        try:
            if fault is not None:
                raise fault
            if method in _TRIVIAL:  # setWebhook, getWebhookInfo
                result = _TRIVIAL[method]
            elif handler is None:
                raise ApiError(404, "Not Found: method not found")
            else:
                result = await handler(params)
            return web.json_response({"ok": True, "result": result})
        except ApiError as err:
            return err.response()

    async def _m_deletewebhook(self, params: dict[str, Any]) -> Any:
        if params.get("drop_pending_updates") is True:
            with self._cond:
                self._pending.clear()
        return True

    async def _m_getme(self, params: dict[str, Any]) -> Any:
        return self.bot_user

    async def _m_getupdates(self, params: dict[str, Any]) -> Any:
        offset = as_int(params.get("offset"))
        limit = min(max(as_int(params.get("limit")) or 100, 1), 100)
        deadline = time.monotonic() + float(params.get("timeout") or 0)
        with self._cond:
            self._offsets.append(offset)
            if offset is not None:  # confirm: forget everything before offset (or keep last -n)
                keep = self._pending[offset:] if offset < 0 else self._pending
                self._pending = [u for u in keep if offset < 0 or u["update_id"] >= offset]
            self._cond.notify_all()
        while True:
            with self._cond:
                batch = self._pending[:limit]
            wake, left = self._wake, deadline - time.monotonic()
            if batch or left <= 0 or wake is None or self._closing:
                return batch
            try:
                await asyncio.wait_for(wake.wait(), left)
            except TimeoutError:
                return []

    def _chat(self, chat_id: Any) -> Msg:
        with self._cond:
            if chat_id in self._chats:
                return self._chats[chat_id]
        if isinstance(chat_id, int) and chat_id > 0:
            return {"id": chat_id, "type": "private", "first_name": "Alice"}
        return {"id": chat_id, "type": "supergroup", "title": "Team"}

    def _checked(self, check: Callable[[Params], T], params: Params, text_key: str) -> T:
        """`check(params)`; a refusal is recorded in `rejected` before it is answered."""
        try:
            return check(params)
        except ApiError as err:
            text, mode = str(params.get(text_key) or ""), params.get("parse_mode")
            with self._cond:
                self._rejected.append(Rejected(params.get("chat_id"), text, mode, str(err)))
                self._cond.notify_all()
            raise

    def _outgoing(self, chat_id: Any, thread: int | None, content: Msg) -> Msg:
        """A message from the bot, as the Bot API answers a send* method."""
        msg: Msg = {"message_id": self._message_id(), "from": self.bot_user}
        msg.update(chat=self._chat(chat_id), date=int(time.time()), **content)
        if thread is not None:
            msg["message_thread_id"], msg["is_topic_message"] = thread, True
        return msg

    async def _m_sendmessage(self, params: Params) -> Any:
        visible = self._checked(check_message, params, "text")
        chat_id, text = params["chat_id"], str(params["text"])
        thread, rp = as_int(params.get("message_thread_id")), params.get("reply_parameters")
        reply_to = as_int(rp.get("message_id")) if isinstance(rp, dict) else None
        reply_to = reply_to or as_int(params.get("reply_to_message_id"))
        msg = self._outgoing(chat_id, thread, {"text": visible})
        sent = Sent(
            chat_id,
            text,
            params.get("parse_mode"),
            thread,
            reply_to,
            visible,
            msg["message_id"],
            params,
        )
        with self._cond:
            self._sent.append(sent)
            self._texts[(chat_id, msg["message_id"])] = visible
            self._cond.notify_all()
        return msg

    async def _m_editmessagetext(self, params: Params) -> Any:
        """Only the bot's own text messages; the same text again is refused, as Telegram does."""
        visible = self._checked(check_message, params, "text")
        key = (params["chat_id"], as_int(params.get("message_id")) or 0)
        with self._cond:
            if key not in self._texts:
                raise ApiError(400, "Bad Request: message to edit not found")
            if self._texts[key] == visible:
                raise ApiError(400, "Bad Request: message is not modified")
            self._texts[key] = visible
            self._edits.append(Edit(key[0], key[1], visible))
            self._cond.notify_all()
        msg = self._outgoing(key[0], None, {"text": visible, "edit_date": int(time.time())})
        return {**msg, "message_id": key[1]}

    async def _m_senddocument(self, params: Params) -> Any:
        upload, visible = self._checked(check_document, params, "caption")
        chat_id, thread = params["chat_id"], as_int(params.get("message_thread_id"))
        mime = mimetypes.guess_type(upload.filename)[0] or "application/octet-stream"
        file = self._file(file_name=upload.filename, mime_type=mime, file_size=len(upload.data))
        msg = self._outgoing(chat_id, thread, {"document": file})
        if visible:
            msg["caption"] = visible
        document = Document(
            chat_id,
            upload.filename,
            upload.data,
            mime,
            str(params.get("caption") or ""),
            params.get("parse_mode"),
            visible,
            thread,
            msg["message_id"],
            params,
        )
        with self._cond:
            self._documents.append(document)
            self._cond.notify_all()
        return msg

    async def _m_sendchataction(self, params: dict[str, Any]) -> Any:
        chat_id, thread = params.get("chat_id", ""), as_int(params.get("message_thread_id"))
        with self._cond:
            self._actions.append(Action(chat_id, str(params.get("action", "")), thread))
            self._cond.notify_all()
        return True
