"""Matrix media both ways: Attachments from m.image/m.file/m.audio/m.video events, fetched from
the media repository (authenticated media of Matrix 1.11, falling back to the older v3 path),
and the upload and event content of a file the bot sends (Matrix 1.10 captions).
"""

from __future__ import annotations

import asyncio
import json
import mimetypes
import re
from collections.abc import AsyncIterator, Callable
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import ClientError
from nio import AsyncClient, UploadResponse

from channels.markdown import to_html
from channels.picture import Picture
from nanoclaw.errors import DeliveryError, MediaRefused
from nanoclaw.models import Attachment, MediaKind

KINDS: dict[str, MediaKind] = {
    "m.image": "image",
    "m.file": "file",
    "m.audio": "audio",
    "m.video": "video",
}
VOICE = "org.matrix.msc3245.voice"  # the flag clients set on a recorded voice message
# The server name is a host (or [IPv6]) with an optional port, the media id an opaque token
# of these characters (spec "Matrix Content URIs"); nothing else may reach a request path.
MXC_RE = re.compile(
    r"^mxc://([A-Za-z0-9.\-]{1,253}|\[[0-9A-Fa-f:.]{2,45}\])(:[0-9]{1,5})?/([A-Za-z0-9_-]{1,255})$"
)
CHUNK = 64 * 1024
CONNECT_TIMEOUT_S = 30
READ_TIMEOUT_S = 60  # between two chunks; the saver bounds the whole download
UPLOAD_TIMEOUT_S = 300
MAX_CAPTION = 6000  # longer captions follow the file as text messages, split like replies
ENCRYPTED = "it is end-to-end encrypted, and this bot has no encryption keys"

Download = Callable[[str], AsyncIterator[bytes]]  # an mxc:// URI to its bytes


class MediaUnavailable(MediaRefused):
    """Why an attachment's bytes cannot be had, in words the prompt can show."""


# inbound


def attachment_of(content: dict[str, Any], download: Download) -> Attachment | None:
    """The Attachment a media event carries (not yet fetched), or None when the event is no
    media event or names no file at all (the text then keeps its placeholder)."""
    msgtype = content.get("msgtype")
    kind = KINDS.get(msgtype) if isinstance(msgtype, str) else None
    url, encrypted = content.get("url"), content.get("file")
    if kind is None or not (isinstance(url, str) or isinstance(encrypted, dict)):
        return None
    if kind == "audio" and VOICE in content:
        kind = "voice"
    info = content.get("info")
    info = info if isinstance(info, dict) else {}
    mime, size = info.get("mimetype"), info.get("size")
    if isinstance(url, str):
        fetch = partial(download, url) if parse_mxc(url) else partial(Refusal, not_mxc(url))
    else:  # `file` instead of `url`: the bytes are ciphertext whose key we cannot have
        fetch = partial(Refusal, ENCRYPTED)
    return Attachment(
        kind=kind,
        name=media_name(content, kind),
        fetch=fetch,
        mime=mime if isinstance(mime, str) else "",
        size=size if type(size) is int and size >= 0 else None,
    )


def media_name(content: dict[str, Any], kind: MediaKind) -> str:
    """`filename` (Matrix 1.10), else the body (older clients put the file name there)."""
    for key in ("filename", "body"):
        value = content.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return kind


def parse_mxc(uri: str) -> tuple[str, str] | None:
    """('server[:port]', 'media id') of an mxc:// URI, or None for anything else."""
    m = MXC_RE.match(uri)
    return (m[1] + (m[2] or ""), m[3]) if m else None


def not_mxc(uri: str) -> str:
    scheme = uri.split(":", 1)[0][:20] if ":" in uri else ""
    what = f"a {scheme}: link" if scheme else "not a link"
    return f"its address is {what}, and only mxc:// media is fetched"


