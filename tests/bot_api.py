"""The Bot API's wire format as tests/fake_telegram.py sees it, in plain types and functions.

Owns the records of calls (Sent, Edit, Document, Rejected, Action), the message builders' options,
Telegram's HTML check, the error bodies, and the decoding of form fields (aiogram's
JSON-encoded values and multipart file parts).
"""

from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass, field
from typing import Any, Literal, TypedDict

from aiohttp import web

_STYLES = {"b", "strong", "i", "em", "u", "ins", "s", "strike", "del", "code", "pre"}
_ALLOWED = _STYLES | {"a", "tg-spoiler", "blockquote", "span"}
_ATTR = re.compile(r"""\s+([\w-]+)(?:\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>"']+)))?""")
_ATTRS = r"""(?:\s+[\w-]+(?:\s*=\s*(?:"[^"]*"|'[^']*'|[^\s>"']+))?)*"""
_TAG = re.compile(rf"<(/?)([A-Za-z][\w-]*)({_ATTRS})\s*>")
_ENTITY = re.compile(r"&(?:lt|gt|amp|quot|#\d+|#x[0-9A-Fa-f]+);")
STR_KEYS = frozenset({"text", "caption", "parse_mode", "action", "url", "emoji"})
Msg = dict[str, Any]
Params = dict[str, Any]
MAX_TEXT = 4096
MAX_CAPTION = 1024  # UTF-16 units, as Telegram counts them


@dataclass(frozen=True)
class Sent:
    chat_id: int | str
    text: str  # as sent
    parse_mode: str | None
    message_thread_id: int | None
    reply_to_message_id: int | None  # reply_parameters.message_id or reply_to_message_id
    visible: str  # what the user sees: tags stripped and entities unescaped for HTML
    message_id: int
    params: dict[str, Any] = field(default_factory=dict, compare=False)  # all parameters


@dataclass(frozen=True)
class Edit:
    """One editMessageText the fake accepted."""

    chat_id: int | str
    message_id: int
    visible: str


@dataclass(frozen=True)
class Document:
    """One sendDocument upload as the fake received it."""

    chat_id: int | str
    filename: str
    data: bytes
    mime_type: str
    caption: str  # as sent ("" when none)
    parse_mode: str | None
    visible: str  # the caption as the user sees it
    message_thread_id: int | None
    message_id: int
    params: dict[str, Any] = field(default_factory=dict, compare=False)  # all parameters


@dataclass(frozen=True)
class Rejected:
    chat_id: Any
    text: str
    parse_mode: str | None
    description: str


@dataclass(frozen=True)
class Action:
    chat_id: int | str
    action: str
    message_thread_id: int | None


class MsgOpts(TypedDict, total=False):
    user_id: int  # 111
    first_name: str  # "Alice"
    username: str | None
    chat_type: Literal["private", "group", "supergroup"]  # "group"
    chat_title: str  # "Team"
    message_id: int | None  # auto-increment
    date: int | None  # now
    reply_to: Msg | None  # the quoted message
    thread_id: int | None  # forum topic
    entities: list[dict[str, Any]] | None
    caption: str | None  # media only


class ApiError(Exception):
    def __init__(self, status: int, description: str, retry_after: int | None = None) -> None:
        super().__init__(description)
        self.status, self.retry_after = status, retry_after

    def response(self) -> web.Response:
        body: dict[str, Any] = {"ok": False, "error_code": self.status, "description": str(self)}
        if self.retry_after is not None:
            body["parameters"] = {"retry_after": self.retry_after}
        return web.json_response(body, status=self.status)


def bad(what: str) -> ApiError:
    return ApiError(400, f"Bad Request: {what}")


def _unparsable(what: str, text: str, pos: int) -> ApiError:
    return bad(f"can't parse entities: {what} at byte offset {len(text[:pos].encode())}")


