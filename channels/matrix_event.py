"""Matrix room events to nanoclaw's normalised form, as pure functions over event JSON.

Reads the raw event (`event.source`), so it does not depend on matrix-nio's classes: the
body (a media event's caption, with a placeholder for the media only when the channel could
not make it an Attachment), the reply fallback split off, and the mention signals.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

from nanoclaw.models import Attachment, InboundMessage

# origin_server_ts is whatever a (federated, maybe hostile) server claims: keep 0 (unknown)
# unless it is a time the store and the prompt can hold (up to the end of year 9999).
MAX_TS_MS = 253_402_300_799_999

PLACEHOLDERS = {
    "m.image": "[Image{name}]",
    "m.file": "[File{name}]",
    "m.audio": "[Audio{name}]",
    "m.video": "[Video{name}]",
    "m.location": "[Location]",
}


def content_of(event: dict[str, Any]) -> dict[str, Any]:
    content = event.get("content")
    return content if isinstance(content, dict) else {}


def body_of(content: dict[str, Any], sender_name: str) -> str | None:
    """The text the agent sees; None for what it must not see (notices from other bots)."""
    msgtype = content.get("msgtype")
    if msgtype is not None and not isinstance(msgtype, str):
        return None  # any JSON may stand here; a list would not even hash
    body = content.get("body")
    body = body if isinstance(body, str) else ""
    if msgtype in ("m.text", None):
        return body
    if msgtype == "m.emote":
        return f"* {sender_name} {body}"
    if msgtype in PLACEHOLDERS:
        filename = content.get("filename")
        if isinstance(filename, str) and filename and body and body != filename:
            # Matrix 1.10: with a filename beside it, the body is a caption; it comes first,
            # so a trigger word opens a caption as it opens a text message
            return f"{body} {PLACEHOLDERS[msgtype].format(name=f': {filename}')}"
        name = f": {body}" if body and msgtype != "m.location" else ""
        return PLACEHOLDERS[msgtype].format(name=name)
    return None  # m.notice (by convention, bots do not answer bots) and unknown types


def caption_of(content: dict[str, Any]) -> str:
    """A media event's caption: its body when a different `filename` stands beside it (Matrix
    1.10); otherwise the body is the file's name and there is no caption."""
    body, filename = content.get("body"), content.get("filename")
    if isinstance(body, str) and isinstance(filename, str) and filename and body != filename:
        return body
    return ""


def split_reply_fallback(body: str) -> tuple[str, str, str]:
    """('@bob:hs', 'quoted text', 'own text') from a body with the "> <@bob:hs> ..." fallback."""
    lines = body.split("\n")
    quoted: list[str] = []
    while lines and lines[0].startswith(">"):
        quoted.append(lines.pop(0)[1:].lstrip())
    if not quoted:
        return "", "", body
    if lines and not lines[0].strip():
        lines.pop(0)
    sender = ""
    first = quoted[0]
    if first.startswith("<") and ">" in first:
        sender, first = first[1 : first.index(">")], first[first.index(">") + 1 :].lstrip()
        quoted[0] = first
    return sender, "\n".join(quoted).strip(), "\n".join(lines)


def reply_target(content: dict[str, Any]) -> str | None:
    if not isinstance(content, dict):  # the channel passes the raw event's content
        return None
    relates = content.get("m.relates_to")
    if not isinstance(relates, dict):
        return None
    reply = relates.get("m.in_reply_to")
    event_id = reply.get("event_id") if isinstance(reply, dict) else None
    return event_id if isinstance(event_id, str) else None


def mentions_me(content: dict[str, Any], me: str) -> bool:
    """An intentional mention (`m.mentions`), or a pill linking to us in the HTML body."""
    mentions = content.get("m.mentions")
    if isinstance(mentions, dict):
        ids = mentions.get("user_ids")
        if isinstance(ids, list) and me in ids:
            return True
    html = content.get("formatted_body")
    return isinstance(html, str) and f"matrix.to/#/{me}" in unquote(html)


def normalise(
    event: dict[str, Any],
    room_id: str,
    me: str,
    *,
    sender_name: str,
    room_name: str,
    is_group: bool,
    replied_to_sender: str | None = None,
    attachments: tuple[Attachment, ...] = (),
) -> InboundMessage | None:
    """None for events that must not reach the store (ours, notices, non-messages).
    With `attachments` (the media the channel made of the event), the text is the caption."""
    sender = event.get("sender")
    event_id = event.get("event_id")
    if event.get("type") != "m.room.message" or sender == me:
        return None
    if not isinstance(sender, str) or not isinstance(event_id, str):
        return None
    content = content_of(event)
    body = caption_of(content) if attachments else (body_of(content, sender_name) or "")
    if not body and not attachments:
        return None
    quoted_sender, quoted, text = split_reply_fallback(body)
    if not reply_target(content):
        quoted_sender, quoted, text = "", "", body
    ts = event.get("origin_server_ts")
    return InboundMessage(
        chat_id=_text(f"mx:{room_id}"),
        platform_id=_text(event_id),
        sender_id=_text(f"mx:{sender}"),
        sender_name=_text(sender_name),
        text=_text(text or body),
        ts_ms=ts if type(ts) is int and 0 <= ts <= MAX_TS_MS else 0,
        chat_name=_text(room_name),
        is_group_chat=is_group,
        mentions_bot=mentions_me(content, me),
        reply_to_bot=replied_to_sender == me,
        reply_to_sender=_text(quoted_sender or (replied_to_sender or "")),
        reply_to_text=_text(quoted),
        attachments=attachments,
    )


def _text(value: str) -> str:
    """A JSON "\\ud800" escape decodes to a lone surrogate, which SQLite cannot store."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return value.encode("utf-8", "replace").decode("utf-8")
    return value
