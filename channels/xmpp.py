"""The XMPP channel (slixmpp): 1:1 chats and multi-user rooms (XEP-0045).

TLS is required unless XMPP_TLS=off (local testing only, said loudly). The bot joins
XMPP_ROOMS and every room an allowed sender invites it to by a direct invitation (XEP-0249),
rejoins after each reconnect, and reports "not connected" to the router so replies wait in
the outbox meanwhile. Files go both ways through HTTP File Upload (XEP-0363) links shared as
out-of-band data (XEP-0066): see channels/xmpp_media.py for what is fetched from where.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Literal

from slixmpp import JID, ClientXMPP
from slixmpp.stanza import Message

from channels.xmpp_files import XmppFiles
from channels.xmpp_media import MAX_LINKS, OOB_NS, max_bytes
from channels.xmpp_message import Seen, addressed, bare, ignore_reason, sender_of
from nanoclaw.background import Background
from nanoclaw.channel import Inbound
from nanoclaw.config import Settings
from nanoclaw.errors import DeliveryError
from nanoclaw.models import InboundMessage

log = logging.getLogger(__name__)
MAX_TOLD = 256
PLUGINS = (
    "xep_0030",
    "xep_0045",
    "xep_0085",
    "xep_0199",
    "xep_0203",
    "xep_0249",
    "xep_0280",
    "xep_0363",
)


class XmppChannel:
    name = "xmpp"
    max_message_len = 4000

    def __init__(self, settings: Settings, state_dir: Path) -> None:
        assert settings.xmpp_jid and settings.xmpp_password is not None
        self._jid = JID(settings.xmpp_jid)
        self._password = settings.xmpp_password.get_secret_value()
        self._server = settings.xmpp_server
        self._tls = settings.xmpp_tls
        self._ca_file = settings.xmpp_ca_file
        self._nick = settings.assistant_name
        self._allowed = {s.removeprefix("xmpp:").lower() for s in settings.allowed_senders}
        self._rooms_path = state_dir / "rooms.json"
        self._rooms: set[str] = {bare(r) for r in settings.xmpp_rooms}
        self._joined: set[str] = set()
        self._told: set[str] = set()  # rooms whose mediated invitation was logged
        self._inbound: Inbound | None = None
        self._client: ClientXMPP | None = None
        self._ready = asyncio.Event()
        self._stopping = False
        self._reconnect_delay = 1.0
        self._background = Background("xmpp")
        limit = max_bytes(settings.media_max_mb)
        self._files = XmppFiles(self._jid.domain, self._tls == "off", limit)

    @property
    def joined(self) -> frozenset[str]:
        """The rooms the bot is in right now (empty while disconnected)."""
        return frozenset(self._joined)

    async def wait_online(self) -> None:
        """Until the session is up and the rooms are joined."""
        await self._ready.wait()

    # lifecycle

    async def start(self, inbound: Inbound) -> None:
        self._inbound = inbound
        self._rooms |= await asyncio.to_thread(self._load_rooms)
        if self._tls == "off":
            log.warning(
                "XMPP_TLS=off: the XMPP password and every message cross the network "
                "UNENCRYPTED. Use this only against a local test server."
            )
        self._client = self._build()
        self._connect()

    def _build(self) -> ClientXMPP:
        insecure = self._tls == "off"
        mechanisms = {"unencrypted_plain": insecure, "unencrypted_scram": insecure}
        client = ClientXMPP(
            self._jid, self._password, plugin_config={"feature_mechanisms": mechanisms}
        )
        for plugin in PLUGINS:
            client.register_plugin(plugin)
        client.enable_direct_tls = self._tls == "direct"
        client.enable_starttls = self._tls == "required"
        client.enable_plaintext = insecure
        if self._ca_file is not None:
            client.ca_certs = self._ca_file
        client.add_event_handler("session_start", self._session_start)
        client.add_event_handler("disconnected", self._disconnected)
        client.add_event_handler("failed_auth", self._failed_auth)
        client.add_event_handler("message", self._message)
        client.add_event_handler("groupchat_message", self._message)
        client.add_event_handler("groupchat_invite", self._mediated_invite)
        client.add_event_handler("groupchat_direct_invite", self._direct_invite)
        return client

    def _connect(self) -> None:
        assert self._client is not None
        if self._server:
            host, _, port = self._server.rpartition(":")
            self._client.connect(host, int(port))
        else:
            self._client.connect()

    async def stop(self) -> None:
        self._stopping = True
        await self._background.close()
        if self._client is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5):
                    await self._client.disconnect()

    async def _session_start(self, _: Any) -> None:
        assert self._client is not None
        self._client.send_presence()
        self._joined.clear()
        for room in sorted(self._rooms):
            await self._join(room)
        with contextlib.suppress(Exception):  # sending files says so when this failed
            await self._files.discover(self._client)
        self._reconnect_delay = 1.0
        self._ready.set()
        log.info("xmpp: online as %s in %d rooms", self._jid.bare, len(self._joined))

    async def _join(self, room: str) -> None:
        assert self._client is not None
        muc = self._client.plugin["xep_0045"]
        try:
            await muc.join_muc_wait(JID(room), self._nick, maxstanzas=0, timeout=20)
        except Exception as exc:  # a room that refuses us must not stop the others
            log.warning("xmpp: cannot join %s: %s", room, exc)
            return
        self._joined.add(room)

    def _disconnected(self, reason: Any) -> None:
        self._ready.clear()
        self._joined.clear()
        if self._stopping:
            return
        delay = self._reconnect_delay
        self._reconnect_delay = min(delay * 2, 60.0)
        log.warning("xmpp: disconnected (%s); reconnecting in %.0fs", reason, delay)
        self._background.spawn(self._reconnect(delay), key="reconnect")

    async def _reconnect(self, delay: float) -> None:
        await asyncio.sleep(delay)
        if not self._stopping:
            self._connect()

    def _failed_auth(self, _: Any) -> None:
        log.error("xmpp: %s was refused: check XMPP_JID and XMPP_PASSWORD", self._jid.bare)

    # inbound

    def _seen(self, msg: Message) -> Seen:
        sender = msg["from"]
        room = bare(str(sender))
        real = ""
        if msg["type"] == "groupchat" or room in self._joined:
            assert self._client is not None
            muc = self._client.plugin["xep_0045"]
            with contextlib.suppress(Exception):
                real = bare(str(muc.get_jid_property(JID(room), sender.resource, "jid") or ""))
        return Seen(
            kind=str(msg["type"]),
            from_bare=room,
            from_resource=str(sender.resource),
            body=str(msg["body"]),
            delayed=bool(msg.xml.find("{urn:xmpp:delay}delay") is not None),
            real_jid=real,
            urls=tuple(
                str(el.text).strip()
                for el in msg.xml.findall(f"{{{OOB_NS}}}x/{{{OOB_NS}}}url")[:MAX_LINKS]
                if el.text and el.text.strip()
            ),
        )

    async def _message(self, msg: Message) -> None:
        if self._inbound is None:
            return
        seen = self._seen(msg)
        reason = ignore_reason(seen, self._jid.bare.lower(), self._nick, self._joined)
        if reason is not None:
            log.debug("xmpp: ignored message from %s: %s", msg["from"], reason)
            return
        is_room = seen.kind == "groupchat"
        chat_id = f"xmpp:{seen.from_bare}"
        if not is_room and seen.from_bare in self._joined:  # a private message via a room
            chat_id = f"xmpp:{seen.from_bare}/{seen.from_resource}"
        sender_id, name = sender_of(seen, self._joined)
        assert self._client is not None
        text, attachments = await self._files.shared(self._client, seen, self._joined)
        await self._inbound.message(
            InboundMessage(
                chat_id=chat_id,
                # Without a stanza id there is nothing to dedupe on: a fresh id keeps it.
                platform_id=str(msg["id"] or "") or uuid.uuid4().hex,
                sender_id=sender_id,
                sender_name=name,
                text=text,
                ts_ms=int(time.time() * 1000),
                chat_name=seen.from_bare,
                is_group_chat=is_room,
                mentions_bot=is_room and addressed(seen.body, self._nick),
                attachments=attachments,
            )
        )

    def _mediated_invite(self, msg: Message) -> None:
        """XEP-0045: the room relays an invitation and names the inviter itself.

        That name is written by the room's service, which may be anyone's: never trusted.
        Clients send a direct invitation too, or the owner lists the room in XMPP_ROOMS.
        """
        room = bare(str(msg["from"]))
        # Once per room at warning level, so a room repeating itself cannot flood the log.
        first = room not in self._told and len(self._told) < MAX_TOLD
        if first:
            self._told.add(room)
        log.log(
            logging.WARNING if first else logging.DEBUG,
            "xmpp: mediated invitation to %s (naming %s as inviter) ignored: invite the bot "
            "with a direct invitation, or add the room to XMPP_ROOMS",
            room,
            bare(str(msg["muc"]["invite"]["from"])),
        )

    async def _direct_invite(self, msg: Message) -> None:
        """XEP-0249: the inviter writes to us, from an address its own server stamped."""
        await self._invited(bare(str(msg["groupchat_invite"]["jid"])), bare(str(msg["from"])))

    async def _invited(self, room: str, who: str) -> None:
        if not room or who not in self._allowed:
            log.warning("xmpp: invitation to %s from %s refused (not an allowed sender)", room, who)
            return
        log.info("xmpp: invited to %s by %s; joining", room, who)
        self._rooms.add(room)
        await asyncio.to_thread(self._save_rooms)
        if self._ready.is_set():
            await self._join(room)

    # outbound

    def _target(self, chat_id: str) -> tuple[ClientXMPP, str, Literal["groupchat", "chat"]]:
        """(client, to, message type), or DeliveryError while it cannot be delivered."""
        client = self._client
        if client is None or not self._ready.is_set():
            raise DeliveryError("xmpp is not connected")
        to = chat_id.removeprefix("xmpp:")
        is_room = bare(to) in self._rooms and "/" not in to
        if is_room and bare(to) not in self._joined:
            raise DeliveryError(f"xmpp: not in room {to} (yet)")
        return client, to, "groupchat" if is_room else "chat"

    def _message_to(self, chat_id: str, body: str, key: str) -> Message:
        client, to, kind = self._target(chat_id)
        msg = client.make_message(mto=JID(to), mbody=body, mtype=kind)
        if key:
            msg["id"] = key  # the same id on a retry lets receivers drop the duplicate
        return msg

    async def send(self, chat_id: str, text: str, key: str = "") -> None:
        self._message_to(chat_id, text, key).send()

    async def send_file(
        self, chat_id: str, path: Path, name: str, caption: str = "", key: str = ""
    ) -> None:
        """Upload through the server's HTTP File Upload service, share the link with
        out-of-band data (clients then show images inline), then the caption as text."""
        client, _, _ = self._target(chat_id)  # not connected, not in the room: retry later
        url = await self._files.upload(client, path, name, key)
        msg = self._message_to(chat_id, url, key)
        oob = ET.SubElement(msg.xml, f"{{{OOB_NS}}}x")
        ET.SubElement(oob, f"{{{OOB_NS}}}url").text = url
        msg.send()
        if caption.strip():
            await self.send(chat_id, caption, f"{key}-caption" if key else "")

    async def set_typing(self, chat_id: str, typing: bool) -> None:
        client = self._client
        if client is None or not self._ready.is_set():
            return
        to = chat_id.removeprefix("xmpp:")
        is_room = bare(to) in self._joined and "/" not in to
        stanza = client.make_message(mto=JID(to), mtype="groupchat" if is_room else "chat")
        stanza["chat_state"] = "composing" if typing else "active"
        stanza.send()

    # state

    def _load_rooms(self) -> set[str]:
        try:
            data = json.loads(self._rooms_path.read_text())
        except (OSError, ValueError):
            return set()
        return {bare(r) for r in data if isinstance(r, str)} if isinstance(data, list) else set()

    def _save_rooms(self) -> None:
        self._rooms_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._rooms_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(sorted(self._rooms)))
        os.replace(tmp, self._rooms_path)


def create(settings: Settings) -> XmppChannel:
    return XmppChannel(settings, settings.layout.store / "xmpp")
