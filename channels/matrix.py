"""The Matrix channel (matrix-nio): rooms and direct chats over the client-server API.

Logs in once and keeps the token, device id and sync token under store/matrix/, so a
restart neither logs in again nor replays old events; the first sync's backlog is skipped.
Encrypted rooms are out of scope: the bot says so once per room instead of going quiet.
Invitations are taken from allowed senders, and from anyone while a pairing code is live.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from aiohttp import ClientError
from nio import (
    AsyncClient,
    AsyncClientConfig,
    ErrorResponse,
    LoginResponse,
    RoomGetEventResponse,
    RoomSendResponse,
    SyncResponse,
    WhoamiResponse,
)

from channels.markdown import to_html
from channels.matrix_event import content_of, normalise, reply_target
from channels.matrix_media import (
    Uploads,
    attachment_of,
    caption_fits,
    download,
    file_content,
    mimetype_of,
)
from channels.picture import probe
from nanoclaw.background import Background
from nanoclaw.channel import Inbound
from nanoclaw.config import Settings
from nanoclaw.errors import DeliveryError, PermanentDeliveryError
from nanoclaw.models import Attachment
from nanoclaw.store.db import now_ms

log = logging.getLogger(__name__)
SYNC_TIMEOUT_MS = 30_000
TYPING_MS = 30_000
PERMANENT = ("M_FORBIDDEN", "M_NOT_FOUND", "M_TOO_LARGE")  # retrying cannot help
MAX_PAIRING_ROOMS = 20  # strangers' rooms joined at once while a pairing code is live
ENCRYPTED_NOTICE = (
    "I can't read encrypted messages: this room is end-to-end encrypted, and I only "
    "understand unencrypted rooms for now. Invite me to an unencrypted room instead."
)


class MatrixChannel:
    name = "mx"
    max_message_len = 6000

    def __init__(self, settings: Settings, state_dir: Path) -> None:
        assert settings.matrix_homeserver and settings.matrix_user_id
        self._homeserver = settings.matrix_homeserver
        self._user = settings.matrix_user_id
        self._password = settings.matrix_password
        self._token = settings.matrix_access_token
        self._allowed = {s.removeprefix("mx:") for s in settings.allowed_senders}
        self._state_path = state_dir / "session.json"
        self._state: dict[str, Any] = {}
        self._inbound: Inbound | None = None
        self._client: AsyncClient | None = None
        self._uploads = Uploads(refusal)
        self._background = Background("matrix")
        self.ready = asyncio.Event()

    # lifecycle

    async def start(self, inbound: Inbound) -> None:
        self._inbound = inbound
        self._state = await asyncio.to_thread(self._load_state)
        config = AsyncClientConfig(
            max_limit_exceeded=0,
            max_timeouts=0,
            store_sync_tokens=False,
            encryption_enabled=False,
            request_timeout=SYNC_TIMEOUT_MS / 1000 + 30,
        )
        self._client = AsyncClient(self._homeserver, self._user, config=config)
        self._background.spawn(self._run())

    async def stop(self) -> None:
        await self._background.close()
        if self._client is not None:
            await self._client.close()

    async def _run(self) -> None:
        delay = 1.0
        while True:
            try:
                if not self.ready.is_set():
                    if not await self._login():
                        return
                    self.ready.set()
                await self.sync_once()
                delay = 1.0
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # transport errors and server restarts: back off, retry
                log.warning("matrix: sync failed (%s); retrying in %.0fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 60.0)

    async def _login(self) -> bool:
        client = self._client
        assert client is not None
        saved = self._state
        if saved.get("user_id") == self._user and saved.get("access_token"):
            client.restore_login(self._user, saved["device_id"], saved["access_token"])
            return True
        if self._token is not None:
            client.access_token = self._token.get_secret_value()
            who = await client.whoami()
            if not isinstance(who, WhoamiResponse):
                log.error("matrix: MATRIX_ACCESS_TOKEN was refused: %s", who)
                return False
            client.restore_login(self._user, who.device_id or "", client.access_token)
        elif self._password is not None:
            resp = await client.login(self._password.get_secret_value(), device_name="nanoclaw")
            if not isinstance(resp, LoginResponse):
                log.error("matrix: login as %s failed: %s", self._user, resp)
                return False
        else:
            log.error("matrix: set MATRIX_PASSWORD or MATRIX_ACCESS_TOKEN")
            return False
        self._state.update(
            user_id=self._user, device_id=client.device_id, access_token=client.access_token
        )
        await self._persist()
        log.info("matrix: logged in as %s (device %s)", self._user, client.device_id)
        return True

    async def sync_once(self) -> None:
        """The step: one sync; events past the saved token are stored, then the token moves."""
        client = self._client
        assert client is not None
        since = self._state.get("next_batch")
        resp = await client.sync(timeout=SYNC_TIMEOUT_MS if since else 0, since=since)
        if not isinstance(resp, SyncResponse):
            raise DeliveryError(f"sync refused: {resp}")
        for room_id, info in resp.rooms.invite.items():
            await self._invited(room_id, [e.source for e in info.invite_state])
        if since:  # the very first sync's backlog is history, not new messages
            for room_id, joined in resp.rooms.join.items():
                for event in joined.timeline.events:
                    await self._event(room_id, event.source)
        await self.leave_unpaired(now_ms())
        self._state["next_batch"] = resp.next_batch
        await self._persist()

    # inbound

    async def _invited(self, room_id: str, state: list[dict[str, Any]]) -> None:
        assert self._client is not None and self._inbound is not None
        # In an invite's stripped state, our own member event is the invitation itself.
        inviter = next(
            (
                e.get("sender")
                for e in state
                if e.get("type") == "m.room.member" and e.get("state_key") == self._user
            ),
            None,
        )
        await self._inbound.chat_seen(f"mx:{room_id}", f"invited by {inviter}", True)
        if inviter in self._allowed:
            log.info("matrix: invited to %s by %s; joining", room_id, inviter)
            await self._client.join(room_id)
            return
        # A newcomer can only send a pairing code from a room the bot is in: while a code is
        # live anyone's invitation is taken, and the room is left if no code paired it by
        # the time the codes expire (`leave_unpaired`).
        until = await self._inbound.pairing_open_until()
        pairing = self._state.setdefault("pairing_rooms", {})
        if until is not None and len(pairing) < MAX_PAIRING_ROOMS:
            log.info("matrix: invited to %s by %s while pairing is open; joining", room_id, inviter)
            pairing[room_id] = until
            await self._client.join(room_id)
            return
        log.warning("matrix: invitation to %s from %s declined (not allowed)", room_id, inviter)
        await self._client.room_leave(room_id)

    async def leave_unpaired(self, now: int) -> None:
        """Rooms joined for pairing whose time is up: stay if a group holds them, else leave."""
        assert self._client is not None and self._inbound is not None
        pairing: dict[str, int] = self._state.get("pairing_rooms", {})
        for room_id, until in list(pairing.items()):
            if until > now or pairing.pop(room_id, None) is None:  # not due, or done meanwhile
                continue
            if await self._inbound.folder_of(f"mx:{room_id}") is None:
                log.info("matrix: no pairing code came from %s in time; leaving", room_id)
                with contextlib.suppress(Exception):
                    await self._client.room_leave(room_id)

    async def _event(self, room_id: str, event: dict[str, Any]) -> None:
        assert self._client is not None and self._inbound is not None
        room = self._client.rooms.get(room_id)
        name = room.display_name if room else room_id
        if event.get("type") == "m.room.encrypted" and event.get("sender") != self._user:
            await self._encrypted(room_id)
            return
        sender = str(event.get("sender", ""))
        replied = None
        target = reply_target(event.get("content") or {})
        if target:
            replied = await self._sender_of(room_id, target)
        msg = normalise(
            event,
            room_id,
            self._user,
            sender_name=(room.user_name(sender) if room else None) or sender,
            room_name=name,
            is_group=(room.member_count if room else 3) > 2,
            replied_to_sender=replied,
            attachments=self._attachments(content_of(event)),
        )
        if msg is not None:
            await self._inbound.message(msg)

    def _attachments(self, content: dict[str, Any]) -> tuple[Attachment, ...]:
        """The media the event carries, fetched (later, by the ingest) with the current token."""
        found = attachment_of(content, self._download)
        return (found,) if found is not None else ()

    def _download(self, uri: str) -> AsyncIterator[bytes]:
        client = self._client
        assert client is not None  # events arrive only after the login
        return download(client.homeserver, client.access_token, uri)

    async def _sender_of(self, room_id: str, event_id: str) -> str | None:
        assert self._client is not None
        if event_id in self._state.setdefault("sent", []):
            return self._user
        with contextlib.suppress(Exception):
            resp = await self._client.room_get_event(room_id, event_id)
            if isinstance(resp, RoomGetEventResponse):
                return str(resp.event.sender)
        return None

    async def _encrypted(self, room_id: str) -> None:
        notified = self._state.setdefault("encrypted_notified", [])
        log.warning("matrix: room %s is encrypted; its messages cannot be read", room_id)
        if room_id in notified:
            return
        with contextlib.suppress(DeliveryError):
            await self._send(room_id, {"msgtype": "m.notice", "body": ENCRYPTED_NOTICE})
            notified.append(room_id)
            await self._persist()

    # outbound

    async def send(self, chat_id: str, text: str, key: str = "") -> None:
        content = {
            "msgtype": "m.text",
            "body": text,
            "format": "org.matrix.custom.html",
            "formatted_body": to_html(text),
            "m.mentions": {},
        }
        await self._send(chat_id.removeprefix("mx:"), content, key)

    async def send_file(
        self, chat_id: str, path: Path, name: str, caption: str = "", key: str = ""
    ) -> None:
        """Upload to the media repository and post one m.image/m.audio/m.video/m.file event
        with the caption in it (a caption too long for one event follows as text).

        A retry with the same `key` reuses the upload and posts each event once.
        """
        client = self._ready()
        room_id = chat_id.removeprefix("mx:")
        try:
            size = (await asyncio.to_thread(path.stat)).st_size
        except OSError as exc:
            raise PermanentDeliveryError(f"matrix: no file to upload at {path}") from exc
        picture = await asyncio.to_thread(probe, path)
        mimetype = mimetype_of(name, picture)
        url = await self._uploads.url(client, path, name, mimetype, size, key)
        await self._send(room_id, file_content(url, name, size, caption, picture), key)
        if caption.strip() and not caption_fits(caption):
            await self.send(chat_id, caption, f"{key}-caption" if key else "")

    async def post_progress(self, chat_id: str, text: str) -> str:
        """The progress message (`progress=on`): a plain notice; its event id to replace it by."""
        content = {"msgtype": "m.notice", "body": text, "m.mentions": {}}
        return await self._send(chat_id.removeprefix("mx:"), content)

    async def edit_progress(self, chat_id: str, message_id: str, text: str) -> None:
        """An m.replace edit; clients that know no edits show the "* text" fallback."""
        new = {"msgtype": "m.notice", "body": text, "m.mentions": {}}
        relation = {"rel_type": "m.replace", "event_id": message_id}
        content = {**new, "body": f"* {text}", "m.new_content": new, "m.relates_to": relation}
        await self._send(chat_id.removeprefix("mx:"), content)

    async def _send(self, room_id: str, content: dict[str, Any], key: str = "") -> str:
        """`key` becomes the transaction id: Synapse answers a repeat with the first event.
        The event's id."""
        client = self._ready()
        try:
            resp = await client.room_send(
                room_id,
                "m.room.message",
                content,
                tx_id=key or None,
                ignore_unverified_devices=True,
            )
        except (ClientError, TimeoutError, OSError) as exc:
            raise DeliveryError(f"matrix unreachable: {exc}") from exc
        if not isinstance(resp, RoomSendResponse):
            raise refusal(resp)
        sent = self._state.setdefault("sent", [])
        sent.append(resp.event_id)
        del sent[:-500]
        return str(resp.event_id)

    def _ready(self) -> AsyncClient:
        if self._client is None or not self.ready.is_set():
            raise DeliveryError("matrix is not logged in yet")
        return self._client

    async def set_typing(self, chat_id: str, typing: bool) -> None:
        room_id = chat_id.removeprefix("mx:")
        self._background.cancel(f"typing {chat_id}")
        if typing:
            self._background.spawn(self._keep_typing(room_id), key=f"typing {chat_id}")
        elif self._client is not None and self.ready.is_set():
            with contextlib.suppress(Exception):
                await self._client.room_typing(room_id, typing_state=False)

    async def _keep_typing(self, room_id: str) -> None:
        assert self._client is not None
        for _ in range(20):  # at most 10 minutes
            with contextlib.suppress(Exception):
                await self._client.room_typing(room_id, typing_state=True, timeout=TYPING_MS)
            await asyncio.sleep(TYPING_MS / 1000 - 5)

    # state

    def _load_state(self) -> dict[str, Any]:
        try:
            data = json.loads(self._state_path.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    async def _persist(self) -> None:
        """Snapshot on the loop (the state keeps changing), write in a thread."""
        await asyncio.to_thread(self._write_state, json.dumps(self._state))

    def _write_state(self, text: str) -> None:
        self._state_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._state_path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # holds a token
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, self._state_path)


def refusal(resp: object) -> DeliveryError:
    """The error to raise for a homeserver's refusal: permanent unless waiting can help."""
    if isinstance(resp, ErrorResponse) and resp.status_code == "M_LIMIT_EXCEEDED":
        wait = (resp.retry_after_ms or 1000) / 1000
        return DeliveryError(f"matrix rate limit: {resp.message}", retry_after=wait)
    if isinstance(resp, ErrorResponse) and resp.status_code in PERMANENT:
        return PermanentDeliveryError(f"matrix refused: {resp.status_code} {resp.message}")
    return DeliveryError(f"matrix: {resp}")


def create(settings: Settings) -> MatrixChannel:
    return MatrixChannel(settings, settings.layout.store / "matrix")
