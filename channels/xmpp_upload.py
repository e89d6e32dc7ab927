"""XMPP file sharing I/O: finding a server's HTTP File Upload service (XEP-0363), uploading a
file through a slot, and downloading a shared link with the host pinned to the addresses that
were checked (channels/xmpp_media.py decides which links may be fetched at all)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from slixmpp import JID, ClientXMPP
from slixmpp.exceptions import IqError, IqTimeout
from slixmpp.plugins.xep_0004 import Form

from channels.xmpp_media import (
    UPLOAD_NS,
    UploadService,
    address_refusal,
    is_ip_literal,
    same_origin,
    slot_headers,
)
from nanoclaw.errors import DeliveryError, MediaRefused, PermanentDeliveryError

CONNECT_TIMEOUT_S = 15.0
READ_TIMEOUT_S = 30.0  # between two reads of a download or an upload
DOWNLOAD_TIMEOUT_S = 600.0
UPLOAD_TIMEOUT_S = 600.0
SLOT_TIMEOUT_S = 20.0
MAX_REDIRECTS = 3
CHUNK = 64 * 1024
# A slot request refused for these reasons will be refused again: no retry.
PERMANENT_SLOT_ERRORS = frozenset(
    {"not-acceptable", "forbidden", "bad-request", "not-allowed", "policy-violation"}
)


class FetchFailed(MediaRefused):
    """A shared link was not downloaded; the message says why, for the prompt."""


def _max_size(disco_info: Any) -> int | None:
    for form in disco_info.iterables:
        if not isinstance(form, Form):
            continue
        values = form["values"]
        form_type = values.get("FORM_TYPE")
        if UPLOAD_NS not in (form_type if isinstance(form_type, list) else [form_type]):
            continue
        try:
            return int(values.get("max-file-size"))
        except (TypeError, ValueError):
            return None
    return None


async def discover(client: ClientXMPP, domain: str, timeout: float) -> list[UploadService]:
    """The upload services on `domain` and one disco#items level below it.

    Raises IqError/IqTimeout when the domain does not answer."""
    disco = client.plugin["xep_0030"]
    infos = await disco.get_info_from_domain(  # type: ignore[no-untyped-call]
        domain=JID(domain), timeout=timeout, cached=False
    )
    found = []
    for info in infos:
        if not info.get_plugin("disco_info", check=True):
            continue
        if UPLOAD_NS in info["disco_info"]["features"]:
            jid = str(info["from"]).split("/", 1)[0].lower()
            found.append(UploadService(jid=jid, max_size=_max_size(info["disco_info"])))
    return found


class _PinnedResolver(AbstractResolver):
    """Answers only for the checked host, with the addresses that were checked."""

    def __init__(self, host: str, results: list[ResolveResult]) -> None:
        self._host, self._results = host, results

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if host.lower().rstrip(".") != self._host:
            raise FetchFailed(f"{host} was not checked")
        return [r for r in self._results if family == socket.AF_UNSPEC or r["family"] == family]

    async def close(self) -> None:
        return None


async def _pin(host: str, port: int) -> _PinnedResolver:
    """Resolve once, refuse private addresses, and connect to exactly those addresses."""
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT_S):
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, TimeoutError) as exc:
        raise FetchFailed(f"{host} does not resolve ({exc})") from exc
    refusal = address_refusal(host, [str(i[4][0]) for i in infos])
    if refusal is not None:
        raise FetchFailed(refusal)
    flags = socket.AI_NUMERICHOST | socket.AI_NUMERICSERV
    results = [
        ResolveResult(
            hostname=host, host=str(i[4][0]), port=port, family=i[0], proto=i[2], flags=flags
        )
        for i in infos
    ]
    return _PinnedResolver(host, results)


async def download(url: str, *, private_ok: bool, limit: int) -> AsyncIterator[bytes]:
    """The body of `url`, at most `limit` bytes; redirects only to the same origin.

    private_ok: the host is the account's own server's, which may well be on a LAN; any
    other host must resolve to public addresses only, and is connected to at exactly those."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower().rstrip(".")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    resolver: AbstractResolver | None = None
    if not private_ok and not is_ip_literal(host):  # literals were checked by url_refusal
        resolver = await _pin(host, port)
    connector = aiohttp.TCPConnector(resolver=resolver, use_dns_cache=False, limit=1)
    timeout = aiohttp.ClientTimeout(
        total=DOWNLOAD_TIMEOUT_S, sock_connect=CONNECT_TIMEOUT_S, sock_read=READ_TIMEOUT_S
    )
    jar = aiohttp.DummyCookieJar()
    try:
        async with aiohttp.ClientSession(connector=connector, timeout=timeout, cookie_jar=jar) as s:
            for _ in range(MAX_REDIRECTS + 1):
                async with s.get(url, allow_redirects=False) as resp:
                    if resp.status in (301, 302, 303, 307, 308):
                        target = urljoin(url, resp.headers.get("Location", ""))
                        if not same_origin(url, target):
                            raise FetchFailed(
                                f"redirected to another host ({target}): not followed"
                            )
                        url = target
                        continue
                    if resp.status != 200:
                        raise FetchFailed(f"the server answered HTTP {resp.status}")
                    left = limit
                    async for chunk in resp.content.iter_chunked(CHUNK):
                        piece = chunk[:left]
                        left -= len(piece)
                        yield piece
                        if left <= 0:
                            return  # the caller's cap is passed: stop reading
                    return
            raise FetchFailed(f"more than {MAX_REDIRECTS} redirects")
    except aiohttp.ClientError as exc:
        raise FetchFailed(f"the download failed: {exc}") from exc