def check_html(text: str) -> str:
    """Telegram's HTML parse mode, simplified: the visible text, or ApiError(400)."""
    out: list[str] = []
    stack: list[str] = []
    pos = 0
    while pos < len(text):
        ch = text[pos]
        if ch == "<":
            m = _TAG.match(text, pos)
            name = m.group(2).lower() if m else ""
            if m is None or name not in _ALLOWED:
                raise _unparsable(f'Unsupported start tag "{name}"', text, pos)
            attrs = {a[1].lower(): a[2] or a[3] or a[4] or "" for a in _ATTR.finditer(m[3])}
            if m.group(1) and not stack:
                raise _unparsable("Unexpected end tag", text, pos)
            if m.group(1) and stack[-1] != name:
                what = f'Unmatched end tag, expected "</{stack[-1]}>", found "</{name}>"'
                raise _unparsable(what, text, pos)
            if m.group(1):
                stack.pop()
            elif name == "a" and "href" not in attrs:
                raise _unparsable('Tag "a" must have attribute "href"', text, pos)
            elif name == "span" and attrs.get("class") != "tg-spoiler":
                raise _unparsable('Tag "span" must have class "tg-spoiler"', text, pos)
            else:
                stack.append(name)
            pos = m.end()
        elif ch == "&" and (e := _ENTITY.match(text, pos)):
            out.append(html.unescape(e.group()))
            pos = e.end()
        elif ch in "&>":
            raise _unparsable(f"Unescaped {ch!r}", text, pos)
        else:
            out.append(ch)
            pos += 1
    if stack:
        raise _unparsable(f'Can\'t find end tag corresponding to start tag "{stack[-1]}"', text, 0)
    return "".join(out)


def coerce(key: str, value: Any) -> Any:
    """Form fields are strings; aiogram JSON-encodes numbers, booleans and nested objects."""
    if not isinstance(value, str) or key in STR_KEYS:
        return value
    try:
        return json.loads(value)
    except ValueError:
        return value


def as_int(value: Any) -> int | None:
    ok = isinstance(value, int | str) and str(value).lstrip("-").isdigit()
    return int(value) if ok else None


@dataclass(frozen=True)
class Upload:
    """A file part of a multipart request: what the client uploaded."""

    filename: str
    content_type: str
    data: bytes


def form_value(key: str, value: Any) -> Any:
    """A multipart or urlencoded field: file parts as Upload, the rest as `coerce` reads them."""
    if isinstance(value, web.FileField):
        return Upload(value.filename, value.content_type, value.file.read())
    return coerce(key, value)


def attached(params: Params) -> Params:
    """Parameters with "attach://<part>" replaced by that part's Upload, as aiogram sends files."""
    out = dict(params)
    for key, value in params.items():
        if isinstance(value, str) and value.startswith("attach://"):
            part = params.get(value.removeprefix("attach://"))
            out[key] = part if isinstance(part, Upload) else value
    return out


def _visible(text: str, mode: Any) -> str:
    return check_html(text) if str(mode).upper() == "HTML" else text


def _check_chat(chat_id: Any) -> None:
    if not isinstance(chat_id, int | str) or chat_id == "":
        raise bad("chat not found")


def check_message(params: Params) -> str:
    """sendMessage's checks: the text as the user will see it, or ApiError(400)."""
    _check_chat(params.get("chat_id"))
    text = str(params.get("text", ""))
    if not text.strip():
        raise bad("message text is empty")
    visible = _visible(text, params.get("parse_mode"))
    if len(visible) > MAX_TEXT:
        raise bad("message is too long")
    return visible


def check_document(params: Params) -> tuple[Upload, str]:
    """sendDocument's checks: the uploaded file and the visible caption, or ApiError(400)."""
    _check_chat(params.get("chat_id"))
    upload = params.get("document")
    if not isinstance(upload, Upload):  # a file_id or URL: the fake keeps no files to resend
        raise bad("wrong file identifier/HTTP URL specified")
    if not upload.data:
        raise bad("file must be non-empty")
    visible = _visible(str(params.get("caption") or ""), params.get("parse_mode"))
    if len(visible.encode("utf-16-le")) // 2 > MAX_CAPTION:
        raise bad("message caption is too long")
    return upload, visible
