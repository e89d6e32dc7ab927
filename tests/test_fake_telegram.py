"""Tests for the fake Telegram Bot API, driven through aiogram's real AiohttpSession."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest
from aiogram import Bot
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.exceptions import (
    TelegramBadRequest,
    TelegramRetryAfter,
    TelegramServerError,
    TelegramUnauthorizedError,
)
from aiogram.types import ReplyParameters
from fake_telegram import FakeTelegram, check_html

CHAT = -100123


def make_bot(fake: FakeTelegram, token: str | None = None) -> Bot:
    api = TelegramAPIServer.from_base(fake.base_url)
    return Bot(token or fake.token, session=AiohttpSession(api=api))


@pytest.fixture
def fake() -> Iterator[FakeTelegram]:
    with FakeTelegram() as f:
        yield f


@pytest.fixture
async def bot(fake: FakeTelegram) -> AsyncIterator[Bot]:
    b = make_bot(fake)
    try:
        yield b
    finally:
        await b.session.close()


async def test_get_me(bot: Bot) -> None:
    me = await bot.get_me()
    assert (me.id, me.username, me.first_name, me.is_bot) == (999000, "andy_bot", "Andy", True)


async def test_wrong_token_is_unauthorized(fake: FakeTelegram) -> None:
    other = make_bot(fake, "42:WRONG")
    try:
        with pytest.raises(TelegramUnauthorizedError):
            await other.get_me()
    finally:
        await other.session.close()
    assert fake.calls == []


async def test_long_poll_gets_pushed_update_and_offset_confirms(
    fake: FakeTelegram, bot: Bot
) -> None:
    poll = asyncio.create_task(bot.get_updates(timeout=5))
    await asyncio.to_thread(
        fake.wait_until, lambda: len(fake.get_updates_offsets) == 1, 5.0, "poll"
    )
    uid = fake.push_update(fake.update(fake.text_message(CHAT, "@Andy hi", username="alice")))
    updates = await asyncio.wait_for(poll, 5)
    assert [u.update_id for u in updates] == [uid]
    msg = updates[0].message
    assert msg is not None and msg.text == "@Andy hi" and msg.chat.id == CHAT
    assert msg.from_user is not None and msg.from_user.username == "alice"
    again = await bot.get_updates(offset=uid)  # not yet confirmed: delivered again
    assert [u.update_id for u in again] == [uid]
    assert await bot.get_updates(offset=uid + 1) == []
    assert fake.pending == []
    assert fake.get_updates_offsets == [None, uid, uid + 1]


async def test_long_poll_times_out_empty(bot: Bot) -> None:
    started = time.monotonic()
    assert await bot.get_updates(timeout=1) == []
    assert time.monotonic() - started < 5


async def test_limit_and_update_ids_increase(fake: FakeTelegram, bot: Bot) -> None:
    ids = [fake.push_update(fake.text_message(CHAT, f"m{i}")) for i in range(3)]
    assert ids == sorted(ids) and len(set(ids)) == 3
    first = await bot.get_updates(limit=2)
    assert [u.update_id for u in first] == ids[:2]
    rest = await bot.get_updates(offset=ids[1] + 1)
    assert [u.update_id for u in rest] == ids[2:]


async def test_builders_parse_as_aiogram_messages(fake: FakeTelegram, bot: Bot) -> None:
    mine = fake.bot_message(CHAT, "earlier answer")
    built = [
        fake.photo_message(CHAT, caption="look"),
        fake.voice_message(CHAT),
        fake.document_message(CHAT, file_name="report.pdf"),
        fake.sticker_message(CHAT, emoji="🔥"),
        fake.location_message(CHAT),
        fake.text_message(CHAT, "yes?", reply_to=mine, chat_type="supergroup", thread_id=7),
        fake.text_message(555, "hello", chat_type="private", user_id=555),
    ]
    for m in built:
        fake.push_update(m)
    msgs = [u.message for u in await bot.get_updates() if u.message is not None]
    assert len(msgs) == len(built)
    photo, voice, doc, sticker, loc, reply, private = msgs
    assert photo.photo and photo.caption == "look"
    assert voice.voice is not None and voice.voice.mime_type == "audio/ogg"
    assert doc.document is not None and doc.document.file_name == "report.pdf"
    assert sticker.sticker is not None and sticker.sticker.emoji == "🔥"
    assert loc.location is not None
    assert reply.reply_to_message is not None and reply.reply_to_message.text == "earlier answer"
    assert reply.reply_to_message.from_user is not None
    assert reply.reply_to_message.from_user.id == 999000
    assert reply.message_thread_id == 7 and reply.is_topic_message
    assert private.chat.type == "private" and private.from_user is not None
    assert private.from_user.id == 555
    ids = [m.message_id for m in msgs]
    assert len(set(ids)) == len(ids)


async def test_send_plain_and_html(fake: FakeTelegram, bot: Bot) -> None:
    m1 = await bot.send_message(CHAT, "a < b & c")
    m2 = await bot.send_message(
        CHAT, '<b>Hi</b> &lt;x&gt; &amp; <a href="https://e.x">link</a>', parse_mode="HTML"
    )
    assert m1.text == "a < b & c" and m1.from_user is not None and m1.from_user.is_bot
    assert m2.message_id > m1.message_id and m2.chat.id == CHAT
    s1, s2 = fake.wait_for_sent(2)
    assert (s1.chat_id, s1.parse_mode, s1.visible) == (CHAT, None, "a < b & c")
    assert s2.parse_mode == "HTML" and s2.visible == "Hi <x> & link"
    assert s2.text.startswith("<b>Hi</b>")


@pytest.mark.parametrize("bad", ["<b>x", "a < b", "x > y", "<i>a<b>b</i></b>", "<div>x</div>", "&"])
async def test_malformed_html_is_rejected(fake: FakeTelegram, bot: Bot, bad: str) -> None:
    with pytest.raises(TelegramBadRequest, match="can't parse entities"):
        await bot.send_message(CHAT, bad, parse_mode="HTML")
    assert fake.sent == []
    assert [r.text for r in fake.rejected] == [bad]


def test_check_html_accepts_telegram_markup() -> None:
    text = (
        "<strong>s</strong><em>e</em><ins>i</ins><strike>x</strike><del>d</del><code>c</code>"
        '<pre><code class="language-py">p</code></pre><tg-spoiler>t</tg-spoiler>'
        '<span class="tg-spoiler">h</span><blockquote>q</blockquote>&quot;&#x27;'
    )
    assert check_html(text) == "seixdcpthq\"'"


async def test_too_long_is_rejected(fake: FakeTelegram, bot: Bot) -> None:
    await bot.send_message(CHAT, "<b>" + "x" * 4096 + "</b>", parse_mode="HTML")
    with pytest.raises(TelegramBadRequest, match="message is too long"):
        await bot.send_message(CHAT, "x" * 4097)
    assert len(fake.sent) == 1 and len(fake.sent[0].visible) == 4096


async def test_thread_and_reply_recorded(fake: FakeTelegram, bot: Bot) -> None:
    rp = ReplyParameters(message_id=41)
    msg = await bot.send_message(CHAT, "in topic", message_thread_id=7, reply_parameters=rp)
    assert msg.message_thread_id == 7
    sent = (await fake.await_sent(1))[0]
    assert (sent.message_thread_id, sent.reply_to_message_id) == (7, 41)


async def test_chat_action_recorded(fake: FakeTelegram, bot: Bot) -> None:
    assert await bot.send_chat_action(CHAT, "typing", message_thread_id=3) is True
    (action,) = fake.wait_for_actions(1)
    assert (action.chat_id, action.action, action.message_thread_id) == (CHAT, "typing", 3)


async def test_retry_after(fake: FakeTelegram, bot: Bot) -> None:
    fake.fail_next("sendMessage", 429, retry_after=7, times=2)
    for _ in range(2):
        with pytest.raises(TelegramRetryAfter) as info:
            await bot.send_message(CHAT, "hi")
        assert info.value.retry_after == 7
    await bot.send_message(CHAT, "hi")
    assert len(fake.sent) == 1


async def test_server_error(fake: FakeTelegram, bot: Bot) -> None:
    fake.fail_next("sendmessage", 500)
    with pytest.raises(TelegramServerError, match="Internal Server Error"):
        await bot.send_message(CHAT, "hi")
    assert fake.sent == []
    assert await bot.delete_webhook() is True


async def test_raw_json_body_and_unknown_method(fake: FakeTelegram) -> None:
    base = f"{fake.base_url}/bot{fake.token}"
    body = {"chat_id": 5, "text": "hi", "reply_parameters": {"message_id": 3}}
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{base}/sendMessage", json=body) as resp:
            assert resp.status == 200 and (await resp.json())["result"]["text"] == "hi"
        async with http.post(f"{base}/sendTeleport", data={"x": "1"}) as resp:
            assert resp.status == 404
            assert (await resp.json())["description"] == "Not Found: method not found"
    assert fake.sent[0].reply_to_message_id == 3 and fake.sent[0].chat_id == 5