async def request_slot(
    client: ClientXMPP, service: UploadService, name: str, size: int, mime: str
) -> tuple[str, str, dict[str, str]]:
    """(PUT url, GET url, PUT headers) of a fresh slot."""
    try:
        iq = await client.plugin["xep_0363"].request_slot(
            JID(service.jid), name, size, mime, timeout=SLOT_TIMEOUT_S
        )
    except IqTimeout as exc:
        raise DeliveryError(f"xmpp: the upload service {service.jid} did not answer") from exc
    except IqError as exc:
        condition = str(exc.iq["error"]["condition"])
        why = f"xmpp: the upload service refused {name}: {condition} {exc.iq['error']['text']}"
        error = PermanentDeliveryError if condition in PERMANENT_SLOT_ERRORS else DeliveryError
        raise error(why.strip()) from exc
    slot = iq["http_upload_slot"]
    headers = {h["name"]: h["value"] for h in slot["put"]["headers"]}
    return str(slot["put"]["url"]), str(slot["get"]["url"]), slot_headers(headers)


async def put_file(url: str, headers: dict[str, str], path: Path, size: int, mime: str) -> None:
    """PUT the file to its slot; a 4xx will not get better by retrying, a 5xx may."""
    headers = {**headers, "Content-Type": mime, "Content-Length": str(size)}
    timeout = aiohttp.ClientTimeout(
        total=UPLOAD_TIMEOUT_S, sock_connect=CONNECT_TIMEOUT_S, sock_read=READ_TIMEOUT_S
    )
    try:
        handle = await asyncio.to_thread(path.open, "rb")
    except OSError as exc:
        raise PermanentDeliveryError(f"xmpp: no file to upload at {path}") from exc
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout, cookie_jar=aiohttp.DummyCookieJar()) as s,
            s.put(url, data=handle, headers=headers) as resp,
        ):
            if resp.status >= 400:
                why = f"xmpp: the upload was refused: HTTP {resp.status}"
                raise (PermanentDeliveryError if resp.status < 500 else DeliveryError)(why)
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise DeliveryError(f"xmpp: the upload failed: {exc}") from exc
    finally:
        await asyncio.to_thread(handle.close)
