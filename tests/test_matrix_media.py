"""Matrix media both ways against a real Synapse: a person's m.image/m.file/m.audio/m.video
reaches the channel's Inbound as an Attachment whose fetch() yields the uploaded bytes through
authenticated media, and the bot's files arrive as m.image/m.audio/m.video/m.file with the
caption in the same event."""

from __future__ import annotations

import asyncio
import io
import os
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import nio
import pytest
import pytest_asyncio
from conftest import make_home, settings_for
from PIL import Image
from synapse import Human, Seen, Synapse, running

from channels.matrix import MatrixChannel
from channels.matrix_media import ENCRYPTED, MAX_CAPTION, MediaUnavailable
from nanoclaw.channel import Ingest
from nanoclaw.media.saver import media_saver
from nanoclaw.models import Attachment, Group, InboundMessage
from nanoclaw.store.messages import Store

pytestmark = pytest.mark.asyncio(loop_scope="module")  # one Synapse, one bot, one alice
PW = "pw-for-tests"
BOT = "@andy:localhost"


class Recorder:
    """An Inbound that keeps what the channel hands it (the ingest's saving is not ours)."""

    def __init__(self) -> None:
        self.messages: list[InboundMessage] = []
        self._changed = asyncio.Event()

    async def message(self, msg: InboundMessage) -> int | None:
        self.messages.append(msg)
        self._changed.set()
        return len(self.messages)

    async def unserved(self, msg: InboundMessage) -> None:
        return None

    async def chat_seen(self, chat_id: str, name: str, is_group: bool) -> None:
        return None

    async def folder_of(self, chat_id: str) -> str | None:
        return None

    async def pairing_open_until(self) -> int | None:
        return None

    async def wait(self, platform_id: str, timeout: float = 30) -> InboundMessage:
        async with asyncio.timeout(timeout):
            while True:
                for msg in self.messages:
                    if msg.platform_id == platform_id:
                        return msg
                self._changed.clear()
                await self._changed.wait()


@pytest.fixture(scope="module")
def synapse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Synapse]:
    with running(tmp_path_factory.mktemp("synapse"), ("andy", "alice"), PW) as server:
        yield server


