"""The XMPP channel's file sharing: the upload services it found (its own server's and its
senders' servers'), the Attachments of a message's shared links (or notes for refused ones),
and the upload of one outgoing file through a slot (XEP-0363)."""

from __future__ import annotations

import asyncio
import functools
import logging
from pathlib import Path
from urllib.parse import urlsplit

from slixmpp import ClientXMPP

from channels import xmpp_upload
from channels.xmpp_media import (
    UploadService,
    caption_of,
    guess_mime,
    media_kind,
    name_from_url,
    own_refusal,
    refused_note,
    share_prefix,
    upload_refusal,
    url_refusal,
)
from channels.xmpp_message import Seen, sender_domain
from nanoclaw.errors import DeliveryError, FilesUnsupported, PermanentDeliveryError
from nanoclaw.models import Attachment

log = logging.getLogger(__name__)
DISCO_TIMEOUT_S = 10.0
MAX_DOMAINS = 256  # senders' servers whose upload services are remembered
MAX_UPLOADED = 100  # send_file keys whose upload is reused on a retry
PROBE, PROBE_MIME = "nanoclaw-probe.txt", "text/plain"  # a slot asked for, never filled


def _host(url: str) -> str:
    try:
        return (urlsplit(url).hostname or "").lower().rstrip(".")
    except ValueError:
        return ""


class XmppFiles:
    def __init__(self, own_domain: str, allow_http: bool, max_bytes: int) -> None:
        self._own_domain = own_domain.lower()
        self._allow_http = allow_http
        self._max_bytes = max_bytes
        self.services: list[UploadService] | None = None  # None: not discovered yet
        self._domains: dict[str, frozenset[str]] = {}  # a sender's server -> its upload hosts
        self._uploaded: dict[str, str] = {}  # send_file key -> the GET URL of its upload
        self._places: set[str] = set()  # where the own upload services keep files (share_prefix)

    async def discover(self, client: ClientXMPP) -> list[UploadService]:
        """Ask the own server for its upload services (at each session start)."""
        found = await xmpp_upload.discover(client, self._own_domain, DISCO_TIMEOUT_S)
        self.services = found
        log.info("xmpp: upload services: %s", ", ".join(s.jid for s in found) or "none")
        for service in found:  # a slot asked and never used shows where files are served
            try:
                _, url, _ = await xmpp_upload.request_slot(client, service, PROBE, 1, PROBE_MIME)
            except Exception as exc:  # links to the own server are then checked by host only
                log.info("xmpp: %s gave no slot to learn its address: %s", service.jid, exc)
                continue
            self._learn(url)
        return found

    def _learn(self, url: str) -> None:
        place = share_prefix(url)
        if place is not None:
            self._places.add(place)

    def own_hosts(self) -> frozenset[str]:
        """The account's own server: its domain and its upload services' hosts."""
        return frozenset({self._own_domain, *(s.jid for s in self.services or [])})

    async def _sender_hosts(
        self, client: ClientXMPP, domain: str, hosts: set[str]
    ) -> frozenset[str]:
        """The sender's server and its upload services (asked only when a link needs it)."""
        if not domain or domain in self.own_hosts() or hosts <= {domain}:
            return frozenset({domain} - {""})
        if domain not in self._domains:
            found: list[UploadService] = []
            try:
                found = await xmpp_upload.discover(client, domain, DISCO_TIMEOUT_S)
            except Exception as exc:  # its links are refused, with the reason in the prompt
                log.info("xmpp: no upload service found on %s: %s", domain, exc)
            while len(self._domains) >= MAX_DOMAINS:
                del self._domains[next(iter(self._domains))]
            self._domains[domain] = frozenset({domain, *(s.jid for s in found)})
        return self._domains[domain]

    async def shared(
        self, client: ClientXMPP, seen: Seen, rooms: set[str]
    ) -> tuple[str, tuple[Attachment, ...]]:
        """The caption and an Attachment per fetchable link; a refused link is a note."""
        if not seen.urls:
            return seen.body, ()
        own = self.own_hosts()
        hosts = {_host(u) for u in seen.urls} - own
        theirs = await self._sender_hosts(client, sender_domain(seen, rooms), hosts)
        notes, attachments = [], []
        for url in seen.urls:
            refusal = url_refusal(url, own, theirs, self._allow_http)
            if refusal is None and _host(url) in own:
                refusal = own_refusal(url, frozenset(self._places))
            if refusal is not None:
                log.info("xmpp: shared link from %s not fetched: %s", seen.from_bare, refusal)
                notes.append(refused_note(url, refusal))
                continue
            name = name_from_url(url)
            fetch = functools.partial(
                xmpp_upload.download,
                url,
                private_ok=_host(url) in own,
                limit=self._max_bytes + 1,  # one byte past the cap tells the saver it is over
            )
            attachments.append(Attachment(media_kind(name), name, fetch, mime=guess_mime(name)))
        text = "\n".join(filter(None, [caption_of(seen.body, seen.urls), *notes]))
        return text, tuple(attachments)

    async def upload(self, client: ClientXMPP, path: Path, name: str, key: str) -> str:
        """The GET URL of the file, uploaded once per key (a retry reuses it)."""
        url = self._uploaded.get(key) if key else None
        if url is not None:
            return url
        services = self.services
        if services is None:
            try:
                services = await self.discover(client)
            except Exception as exc:
                raise DeliveryError(f"xmpp: cannot find the upload service: {exc}") from exc
        if not services:
            raise FilesUnsupported("this XMPP server offers no HTTP File Upload (XEP-0363)")
        try:
            size = (await asyncio.to_thread(path.stat)).st_size
        except OSError as exc:
            raise PermanentDeliveryError(f"xmpp: no file to upload at {path}") from exc
        refusal = upload_refusal(size, name, services[0])
        if refusal is not None:
            raise PermanentDeliveryError(refusal)
        mime = guess_mime(name) or "application/octet-stream"
        put, url, headers = await xmpp_upload.request_slot(client, services[0], name, size, mime)
        await xmpp_upload.put_file(put, headers, path, size, mime)
        self._learn(url)
        if key:
            self._uploaded[key] = url
            while len(self._uploaded) > MAX_UPLOADED:
                del self._uploaded[next(iter(self._uploaded))]
        return url
