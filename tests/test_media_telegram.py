"""Telegram media end to end (issue 19): real file bytes through the fake Bot API's getFile
into the group's inbox, the prompt naming them, an image reaching the fake Anthropic server
as an image block from a real agent run (none with vision=off), voice transcribed or not."""

from __future__ import annotations

import base64
import io
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from conftest import Running, settings_for, start_core, stop_core, wait_for
from fake_anthropic import FakeAnthropic
from fake_telegram import FakeTelegram
from fake_transcribe import FakeTranscribe
from PIL import Image

from channels.telegram import TelegramChannel

GROUP, BLIND, STRANGERS = -1001, -1002, -3003


@pytest.fixture
def tg() -> Iterator[FakeTelegram]:
    with FakeTelegram() as server:
        yield server


@pytest.fixture
def heard() -> Iterator[FakeTranscribe]:
    with FakeTranscribe("buy milk and eggs") as server:
        yield server


@pytest_asyncio.fixture
async def bot(
    home: Path, fake: FakeAnthropic, tg: FakeTelegram, heard: FakeTranscribe
) -> AsyncIterator[Running]:
    settings = settings_for(
        home,
        fake.base_url,
        TELEGRAM_BOT_TOKEN=tg.token,
        TELEGRAM_API_URL=tg.base_url,
        TELEGRAM_ALLOWED_CHAT_IDS=f"{GROUP},{STRANGERS}",
        MEDIA_MAX_MB=50,
        TRANSCRIBE_URL=heard.url,
        OPENAI_API_KEY="sk-openai-for-whisper",
    )
    channel = TelegramChannel(settings, settings.layout.store / "telegram")
    running, task = await start_core(settings, channel)
    await running.add_group("team", f"tg:{GROUP}")
    await running.add_group("blind", f"tg:{BLIND}", vision=False)
    yield running
    await stop_core(running, task)


def jpeg(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (10, 120, 200)).save(buf, "JPEG")
    return buf.getvalue()


def today() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d")


def last_user(fake: FakeAnthropic) -> Any:
    return fake.requests[-1].body["messages"][-1]["content"]


def photo(tg: FakeTelegram, chat: int, caption: str, big: bytes) -> tuple[dict[str, Any], str]:
    sizes = [
        tg.put_file(jpeg(90, 60), width=90, height=60),
        tg.put_file(big, width=800, height=600),
    ]
    msg = tg.media_message(chat, {"photo": sizes}, caption=caption)
    return msg, f"photo-{msg['message_id']}.jpg"


async def test_a_photo_reaches_the_inbox_and_the_model_as_an_image_block(
    bot: Running, fake: FakeAnthropic, tg: FakeTelegram
) -> None:
    big = jpeg(800, 600)
    msg, name = photo(tg, GROUP, "@Andy what is this? [[say: a blue square]]", big)
    tg.push_update(msg)
    sent = await tg.await_sent(1, timeout=60)
    assert sent[0].visible == "a blue square"
    saved = bot.settings.layout.groups / "team" / "inbox" / today() / name
    assert saved.read_bytes() == big
    assert tg.downloads == ["documents/file_1"]  # the largest size only
    content = last_user(fake)
    images = [b for b in content if b.get("type") == "image"]
    assert [base64.b64decode(b["source"]["data"]) for b in images] == [big]
    assert images[0]["source"]["media_type"] == "image/jpeg"
    text = "".join(b.get("text", "") for b in content if b.get("type") == "text")
    assert f"[photo saved: /workspace/inbox/{today()}/{name}, 800x600, " in text
    assert "<images>" not in text
    kept = bot.settings.layout.groups / "team" / ".nanoclaw" / "conversation.json"
    history = kept.read_text()
    assert name in history and base64.b64encode(big)[:100].decode() not in history


async def test_a_photo_sent_to_a_live_agent_reaches_it_as_an_image_block(
    bot: Running, fake: FakeAnthropic, tg: FakeTelegram
) -> None:
    tg.push_update(tg.text_message(GROUP, "@Andy hi [[say: first]]"))
    await tg.await_sent(1, timeout=60)
    big = jpeg(640, 480)
    msg, _ = photo(tg, GROUP, "@Andy and this? [[say: second]]", big)
    tg.push_update(msg)
    sent = await tg.await_sent(2, timeout=60)
    assert sent[1].visible == "second"
    assert await bot.store._all("SELECT count(*) FROM runs") == [(1,)]  # a follow-up
    content = last_user(fake)
    images = [b for b in content if b.get("type") == "image"]
    assert [base64.b64decode(b["source"]["data"]) for b in images] == [big]


async def test_vision_off_sends_no_image_block_only_the_path(
    bot: Running, fake: FakeAnthropic, tg: FakeTelegram
) -> None:
    msg, name = photo(tg, BLIND, "@Andy look [[say: noted]]", jpeg(320, 200))
    tg.push_update(msg)
    await tg.await_sent(1, timeout=60)
    content = last_user(fake)
    assert isinstance(content, str) and "<images>" not in content
    assert f"[photo saved: /workspace/inbox/{today()}/{name}, 320x200, " in content


async def test_a_voice_note_is_transcribed_into_the_prompt(
    bot: Running, fake: FakeAnthropic, tg: FakeTelegram, heard: FakeTranscribe
) -> None:
    voice = b"OggS" + bytes(range(256)) * 8
    file = tg.put_file(voice, duration=2, mime_type="audio/ogg")
    msg = tg.media_message(GROUP, {"voice": file}, caption="@Andy [[say: ok]]")
    tg.push_update(msg)
    await tg.await_sent(1, timeout=60)
    [upload] = heard.uploads
    assert upload.data == voice and upload.authorization == "Bearer sk-openai-for-whisper"
    path = f"/workspace/inbox/{today()}/voice-{msg['message_id']}.ogg"
    assert f'[voice note saved: {path}, 2 KB; transcript: "buy milk and eggs"]' in last_user(fake)


async def test_a_file_over_the_bot_apis_20_mb_is_refused_with_a_note(
    bot: Running, fake: FakeAnthropic, tg: FakeTelegram
) -> None:
    doc = tg.put_file(
        b"%PDF-", size=25 * 1024 * 1024, file_name="report.pdf", mime_type="application/pdf"
    )
    tg.push_update(tg.media_message(GROUP, {"document": doc}, caption="@Andy [[say: ok]]"))
    await tg.await_sent(1, timeout=60)
    assert tg.downloads == [] and "getfile" not in [m for m, _ in tg.calls]
    note = "[file not saved: report.pdf is 25.0 MB; Telegram's Bot API gives bots files up to 20 MB"
    assert note in last_user(fake)


async def test_an_unregistered_chats_media_is_never_fetched(
    bot: Running, fake: FakeAnthropic, tg: FakeTelegram
) -> None:
    msg, _ = photo(tg, STRANGERS, "hello", jpeg(100, 100))
    tg.push_update(msg)
    await wait_for(lambda: not tg.pending and tg.get_updates_offsets, timeout=15)
    rows = await bot.store._all("SELECT text FROM messages WHERE chat_id = ?", (f"tg:{STRANGERS}",))
    assert rows == [("hello\n[photo not saved: this chat is not registered to a group]",)]
    assert "getfile" not in [m for m, _ in tg.calls] and tg.downloads == []