@pytest.fixture(scope="module")
def inbound() -> Recorder:
    return Recorder()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def matrix(
    synapse: Synapse, inbound: Recorder, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[MatrixChannel]:
    home = tmp_path_factory.mktemp("mx-home")
    settings = settings_for(
        home,
        "http://127.0.0.1:9",  # no model here
        MATRIX_HOMESERVER=synapse.url,
        MATRIX_USER_ID=BOT,
        MATRIX_PASSWORD=PW,
        ALLOWED_SENDERS="mx:@alice:localhost",
    )
    channel = MatrixChannel(settings, home / "matrix")
    await channel.start(inbound)
    await asyncio.wait_for(channel.ready.wait(), 30)
    yield channel
    await channel.stop()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def alice(synapse: Synapse) -> AsyncIterator[Human]:
    human = await Human.login(synapse, "alice", PW)
    yield human
    await human.close()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def room(matrix: MatrixChannel, alice: Human) -> str:
    """A room alice made and the bot joined."""
    return await alice.room_with(BOT, "media")


def png(size: tuple[int, int] = (64, 48)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (10, 120, 200)).save(out, format="PNG")
    return out.getvalue()


async def upload(human: Human, data: bytes, mime: str, name: str) -> str:
    resp, _ = await human.client.upload(
        lambda *_: io.BytesIO(data), content_type=mime, filename=name, filesize=len(data)
    )
    assert isinstance(resp, nio.UploadResponse), resp
    return str(resp.content_uri)


async def fetched(attachment: Attachment) -> bytes:
    return b"".join([chunk async for chunk in attachment.fetch()])


async def send_media(
    alice: Human, room: str, inbound: Recorder, content: dict[str, Any]
) -> InboundMessage:
    event_id = await alice.send(room, "m.room.message", content)
    return await inbound.wait(event_id)


# inbound


async def test_an_image_with_a_caption_is_an_attachment_with_the_same_bytes(
    matrix: MatrixChannel, alice: Human, room: str, inbound: Recorder, synapse: Synapse
) -> None:
    data = png()
    url = await upload(alice, data, "image/png", "cat.png")
    info = {"mimetype": "image/png", "size": len(data), "w": 64, "h": 48}
    content = {"msgtype": "m.image", "body": "@Andy what is this", "filename": "cat.png"}
    msg = await send_media(alice, room, inbound, {**content, "url": url, "info": info})
    assert msg.text == "@Andy what is this"  # the caption, no placeholder beside it
    [att] = msg.attachments
    assert (att.kind, att.name, att.mime, att.size) == ("image", "cat.png", "image/png", len(data))
    assert await fetched(att) == data
    # The server requires authenticated media: the old unauthenticated path knows it not.
    media_id = url.rsplit("/", 1)[1]
    old = f"{synapse.url}/_matrix/media/v3/download/localhost/{media_id}"
    with pytest.raises(urllib.error.HTTPError) as refused:
        await asyncio.to_thread(urllib.request.urlopen, old, timeout=10)
    assert refused.value.code == 404


async def test_a_file_without_caption_has_empty_text(
    matrix: MatrixChannel, alice: Human, room: str, inbound: Recorder
) -> None:
    data = b"%PDF-1.4\n" + os.urandom(300_000)  # several chunks
    url = await upload(alice, data, "application/pdf", "report.pdf")
    info = {"mimetype": "application/pdf", "size": len(data)}
    content = {"msgtype": "m.file", "body": "report.pdf", "filename": "report.pdf"}
    msg = await send_media(alice, room, inbound, {**content, "url": url, "info": info})
    assert msg.text == ""
    [att] = msg.attachments
    assert (att.kind, att.name, att.mime, att.size) == (
        "file",
        "report.pdf",
        "application/pdf",
        len(data),
    )
    assert await fetched(att) == data


@pytest.mark.parametrize(
    ("msgtype", "extra", "kind"),
    [
        ("m.audio", {"org.matrix.msc3245.voice": {}}, "voice"),
        ("m.audio", {}, "audio"),
        ("m.video", {}, "video"),
    ],
)
async def test_audio_voice_and_video(
    matrix: MatrixChannel,
    alice: Human,
    room: str,
    inbound: Recorder,
    msgtype: str,
    extra: dict[str, Any],
    kind: str,
) -> None:
    data = os.urandom(5000)
    mime = "video/mp4" if kind == "video" else "audio/ogg"
    url = await upload(alice, data, mime, "clip")
    content = {"msgtype": msgtype, "body": "Voice message", "url": url, **extra}  # no filename
    msg = await send_media(alice, room, inbound, {**content, "info": {"mimetype": mime}})
    assert msg.text == ""  # an old-style body is the file's name
    [att] = msg.attachments
    assert (att.kind, att.name, att.mime, att.size) == (kind, "Voice message", mime, None)
    assert await fetched(att) == data


@pytest.mark.parametrize(
    ("media", "why"),
    [
        ({"url": "https://evil.example/cat.png"}, "a https: link, and only mxc:// media"),
        ({"url": "mxc://localhost/../../admin"}, "only mxc:// media is fetched"),
        ({"url": "mxc://localhost/NoSuchMedia"}, "the homeserver answered 404 M_NOT_FOUND"),
        ({"file": {"url": "mxc://localhost/x", "key": {}}}, "end-to-end encrypted"),
    ],
)
async def test_media_that_cannot_be_fetched_says_why(
    matrix: MatrixChannel,
    alice: Human,
    room: str,
    inbound: Recorder,
    media: dict[str, Any],
    why: str,
) -> None:
    content = {"msgtype": "m.image", "body": "look", "filename": "x.png", **media}
    msg = await send_media(alice, room, inbound, content)
    assert msg.text == "look"
    [att] = msg.attachments
    with pytest.raises(MediaUnavailable, match=why.replace(".", r"\.")):
        await fetched(att)


async def test_an_image_and_an_encrypted_file_through_the_daemons_ingest(
    matrix: MatrixChannel, alice: Human, room: str, inbound: Recorder, tmp_path: Path
) -> None:
    """The Attachments the channel handed over, through the daemon's own Ingest and saver
    into a real store: the uploaded bytes in the group's inbox and the path in the text; an
    encrypted file stored with the reason, no file."""
    data = png((32, 32))
    url = await upload(alice, data, "image/png", "plan.png")
    info = {"mimetype": "image/png", "size": len(data)}
    content = {"msgtype": "m.image", "body": "the plan", "filename": "plan.png"}
    image = await send_media(alice, room, inbound, {**content, "url": url, "info": info})
    secret = {"msgtype": "m.file", "body": "keys.txt", "file": {"url": url, "key": {}}}
    encrypted = await send_media(alice, room, inbound, secret)
    home = make_home(tmp_path / "home")
    chat = image.chat_id
    store = await Store.open(home / "store" / "nanoclaw.db")
    try:
        await store.save_group(Group("team", "team", chats=(chat,), requires_trigger=False))
        ingest = Ingest(store, media=media_saver(settings_for(home, "http://127.0.0.1:9")))
        for msg in (image, encrypted):
            assert await ingest.message(msg) is not None
        texts = [m.text for m in await store.messages_for_folder("team", 0)]
    finally:
        await store.close()
    [day_dir] = list((home / "groups" / "team" / "inbox").iterdir())  # today, in TZ
    assert texts[0].startswith(f"the plan\n[photo saved: /workspace/inbox/{day_dir.name}/plan.png")
    assert (day_dir / "plan.png").read_bytes() == data
    assert texts[1] == f"[file not saved: {ENCRYPTED}]", texts[1]
    assert sorted(p.name for p in day_dir.iterdir()) == ["plan.png"]


async def test_media_with_no_file_keeps_the_placeholder(
    matrix: MatrixChannel, alice: Human, room: str, inbound: Recorder
) -> None:
    content = {"msgtype": "m.image", "body": "look", "filename": "x.png"}  # neither url nor file
    msg = await send_media(alice, room, inbound, content)
    assert (msg.text, msg.attachments) == ("look [Image: x.png]", ())


# outbound


def said_by_bot(room: str) -> Callable[[Seen], bool]:
    return lambda e: e.room_id == room and e.sender == BOT and e.type == "m.room.message"


async def test_the_bots_png_is_an_m_image_with_its_caption_and_bytes(
    matrix: MatrixChannel, alice: Human, room: str, tmp_path: Path
) -> None:
    path = tmp_path / "outbox-copy"
    path.write_bytes(png((320, 200)))
    await matrix.send_file(f"mx:{room}", path, "chart.png", "the **Q3** chart", key="png-1")
    await matrix.send(f"mx:{room}", "marker", key="png-marker")
    event = await alice.wait_event(said_by_bot(room), timeout=30)
    content = event.source["content"]
    assert (event.msgtype, event.body, content["filename"]) == (
        "m.image",
        "the **Q3** chart",
        "chart.png",
    )
    assert content["info"] == {
        "mimetype": "image/png",
        "size": len(path.read_bytes()),
        "w": 320,
        "h": 200,
    }
    assert (content["format"], event.formatted_body) == (
        "org.matrix.custom.html",
        "the <b>Q3</b> chart",
    )
    got = await alice.client.download(mxc=content["url"])
    assert isinstance(got, nio.MemoryDownloadResponse) and got.body == path.read_bytes()
    marker = await alice.wait_event(said_by_bot(room), timeout=30)
    assert marker.body == "marker"  # no second message carried the caption


@pytest.mark.parametrize(
    ("name", "msgtype", "mimetype"),
    [
        ("voice.ogg", "m.audio", "audio/ogg"),
        ("clip.mp4", "m.video", "video/mp4"),
        ("report.pdf", "m.file", "application/pdf"),
        ("notes.png", "m.image", "image/png"),  # the name says image though Pillow cannot read it
    ],
)
async def test_audio_video_and_files_get_their_msgtype(
    matrix: MatrixChannel,
    alice: Human,
    room: str,
    tmp_path: Path,
    name: str,
    msgtype: str,
    mimetype: str,
) -> None:
    path = tmp_path / "outbox-copy"
    path.write_bytes(os.urandom(4000))
    await matrix.send_file(f"mx:{room}", path, name)
    event = await alice.wait_event(said_by_bot(room), timeout=30)
    content = event.source["content"]
    assert (event.msgtype, event.body, content["filename"]) == (msgtype, name, name)
    assert content["info"] == {"mimetype": mimetype, "size": 4000}
    assert "formatted_body" not in content


async def test_a_caption_too_long_for_the_event_follows_as_text(
    matrix: MatrixChannel, alice: Human, room: str, tmp_path: Path
) -> None:
    path = tmp_path / "outbox-copy"
    path.write_bytes(b"%PDF-1.4\n")
    caption = "word " * (MAX_CAPTION // 5 + 1)
    await matrix.send_file(f"mx:{room}", path, "r.pdf", caption, key="long-1")
    event = await alice.wait_event(said_by_bot(room), timeout=30)
    assert (event.msgtype, event.body) == ("m.file", "r.pdf")
    text = await alice.wait_event(said_by_bot(room), timeout=30)
    assert (text.msgtype, text.body) == ("m.text", caption)
