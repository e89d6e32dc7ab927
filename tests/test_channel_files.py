"""Channel.send_file on every network: Telegram against the fake Bot API, Matrix against a real
Synapse, XMPP against a real Prosody (it refuses), and the terminal's printed line."""

from __future__ import annotations

import asyncio
import io
import os
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from conftest import settings_for, wait_for
from fake_telegram import FakeTelegram
from prosody import Prosody
from synapse import Human, Seen, Synapse, running

from channels.markdown import visible_length
from channels.matrix import MatrixChannel
from channels.telegram import TelegramChannel
from channels.telegram_send import MAX_CAPTION, fit_caption
from channels.terminal import TerminalChannel, file_size
from channels.xmpp import XmppChannel
from nanoclaw.channel import Ingest
from nanoclaw.errors import DeliveryError, FilesUnsupported, PermanentDeliveryError
from nanoclaw.ipc.staging import RECEIVED_RETENTION
from nanoclaw.store.messages import Store

in_module_loop = pytest.mark.asyncio(loop_scope="module")  # one Synapse, one Matrix bot
NO_MODEL = "http://127.0.0.1:9"  # no test here reaches the model
GROUP = -1001
PW = "pw-for-tests"
BOT = "@andy:localhost"


@pytest.fixture
def payload(tmp_path: Path) -> Path:
    """A binary file with every byte value, as the router's host copy."""
    path = tmp_path / "outbox-copy.bin"
    path.write_bytes(bytes(range(256)) * 40 + os.urandom(1000))
    return path


# Telegram


@pytest.fixture
def tg() -> Iterator[FakeTelegram]:
    with FakeTelegram() as server:
        yield server


