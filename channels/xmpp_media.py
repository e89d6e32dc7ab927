"""XMPP file sharing decisions, as pure functions over plain values.

Which shared link (XEP-0066 out-of-band data) may be fetched, what kind of attachment it is
and what it is called, what is left of the body as a caption, and what the prompt says instead.
"""

from __future__ import annotations

import ipaddress
import mimetypes
from dataclasses import dataclass
from pathlib import PurePosixPath
from urllib.parse import unquote, urlsplit

from yarl import URL

from nanoclaw.models import MEDIA_WORD, MediaKind

OOB_NS = "jabber:x:oob"
UPLOAD_NS = "urn:xmpp:http:upload:0"
MAX_LINKS = 8  # out-of-band links taken from one message; more are ignored
MIB = 1024 * 1024

IMAGE_EXT = frozenset({"jpg", "jpeg", "png", "gif", "webp", "heic", "heif", "bmp", "avif"})
# Conversations records voice messages as .m4a (older) or Opus in .oga/.ogg/.opus, and no
# client marks them otherwise: these extensions are taken as voice notes, other audio as audio.
VOICE_EXT = frozenset({"ogg", "oga", "opus", "m4a"})
AUDIO_EXT = frozenset({"mp3", "aac", "flac", "wav", "weba", "amr"})
VIDEO_EXT = frozenset({"mp4", "webm", "mov", "mkv", "m4v", "3gp"})
WORDS = MEDIA_WORD


@dataclass(frozen=True)
class UploadService:
    """An HTTP File Upload (XEP-0363) service as its disco#info describes it."""

    jid: str
    max_size: int | None  # bytes; None when the service names no limit


def media_kind(name: str) -> MediaKind:
    """The attachment kind from the file name's extension (a shared link has nothing else)."""
    ext = name.rsplit(".", 1)[-1].lower() if "." in name else ""
    if ext in VOICE_EXT:
        return "voice"
    if ext in IMAGE_EXT:
        return "image"
    if ext in AUDIO_EXT:
        return "audio"
    if ext in VIDEO_EXT:
        return "video"
    return "file"


def guess_mime(name: str) -> str:
    return mimetypes.guess_type(name)[0] or ""


def name_from_url(url: str) -> str:
    """The last path segment, percent-decoded; the saver sanitises it further."""
    segment = urlsplit(url).path.rstrip("/").rsplit("/", 1)[-1]
    decoded = unquote(segment).replace("\\", "/")
    name = PurePosixPath(decoded).name if decoded.strip("/") else ""
    return name if name.strip(".") else "file"


def caption_of(body: str, urls: tuple[str, ...]) -> str:
    """The body without the lines that are just a shared link (clients repeat it there)."""
    kept = [line for line in body.splitlines() if line.strip() not in urls]
    return "\n".join(kept).strip()


def is_global(address: str) -> bool:
    """A public address: not loopback, private, link-local, reserved (nor mapped to one)."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def url_refusal(
    url: str, own_hosts: frozenset[str], sender_hosts: frozenset[str], allow_http: bool
) -> str | None:
    """Why a link a sender shared must not be fetched, or None when it may be.

    Only the hosts of the account's own server (its domain and upload service) and of the
    sender's server are fetched from; a sender's host must be a public address. Plain http
    only when XMPP_TLS=off (local tests)."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises ValueError on a malformed port)
    except ValueError:
        return "not a valid link"
    schemes = ("https", "http") if allow_http else ("https",)
    if parts.scheme.lower() not in schemes:
        return "only https links are fetched"
    host = (parts.hostname or "").lower().rstrip(".")
    if not host:
        return "the link names no host"
    if parts.username is not None or parts.password is not None:
        return "the link carries credentials"
    if host in own_hosts:
        return None
    if host not in sender_hosts:
        return f"{host} is not the upload service of your XMPP server or of the sender's"
    if is_ip_literal(host) and not is_global(host):
        return f"{host} is a private address"
    return None


def share_prefix(url: str) -> str | None:
    """Pure: where an upload service's files live, from one of its GET URLs: scheme, host,
    port and the first path segment ("https://upload.example.org:5281/file_share/"), as the
    download would request it (dot segments resolved); None when it cannot be said."""
    try:
        parsed = URL(url)
        port = parsed.port
    except ValueError:
        return None
    segments = [s for s in parsed.path.split("/") if s]
    if not parsed.host or port is None or len(segments) < 2 or ".." in segments:
        return None
    return f"{parsed.scheme.lower()}://{parsed.host.lower().rstrip('.')}:{port}/{segments[0]}/"


def own_refusal(url: str, prefixes: frozenset[str]) -> str | None:
    """Why a link to the account's own server must not be fetched: it is not under one of
    its upload service's known places (another port or path of that host: a sender must not
    make the bot fetch whatever else the server, often this very host, serves)."""
    if not prefixes:
        return None  # the places could not be learnt: the host check stands alone
    if share_prefix(url) not in prefixes:
        return "it is on your XMPP server but not where its upload service keeps files"
    return None


def is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def address_refusal(host: str, addresses: list[str]) -> str | None:
    """Why a sender's host must not be connected to after resolving it, or None."""
    if not addresses:
        return f"{host} does not resolve"
    private = [a for a in addresses if not is_global(a)]
    if private:
        return f"{host} resolves to a private address ({private[0]})"
    return None


def same_origin(url: str, other: str) -> bool:
    """A redirect is only followed to the same scheme, host and port."""
    a, b = urlsplit(url), urlsplit(other)
    try:
        return (a.scheme, a.hostname, a.port) == (b.scheme, b.hostname, b.port)
    except ValueError:
        return False


def refused_note(url: str, reason: str) -> str:
    """The line the prompt gets for a link that was not downloaded."""
    kind = media_kind(name_from_url(url))
    return f"[{WORDS[kind]} not downloaded: {url} ({reason})]"


def max_bytes(media_max_mb: float) -> int:
    return int(media_max_mb * MIB)


def upload_refusal(size: int, name: str, service: UploadService) -> str | None:
    """Why a file cannot go through this upload service, or None."""
    if service.max_size is not None and size > service.max_size:
        return (
            f"xmpp: {name} is {size} bytes, over the server's upload limit of "
            f"{service.max_size} bytes ({service.jid})"
        )
    return None


def slot_headers(headers: dict[str, str]) -> dict[str, str]:
    """XEP-0363 allows only these headers on the PUT; others from the service are dropped."""
    allowed = {"authorization", "cookie", "expires"}
    return {k: v.replace("\n", "") for k, v in headers.items() if k.lower() in allowed}
