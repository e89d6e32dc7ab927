"""The Telegram channel (aiogram 3): long polling or a webhook in, HTML replies out.

Imported only when TELEGRAM_BOT_TOKEN is set. The update offset is saved after the
updates are stored, so a restart neither loses nor re-handles one; forum replies go
back to the topic the conversation came from. A chat is served when a group holds it or
TELEGRAM_ALLOWED_CHAT_IDS lists it; from any other, only pairing codes and commands count.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from aiogram import Bot
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.exceptions import (
    TelegramBadRequest,
    TelegramNetworkError,
    TelegramRetryAfter,
    TelegramServerError,
    TelegramUnauthorizedError,
)
from aiogram.types import FSInputFile, Message, Update
from aiohttp import ClientError, web

from channels.picture import photo_at
from channels.telegram_message import BotIdentity, MediaRef, command, normalise
from channels.telegram_send import delivery_errors, fit_caption, markup_or_plain, photo_refused
from nanoclaw.background import Background
from nanoclaw.channel import Inbound
from nanoclaw.config import Settings
from nanoclaw.errors import DeliveryError, MediaRefused, PermanentDeliveryError
from nanoclaw.media.saver import human
from nanoclaw.models import Fetch

log = logging.getLogger(__name__)
POLL_TIMEOUT_S = 25
TYPING_EVERY_S = 4.5
ALLOWED_UPDATES = ["message"]
UPLOAD_TIMEOUT_S = 300
DOWNLOAD_TIMEOUT_S = 300
GETFILE_MAX = 20 * 1024 * 1024  # the Bot API serves files to bots up to 20 MB
TOO_BIG = "Telegram's Bot API gives bots files up to 20 MB only"


class TelegramChannel:
    name = "tg"
    max_message_len = 4096

    def __init__(self, settings: Settings, state_dir: Path) -> None:
        assert settings.telegram_bot_token is not None
        self._token = settings.telegram_bot_token.get_secret_value()
        self._api = settings.telegram_api_url
        self._allowed = {c.removeprefix("tg:") for c in settings.telegram_allowed_chat_ids}
        self._assistant = settings.assistant_name
        self._webhook_url = settings.telegram_webhook_url
        self._webhook_listen = settings.telegram_webhook_listen
        self._state_path = state_dir / "state.json"
        self._state: dict[str, Any] = {"offset": 0, "threads": {}}
        self._inbound: Inbound | None = None
        self._bot: Bot | None = None
        self._me: BotIdentity | None = None
        self._background = Background("telegram")
        self._web: web.AppRunner | None = None

    # lifecycle

    async def start(self, inbound: Inbound) -> None:
        self._inbound = inbound
        self._state = await asyncio.to_thread(self._load_state)
        session = AiohttpSession(api=TelegramAPIServer.from_base(self._api))
        self._bot = Bot(self._token, session=session)
        self._background.spawn(self._run())

    @property
    def username(self) -> str:
        """The bot's own username ("" until getMe answered): `/stop@username` is ours."""
        return self._me.username if self._me is not None else ""

    async def stop(self) -> None:
        await self._background.close()
        if self._web is not None:
            await self._web.cleanup()
        if self._bot is not None:
            await self._bot.session.close()

    async def _run(self) -> None:
        """Learn who we are (retrying while Telegram is unreachable), then receive."""
        assert self._bot is not None
        delay = 1.0
        while self._me is None:
            try:
                me = await self._bot.get_me()
                self._me = BotIdentity(me.id, me.username or "")
            except TelegramUnauthorizedError:
                log.error("telegram: the bot token was refused; check TELEGRAM_BOT_TOKEN")
                return
            except (TelegramNetworkError, TelegramServerError, ClientError, TimeoutError) as exc:
                log.warning("telegram: getMe failed (%s); retrying in %.0fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 60)
        log.info("telegram: connected as @%s", self._me.username)
        if self._webhook_url:
            await self._serve_webhook()
        else:
            await self._bot.delete_webhook(drop_pending_updates=False)
            await self._poll()

    async def _poll(self) -> None:
        assert self._bot is not None
        delay = 1.0
        while True:
            try:
                updates = await self._bot.get_updates(
                    offset=int(self._state["offset"]) or None,
                    timeout=POLL_TIMEOUT_S,
                    allowed_updates=ALLOWED_UPDATES,
                    request_timeout=POLL_TIMEOUT_S + 10,
                )
                delay = 1.0
            except TelegramRetryAfter as exc:
                await asyncio.sleep(exc.retry_after)
                continue
            except (TelegramNetworkError, TelegramServerError, ClientError, TimeoutError) as exc:
                log.warning("telegram: getUpdates failed (%s); retrying in %.0fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 60)
                continue
            for update in updates:
                await self.handle_update(update)

    async def handle_update(self, update: Update) -> None:
        """The step: store one update, then move the saved offset past it."""
        try:
            if update.message is not None:
                await self._handle_message(update.message)
        except Exception:  # one bad update must not stop the channel
            log.exception("telegram: update %s failed", update.update_id)
        if update.update_id >= int(self._state["offset"]):
            self._state["offset"] = update.update_id + 1
            await asyncio.to_thread(self._save_state, json.dumps(self._state))

    async def _handle_message(self, msg: Message) -> None:
        assert self._inbound is not None and self._me is not None
        chat_id = f"tg:{msg.chat.id}"
        # Registration is the allowlist of chats, asked of the store at every message so a
        # `groups add` or a pairing made while the daemon runs counts at once; a chat listed
        # in TELEGRAM_ALLOWED_CHAT_IDS is served (its messages stored) even before that.
        served = str(msg.chat.id) in self._allowed or (
            await self._inbound.folder_of(chat_id) is not None
        )
        cmd = command(msg, self._me.username)
        normalised = normalise(msg, self._me, self._fetcher) if cmd is None else None
        if normalised is None:  # a stored message records its chat; anything else must too
            name = msg.chat.title or msg.chat.full_name or str(msg.chat.id)
            await self._inbound.chat_seen(chat_id, name, msg.chat.type != "private")
        if msg.is_topic_message and msg.message_thread_id:
            self._state["threads"][chat_id] = msg.message_thread_id
        if cmd is not None:  # answered in any chat: how a newcomer learns what to do
            await self._answer_command(cmd, msg)
        elif normalised is not None and served:
            await self._inbound.message(normalised)
        elif normalised is not None:
            log.debug("telegram: chat %s is not registered; only pairing is heard", chat_id)
            await self._inbound.unserved(normalised)

    def _fetcher(self, ref: MediaRef) -> Fetch:
        """The download of one file: getFile, then the file URL of the Bot API server."""

        async def fetch() -> AsyncIterator[bytes]:
            assert self._bot is not None
            bot = self._bot
            if ref.size is not None and ref.size > GETFILE_MAX:
                raise MediaRefused(f"{ref.name} is {human(ref.size)}; {TOO_BIG}")
            try:
                file = await bot.get_file(ref.file_id)
            except TelegramBadRequest as exc:
                if "too big" in str(exc).lower():
                    raise MediaRefused(f"{ref.name}: {TOO_BIG}") from exc
                raise MediaRefused(f"the download failed (Telegram: {exc.message})") from exc
            if not file.file_path:
                raise MediaRefused("Telegram named no file to download")
            url = bot.session.api.file_url(bot.token, file.file_path)
            async for chunk in bot.session.stream_content(url, timeout=DOWNLOAD_TIMEOUT_S):
                yield chunk

        return fetch

    async def _answer_command(self, cmd: str, msg: Message) -> None:
        assert self._inbound is not None and self._bot is not None
        chat_id = f"tg:{msg.chat.id}"
        folder = await self._inbound.folder_of(chat_id)
        if folder:
            where = f"registered as group {folder}"
        else:
            where = (
                "not registered yet. Next: ask the owner to run `nanoclaw pair GROUP` and "
                f"send me the code here, or to run `nanoclaw groups add GROUP --chat {chat_id}`"
            )
        if cmd == "ping":
            text = "pong"
        elif cmd == "chatid":
            text = f"This chat's id is {chat_id}: {where}."
        else:
            you = f" You are tg:{msg.from_user.id}." if msg.from_user else ""
            text = f"Hi, I'm {self._assistant}. This chat is {chat_id}, {where}.{you}"
        with contextlib.suppress(DeliveryError):
            await self._send_one(chat_id, text, html=False)

    # webhook mode

    def _secret(self) -> str:
        return hashlib.sha256(b"nanoclaw-webhook:" + self._token.encode()).hexdigest()[:48]

    async def _serve_webhook(self) -> None:
        assert self._bot is not None
        app = web.Application(client_max_size=4 * 1024 * 1024)
        app.router.add_post("/telegram", self._webhook)
        self._web = web.AppRunner(app, access_log=None)
        await self._web.setup()
        host, _, port = self._webhook_listen.rpartition(":")
        await web.TCPSite(self._web, host or "127.0.0.1", int(port)).start()
        await self._bot.set_webhook(
            self._webhook_url or "", secret_token=self._secret(), allowed_updates=ALLOWED_UPDATES
        )
        log.info("telegram: webhook on %s for %s", self._webhook_listen, self._webhook_url)
        await asyncio.Event().wait()

    async def _webhook(self, request: web.Request) -> web.Response:
        given = request.headers.get("X-Telegram-Bot-Api-Secret-Token", "")
        if not hmac.compare_digest(given, self._secret()):
            return web.Response(status=403)
        try:
            update = Update.model_validate(await request.json(), context={"bot": self._bot})
        except (ValueError, TypeError):
            return web.Response(status=400)
        await self.handle_update(update)
        return web.Response(text="ok")

    # outbound

    async def send(self, chat_id: str, text: str, key: str = "") -> None:
        await self._send_one(chat_id, text, html=True)

    async def _send_one(self, chat_id: str, text: str, *, html: bool) -> None:
        bot, chat, thread = self._target(chat_id)

        async def call(body: str, mode: str | None) -> None:
            await bot.send_message(chat, body, parse_mode=mode, message_thread_id=thread)

        with delivery_errors():
            await markup_or_plain(chat_id, text, html, call)

    async def send_file(
        self, chat_id: str, path: Path, name: str, caption: str = "", key: str = ""
    ) -> None:
        """One sendPhoto for a picture within its limits (sendDocument if Telegram cannot
        process it), else one sendDocument; Telegram has no idempotency key: `key` is unused."""
        bot, chat, thread = self._target(chat_id)
        if not await asyncio.to_thread(path.is_file):
            raise PermanentDeliveryError(f"telegram: no file to upload at {path}")
        upload = FSInputFile(path, filename=name)
        text, html = fit_caption(caption)
        as_photo = await asyncio.to_thread(photo_at, path)

        async def call(body: str, mode: str | None) -> None:
            send = bot.send_photo if as_photo else bot.send_document
            await send(
                chat,
                upload,
                caption=body or None,
                parse_mode=mode if body else None,
                message_thread_id=thread,
                request_timeout=UPLOAD_TIMEOUT_S,
            )

        with delivery_errors():
            try:
                await markup_or_plain(chat_id, text, html, call)
            except TelegramBadRequest as exc:
                if not (as_photo and photo_refused(exc)):
                    raise
                log.warning("telegram: %s is no photo to Telegram (%s); sending a file", name, exc)
                as_photo = False
                await markup_or_plain(chat_id, text, html, call)

    async def post_progress(self, chat_id: str, text: str) -> str:
        """The progress message (`progress=on`), plain text; its message id to edit it by."""
        bot, chat, thread = self._target(chat_id)
        with delivery_errors():
            sent = await bot.send_message(chat, text, message_thread_id=thread)
        return str(sent.message_id)

    async def edit_progress(self, chat_id: str, message_id: str, text: str) -> None:
        bot, chat, _ = self._target(chat_id)
        with delivery_errors():
            await bot.edit_message_text(text, chat_id=chat, message_id=int(message_id))

    def _target(self, chat_id: str) -> tuple[Bot, int, int | None]:
        """The bot, the numeric chat and the forum topic the chat last spoke in."""
        if self._bot is None:
            raise DeliveryError("telegram is not started")
        return self._bot, int(chat_id.removeprefix("tg:")), self._state["threads"].get(chat_id)

    async def set_typing(self, chat_id: str, typing: bool) -> None:
        if typing:
            self._background.spawn(self._keep_typing(chat_id), key=f"typing {chat_id}")
        else:
            self._background.cancel(f"typing {chat_id}")

    async def _keep_typing(self, chat_id: str) -> None:
        """Telegram shows "typing" for 5 s: renew it until told to stop (or 10 minutes)."""
        assert self._bot is not None
        chat = int(chat_id.removeprefix("tg:"))
        for _ in range(int(600 / TYPING_EVERY_S)):
            thread = self._state["threads"].get(chat_id)
            with contextlib.suppress(Exception):
                await self._bot.send_chat_action(chat, "typing", message_thread_id=thread)
            await asyncio.sleep(TYPING_EVERY_S)

    # state

    def _load_state(self) -> dict[str, Any]:
        try:
            data = json.loads(self._state_path.read_text())
        except (OSError, ValueError):
            return {"offset": 0, "threads": {}}
        if not isinstance(data, dict):
            return {"offset": 0, "threads": {}}
        offset = data.get("offset")
        threads = data.get("threads")
        return {
            "offset": offset if isinstance(offset, int) else 0,
            "threads": threads if isinstance(threads, dict) else {},
        }

    def _save_state(self, text: str) -> None:
        self._state_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._state_path.with_suffix(".tmp")
        tmp.write_text(text)
        os.replace(tmp, self._state_path)


def create(settings: Settings) -> TelegramChannel:
    return TelegramChannel(settings, settings.layout.store / "telegram")