@pytest_asyncio.fixture
async def telegram(home: Path, tg: FakeTelegram) -> AsyncIterator[TelegramChannel]:
    settings = settings_for(
        home,
        NO_MODEL,
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


async def test_telegram_uploads_the_bytes_with_name_and_caption(
    telegram: TelegramChannel, tg: FakeTelegram, payload: Path
) -> None:
    caption = "**Q3** figures, <draft> & notes"
    await telegram.send_file(f"tg:{GROUP}", payload, "report.pdf", caption, key="k1")
    [doc] = tg.documents
    assert (doc.chat_id, doc.filename, doc.mime_type) == (GROUP, "report.pdf", "application/pdf")
    assert doc.data == payload.read_bytes()
    assert (doc.parse_mode, doc.visible) == ("HTML", "Q3 figures, <draft> & notes")
    assert "<b>Q3</b>" in doc.caption
    assert tg.sent == []  # the caption travels with the file


async def test_telegram_without_caption_sends_none(
    telegram: TelegramChannel, tg: FakeTelegram, payload: Path
) -> None:
    await telegram.send_file(f"tg:{GROUP}", payload, "data.bin")
    [doc] = tg.documents
    assert (doc.caption, doc.parse_mode, doc.message_thread_id) == ("", None, None)
    assert "caption" not in doc.params


async def test_telegram_file_goes_to_the_forum_topic(
    telegram: TelegramChannel, tg: FakeTelegram, payload: Path
) -> None:
    tg.push_update(tg.text_message(GROUP, "in a topic", thread_id=42))
    await wait_for(lambda: not tg.pending and tg.get_updates_offsets, timeout=15)
    await telegram.send_file(f"tg:{GROUP}", payload, "report.pdf", "here")
    assert tg.documents[0].message_thread_id == 42


async def test_telegram_refused_markup_is_resent_plain_with_the_whole_file(
    telegram: TelegramChannel, tg: FakeTelegram, payload: Path
) -> None:
    tg.fail_next("sendDocument", 400, description="Bad Request: can't parse entities: x")
    await telegram.send_file(f"tg:{GROUP}", payload, "r.pdf", "**bold** move")
    [doc] = tg.documents
    assert (doc.parse_mode, doc.caption) == (None, "bold move")
    assert doc.data == payload.read_bytes()


async def test_telegram_long_caption_is_cut_to_the_limit(
    telegram: TelegramChannel, tg: FakeTelegram, payload: Path
) -> None:
    await telegram.send_file(f"tg:{GROUP}", payload, "r.pdf", "**word** " * 300)
    [doc] = tg.documents
    assert doc.parse_mode is None
    assert doc.visible.startswith("word word") and doc.visible.endswith("…")
    assert visible_length(doc.visible) == MAX_CAPTION


@pytest.mark.parametrize(
    ("status", "description", "permanent", "retry_after"),
    [
        (429, None, False, 7),
        (500, None, False, None),
        (502, None, False, None),
        (400, "Bad Request: chat not found", True, None),
        (403, "Forbidden: bot was kicked from the group chat", True, None),
        (413, "Request Entity Too Large", True, None),
    ],
)
async def test_telegram_errors_map_like_send(
    telegram: TelegramChannel,
    tg: FakeTelegram,
    payload: Path,
    status: int,
    description: str | None,
    permanent: bool,
    retry_after: int | None,
) -> None:
    tg.fail_next("sendDocument", status, description=description, retry_after=retry_after)
    with pytest.raises(DeliveryError) as caught:
        await telegram.send_file(f"tg:{GROUP}", payload, "r.pdf", "c")
    assert isinstance(caught.value, PermanentDeliveryError) is permanent
    assert caught.value.retry_after == retry_after
    assert tg.documents == []


async def test_telegram_a_missing_file_is_permanent(
    telegram: TelegramChannel, tg: FakeTelegram, tmp_path: Path
) -> None:
    with pytest.raises(PermanentDeliveryError):
        await telegram.send_file(f"tg:{GROUP}", tmp_path / "gone.pdf", "gone.pdf")
    assert not any(method == "senddocument" for method, _ in tg.calls)


def test_fit_caption() -> None:
    assert fit_caption("**short**") == ("**short**", True)
    text, markup = fit_caption("😀" * 600)  # 1200 UTF-16 units: cut between pairs
    assert not markup and text.endswith("…")
    assert visible_length(text) <= MAX_CAPTION and "\ud83d" not in text


# Matrix


@pytest.fixture(scope="module")
def synapse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Synapse]:
    with running(tmp_path_factory.mktemp("synapse"), ("andy", "alice"), PW) as server:
        yield server


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def matrix(
    synapse: Synapse, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[MatrixChannel]:
    home = tmp_path_factory.mktemp("mx-home")
    settings = settings_for(
        home,
        NO_MODEL,
        MATRIX_HOMESERVER=synapse.url,
        MATRIX_USER_ID=BOT,
        MATRIX_PASSWORD=PW,
        ALLOWED_SENDERS="mx:@alice:localhost",
    )
    store = await Store.open(settings.layout.db)
    channel = MatrixChannel(settings, home / "matrix")
    await channel.start(Ingest(store))
    await asyncio.wait_for(channel.ready.wait(), 30)
    yield channel
    await channel.stop()
    await store.close()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def alice(synapse: Synapse) -> AsyncIterator[Human]:
    human = await Human.login(synapse, "alice", PW)
    yield human
    await human.close()


async def room_with_bot(alice: Human) -> str:
    return await alice.room_with(BOT, "files")


def media_files(synapse: Synapse) -> int:
    return sum(1 for f in (synapse.dir / "media" / "local_content").rglob("*") if f.is_file())


def said_by_bot(room: str) -> Callable[[Seen], bool]:
    return lambda e: e.room_id == room and e.sender == BOT and e.type == "m.room.message"


@in_module_loop
async def test_matrix_file_can_be_downloaded_back(
    matrix: MatrixChannel, alice: Human, payload: Path
) -> None:
    room = await room_with_bot(alice)
    await matrix.send_file(f"mx:{room}", payload, "report.pdf", "the **Q3** figures", key="f1")
    event = await alice.wait_event(said_by_bot(room), timeout=30)
    content = event.source["content"]
    assert (event.msgtype, content["filename"]) == ("m.file", "report.pdf")
    assert content["info"] == {"size": payload.stat().st_size, "mimetype": "application/pdf"}
    got = await alice.client.download(mxc=content["url"])
    assert got.body == payload.read_bytes()
    assert event.body == "the **Q3** figures"  # the caption is the body (Matrix 1.10)
    assert "<b>Q3</b>" in event.formatted_body


@in_module_loop
async def test_matrix_image_is_m_image_and_retries_post_once(
    matrix: MatrixChannel, alice: Human, payload: Path, synapse: Synapse
) -> None:
    room = await room_with_bot(alice)
    stored = media_files(synapse)
    for _ in range(2):  # a retry with the same key
        await matrix.send_file(f"mx:{room}", payload, "chart.png", "a chart", key="img-1")
    assert media_files(synapse) == stored + 1  # the retry reused the upload
    await matrix.send(f"mx:{room}", "marker", key="marker-1")
    await alice.wait_event(lambda e: e.room_id == room and e.body == "marker", timeout=30)
    from_bot = [e for e in alice.events if said_by_bot(room)(e)]
    assert [(e.msgtype, e.body) for e in from_bot] == [
        ("m.image", "a chart"),  # the caption, beside filename chart.png
        ("m.text", "marker"),
    ]
    assert from_bot[0].source["content"]["info"]["mimetype"] == "image/png"


@in_module_loop
async def test_matrix_errors_map_like_send(matrix: MatrixChannel, payload: Path) -> None:
    with pytest.raises(PermanentDeliveryError):  # not a member: M_FORBIDDEN
        await matrix.send_file("mx:!nowhere:localhost", payload, "r.pdf", key="f-err")
    with pytest.raises(PermanentDeliveryError):
        await matrix.send_file("mx:!nowhere:localhost", payload.with_name("gone"), "gone")


# XMPP


@pytest.fixture
def prosody(tmp_path: Path) -> Iterator[Prosody]:
    server = Prosody(tmp_path / "prosody")
    server.start()
    server.register("andy", PW)
    try:
        yield server
    finally:
        server.stop()


async def test_xmpp_says_files_are_unsupported(home: Path, prosody: Prosody, payload: Path) -> None:
    settings = settings_for(
        home,
        NO_MODEL,
        XMPP_JID=prosody.jid("andy"),
        XMPP_PASSWORD=PW,
        XMPP_SERVER=f"127.0.0.1:{prosody.port}",
        XMPP_TLS="off",
    )
    store = await Store.open(settings.layout.db)
    channel = XmppChannel(settings, settings.layout.store / "xmpp")
    await channel.start(Ingest(store))
    try:
        await asyncio.wait_for(channel.wait_online(), 30)
        with pytest.raises(FilesUnsupported, match="XEP-0363"):
            await channel.send_file(f"xmpp:{prosody.jid('alice')}", payload, "r.pdf", "c")
    finally:
        await channel.stop()
        await store.close()


# Terminal


async def test_terminal_prints_where_the_file_is(payload: Path) -> None:
    out = io.StringIO()
    channel = TerminalChannel("Andy", out=out)
    channel.current = "term:main"
    await channel.send_file("term:main", payload, "report.pdf", "the figures")
    size = file_size(payload.stat().st_size)
    assert out.getvalue() == f"Andy: 📎 report.pdf ({size}) saved at {payload}\nthe figures\n"
    await channel.send_file("term:work", payload, "r.pdf")
    assert out.getvalue().endswith(f"Andy [work]: 📎 r.pdf ({size}) saved at {payload}\n")
    with pytest.raises(PermanentDeliveryError):
        await channel.send_file("term:main", payload.with_name("gone"), "gone")


async def test_terminal_keeps_its_own_copy_under_a_free_name(payload: Path, tmp_path: Path) -> None:
    out = io.StringIO()
    received = tmp_path / "received"
    channel = TerminalChannel("Andy", out=out, received=received)
    await channel.send_file("term:main", payload, "report.pdf")
    await channel.send_file("term:main", payload, "report.pdf")
    payload.unlink()  # the router deletes its copy once the row is settled
    kept = sorted(p.name for p in received.iterdir())
    assert kept == ["report (2).pdf", "report.pdf"]
    assert f"saved at {received / 'report (2).pdf'}" in out.getvalue()
    assert (received / "report.pdf").read_bytes() == (received / "report (2).pdf").read_bytes()


@pytest.mark.parametrize(
    ("size", "shown"),
    [(0, "0 B"), (999, "999 B"), (12_345, "12.3 kB"), (999_950, "1.0 MB"), (4_500_000, "4.5 MB")],
)
def test_file_size(size: int, shown: str) -> None:
    assert file_size(size) == shown


async def test_terminal_sweeps_kept_files_past_their_retention(
    payload: Path, tmp_path: Path
) -> None:
    received = tmp_path / "received"
    received.mkdir()
    old = time.time() - RECEIVED_RETENTION.max_age_s - 60
    (received / "last-month.pdf").write_bytes(b"old")
    os.utime(received / "last-month.pdf", (old, old))
    (received / "yesterday.pdf").write_bytes(b"recent")
    channel = TerminalChannel("Andy", out=io.StringIO(), received=received)
    await channel.send_file("term:main", payload, "report.pdf")
    assert sorted(p.name for p in received.iterdir()) == ["report.pdf", "yesterday.pdf"]
