"""Telegram's send_file sends pictures as photos: sendPhoto for JPEG/PNG/WebP within its limits
(read from the content, not the name), sendDocument for everything else, against the fake
Bot API; and the pure photo rules of channels.picture."""

from __future__ import annotations

import io
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from conftest import settings_for
from fake_telegram_photo import FakeTelegramPhotos
from PIL import Image

from channels.picture import PHOTO_MAX_BYTES, Picture, probe, telegram_photo
from channels.telegram import TelegramChannel
from nanoclaw.channel import Ingest
from nanoclaw.errors import PermanentDeliveryError
from nanoclaw.store.messages import Store

GROUP = -1001


def picture_bytes(fmt: str, size: tuple[int, int] = (64, 48)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (200, 30, 90)).save(out, format=fmt)
    return out.getvalue()


@pytest.fixture
def tg() -> Iterator[FakeTelegramPhotos]:
    server = FakeTelegramPhotos()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest_asyncio.fixture
async def telegram(home: Path, tg: FakeTelegramPhotos) -> AsyncIterator[TelegramChannel]:
    settings = settings_for(
        home,
        "http://127.0.0.1:9",  # no model here
        TELEGRAM_BOT_TOKEN=tg.token,
        TELEGRAM_API_URL=tg.base_url,
        TELEGRAM_ALLOWED_CHAT_IDS=str(GROUP),
    )
    store = await Store.open(settings.layout.db)
    channel = TelegramChannel(settings, settings.layout.store / "telegram")
    await channel.start(Ingest(store))
    yield channel
    await channel.stop()
    await store.close()


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
async def test_a_picture_goes_as_a_photo_with_its_caption(
    telegram: TelegramChannel, tg: FakeTelegramPhotos, tmp_path: Path, fmt: str
) -> None:
    path = tmp_path / "outbox-copy"
    path.write_bytes(picture_bytes(fmt))
    await telegram.send_file(f"tg:{GROUP}", path, f"chart.{fmt.lower()}", "the **Q3** chart")
    [photo] = tg.photos
    assert (photo.chat_id, photo.filename, photo.data) == (
        GROUP,
        f"chart.{fmt.lower()}",
        path.read_bytes(),
    )
    assert (photo.width, photo.height) == (64, 48)
    assert (photo.parse_mode, photo.visible) == ("HTML", "the Q3 chart")
    assert tg.documents == [] and tg.sent == []


async def test_a_pdf_goes_as_a_document(
    telegram: TelegramChannel, tg: FakeTelegramPhotos, tmp_path: Path
) -> None:
    path = tmp_path / "report.pdf"
    path.write_bytes(b"%PDF-1.4\n" + os.urandom(2000))
    await telegram.send_file(f"tg:{GROUP}", path, "report.pdf", "figures")
    [doc] = tg.documents
    assert (doc.filename, doc.data, doc.visible) == ("report.pdf", path.read_bytes(), "figures")
    assert tg.photos == []
    assert not any(method == "sendphoto" for method, _ in tg.calls)


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("fake.png", os.urandom(3000)),  # the name says picture, the content does not
        ("anim.gif", picture_bytes("GIF")),  # a GIF is no photo to Telegram
        ("voice.ogg", b"OggS" + os.urandom(3000)),  # voice and audio: documents, kept simple
        ("wide.png", picture_bytes("PNG", (9000, 1200))),  # sides over 10000 together
        ("strip.png", picture_bytes("PNG", (2100, 100))),  # over 20:1
    ],
)
async def test_what_is_no_photo_goes_as_a_document(
    telegram: TelegramChannel, tg: FakeTelegramPhotos, tmp_path: Path, name: str, data: bytes
) -> None:
    path = tmp_path / "outbox-copy"
    path.write_bytes(data)
    await telegram.send_file(f"tg:{GROUP}", path, name)
    [doc] = tg.documents
    assert (doc.filename, doc.data) == (name, data)
    assert not any(method == "sendphoto" for method, _ in tg.calls)


async def test_a_photo_telegram_cannot_process_is_resent_as_a_document(
    telegram: TelegramChannel, tg: FakeTelegramPhotos, tmp_path: Path
) -> None:
    """A truncated PNG: its header reads as a picture, Telegram fails to decode the rest."""
    data = picture_bytes("PNG", (400, 300))
    path = tmp_path / "cut.png"
    path.write_bytes(data[: len(data) // 2])
    await telegram.send_file(f"tg:{GROUP}", path, "cut.png", "**half**")
    assert [r.description for r in tg.rejected] == ["Bad Request: IMAGE_PROCESS_FAILED"]
    [doc] = tg.documents
    assert (doc.data, doc.parse_mode, doc.visible) == (path.read_bytes(), "HTML", "half")
    assert tg.photos == []


async def test_other_photo_errors_are_not_retried_as_documents(
    telegram: TelegramChannel, tg: FakeTelegramPhotos, tmp_path: Path
) -> None:
    path = tmp_path / "p.png"
    path.write_bytes(picture_bytes("PNG"))
    tg.fail_next("sendPhoto", 403, description="Forbidden: bot was kicked from the group chat")
    with pytest.raises(PermanentDeliveryError):
        await telegram.send_file(f"tg:{GROUP}", path, "p.png", "c")
    assert tg.documents == [] and tg.photos == []


def test_probe_reads_the_content_not_the_name(tmp_path: Path) -> None:
    path = tmp_path / "x.pdf"
    path.write_bytes(picture_bytes("JPEG", (30, 20)))
    assert probe(path) == Picture("JPEG", "image/jpeg", 30, 20)
    path.write_bytes(b"%PDF-1.4\n")
    assert probe(path) is None
    assert probe(tmp_path / "gone") is None


@pytest.mark.parametrize(
    ("picture", "size", "photo"),
    [
        (Picture("PNG", "image/png", 1280, 960), 300_000, True),
        (Picture("WEBP", "image/webp", 5000, 5000), 300_000, True),  # 10000 exactly
        (Picture("WEBP", "image/webp", 5000, 5001), 300_000, False),
        (Picture("JPEG", "image/jpeg", 2000, 100), PHOTO_MAX_BYTES, True),  # 20:1 exactly
        (Picture("JPEG", "image/jpeg", 2001, 100), 1000, False),
        (Picture("JPEG", "image/jpeg", 100, 100), PHOTO_MAX_BYTES + 1, False),
        (Picture("GIF", "image/gif", 100, 100), 1000, False),
        (None, 1000, False),
    ],
)
def test_telegram_photo_limits(picture: Picture | None, size: int, photo: bool) -> None:
    assert telegram_photo(picture, size) is photo