class Refusal:
    """The fetch of an attachment that must not be fetched: it raises on the first read."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def __aiter__(self) -> Refusal:
        return self

    async def __anext__(self) -> bytes:
        raise MediaUnavailable(self.reason)

    async def aclose(self) -> None:
        return None


async def download(homeserver: str, token: str, uri: str) -> AsyncIterator[bytes]:
    """The bytes of an mxc:// URI as the homeserver streams them: the authenticated endpoint
    first, the unauthenticated v3 one only when the server does not know v1 at all."""
    parsed = parse_mxc(uri)
    if parsed is None:
        raise MediaUnavailable(not_mxc(uri))
    path = f"{parsed[0]}/{parsed[1]}"
    base = homeserver.rstrip("/")
    timeout = aiohttp.ClientTimeout(sock_connect=CONNECT_TIMEOUT_S, sock_read=READ_TIMEOUT_S)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as session:
            # No redirects: the token must not follow the request to another host.
            auth = {"Authorization": f"Bearer {token}"}
            v1 = f"{base}/_matrix/client/v1/media/download/{path}"
            async with session.get(v1, headers=auth, allow_redirects=False) as resp:
                if resp.status == 200:
                    async for chunk in resp.content.iter_chunked(CHUNK):
                        yield chunk
                    return
                errcode, why = await _error(resp)
                if errcode != "M_UNRECOGNIZED" or resp.status not in (400, 404, 405):
                    raise MediaUnavailable(why)
            v3 = f"{base}/_matrix/media/v3/download/{path}"
            async with session.get(v3, allow_redirects=False) as resp:
                if resp.status != 200:
                    raise MediaUnavailable((await _error(resp))[1])
                async for chunk in resp.content.iter_chunked(CHUNK):
                    yield chunk
    except ClientError as exc:
        raise MediaUnavailable(f"the download failed ({exc or type(exc).__name__})") from exc


async def _error(resp: aiohttp.ClientResponse) -> tuple[str, str]:
    """The Matrix errcode of a refusal, and the refusal in words."""
    try:
        body = json.loads(await resp.content.read(4096))
        errcode = str(body.get("errcode", "")) if isinstance(body, dict) else ""
    except ValueError:
        errcode = ""
    return errcode, f"the homeserver answered {resp.status} {errcode}".rstrip()


# outbound


def mimetype_of(name: str, picture: Picture | None) -> str:
    """The content's type as Pillow reads it, else as the name says."""
    if picture is not None and picture.mime:
        return picture.mime
    return mimetypes.guess_type(name)[0] or "application/octet-stream"


def file_content(
    url: str, name: str, size: int, caption: str, picture: Picture | None
) -> dict[str, Any]:
    """Pure: the event for an uploaded file. An image goes as m.image (with its size in pixels
    when Pillow read it), audio as m.audio, video as m.video, the rest as m.file; a caption is
    the body beside `filename` (Matrix 1.10), so it travels in the same event."""
    mimetype = mimetype_of(name, picture)
    major = mimetype.split("/", 1)[0]
    msgtype = "m.image" if picture is not None or major == "image" else "m.file"
    msgtype = {"audio": "m.audio", "video": "m.video"}.get(major, msgtype)
    info: dict[str, Any] = {"size": size, "mimetype": mimetype}
    if picture is not None:
        info.update(w=picture.width, h=picture.height)
    content: dict[str, Any] = {
        "msgtype": msgtype,
        "body": name,
        "filename": name,
        "url": url,
        "info": info,
        "m.mentions": {},
    }
    if caption_fits(caption):
        content["body"] = caption
        content.update(format="org.matrix.custom.html", formatted_body=to_html(caption))
    return content


def caption_fits(caption: str) -> bool:
    return bool(caption.strip()) and len(caption) <= MAX_CAPTION


class Uploads:
    """Files uploaded under an idempotency key (the last 100): a retry reuses the upload."""

    def __init__(self, refused: Callable[[object], DeliveryError]) -> None:
        self._refused = refused  # the channel's mapping of a homeserver's refusal
        self._urls: dict[str, str] = {}  # idempotency key -> mxc:// URL

    async def url(
        self, client: AsyncClient, path: Path, name: str, mimetype: str, size: int, key: str
    ) -> str:
        """The file's mxc:// URL; nio reads the file lazily, in a thread."""
        if key and key in self._urls:
            return self._urls[key]
        try:
            async with asyncio.timeout(UPLOAD_TIMEOUT_S):  # nio's upload has no timeout
                resp, _ = await client.upload(
                    lambda *_: path, content_type=mimetype, filename=name, filesize=size
                )
        except (ClientError, TimeoutError, OSError) as exc:
            raise DeliveryError(f"matrix upload failed: {exc}") from exc
        if not isinstance(resp, UploadResponse):
            raise self._refused(resp)
        url = str(resp.content_uri)
        if key:
            self._urls[key] = url
            while len(self._urls) > 100:
                del self._urls[next(iter(self._urls))]
        return url
