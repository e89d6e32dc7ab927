"""XMPP files both ways against a real Prosody with mod_http_file_share on loopback: the
channel's Attachments (handed to a recording Inbound) and its uploads, byte for byte."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import datetime
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
from conftest import settings_for, wait_for
from prosody import Client, Prosody
from test_xmpp_media import Listener

from channels.xmpp import XmppChannel
from nanoclaw.channel import Inbound, Ingest
from nanoclaw.config import Settings
from nanoclaw.errors import FilesUnsupported, PermanentDeliveryError
from nanoclaw.media.saver import media_saver
from nanoclaw.models import Attachment, Group, InboundMessage, Message
from nanoclaw.store.messages import Store

PW = "pw-for-tests"
LIMIT = 1024 * 1024  # the server's upload limit
CAP_MB = 0.25  # MEDIA_MAX_MB in these tests
CAP = int(CAP_MB * 1024 * 1024)


class Recording:
    """An Inbound that keeps what the channel hands over."""

    def __init__(self) -> None:
        self.messages: list[InboundMessage] = []

    async def message(self, msg: InboundMessage) -> int | None:
        self.messages.append(msg)
        return len(self.messages)

    async def unserved(self, msg: InboundMessage) -> None:
        raise AssertionError(f"unserved {msg}")

    async def chat_seen(self, chat_id: str, name: str, is_group: bool) -> None:
        return None

    async def folder_of(self, chat_id: str) -> str | None:
        return "main"

    async def pairing_open_until(self) -> int | None:
        return None


async def fetched(attachment: Attachment) -> bytes:
    return b"".join([chunk async for chunk in attachment.fetch()])


def make_server(path: Path, upload: bool) -> Prosody:
    server = Prosody(path, upload_limit=LIMIT if upload else None)
    server.start()
    try:
        for user in ("andy", "alice"):
            server.register(user, PW)
    except BaseException:
        server.stop()
        raise
    return server


@pytest.fixture
def prosody(tmp_path: Path) -> Iterator[Prosody]:
    server = make_server(tmp_path / "prosody", upload=True)
    yield server
    server.stop()


def channel_settings(home: Path, server: Prosody) -> Settings:
    return settings_for(
        home,
        "http://127.0.0.1:9",
        XMPP_JID=server.jid("andy"),
        XMPP_PASSWORD=PW,
        XMPP_SERVER=f"127.0.0.1:{server.port}",
        XMPP_TLS="off",
        ALLOWED_SENDERS=f"xmpp:{server.jid('alice')}",
        MEDIA_MAX_MB=str(CAP_MB),
    )


async def start_channel(
    home: Path, server: Prosody, inbound: Inbound | None = None
) -> tuple[XmppChannel, Inbound]:
    channel = XmppChannel(channel_settings(home, server), home / "xmpp-state")
    inbound = inbound or Recording()
    await channel.start(inbound)
    try:
        await asyncio.wait_for(channel.wait_online(), 30)
    except BaseException:
        await channel.stop()
        raise
    return channel, inbound


@pytest_asyncio.fixture
async def bot(home: Path, prosody: Prosody) -> AsyncIterator[tuple[XmppChannel, Recording]]:
    inbound = Recording()
    channel, _ = await start_channel(home, prosody, inbound)
    yield channel, inbound
    await channel.stop()


@pytest_asyncio.fixture
async def alice(prosody: Prosody) -> AsyncIterator[Client]:
    client = await Client.connect(prosody, "alice", PW)
    yield client
    await client.disconnect()


async def http_get(url: str) -> bytes:
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        assert resp.status == 200, resp.status
        return await resp.read()


async def next_message(inbound: Recording, seen: int) -> InboundMessage:
    await wait_for(lambda: len(inbound.messages) > seen, 20)
    return inbound.messages[seen]


async def test_bot_sends_a_file_the_peer_downloads_the_same_bytes(
    bot: tuple[XmppChannel, Recording], alice: Client, prosody: Prosody, tmp_path: Path
) -> None:
    channel, _ = bot
    data = os.urandom(300_000)
    (tmp_path / "out.png").write_bytes(data)
    await channel.send_file(
        f"xmpp:{alice.jid}", tmp_path / "out.png", "chart.png", "the chart", "k1"
    )
    shared = await alice.wait_message(lambda m: bool(m.oob))
    assert shared.body == shared.oob and shared.oob.endswith("/chart.png")
    assert shared.oob.startswith(f"http://localhost:{prosody.http_port}/")
    assert await http_get(shared.oob) == data
    caption = await alice.wait_message(lambda m: m.body == "the chart")
    assert caption.oob == ""


async def test_a_file_over_the_servers_limit_is_refused_before_uploading(
    bot: tuple[XmppChannel, Recording], alice: Client, tmp_path: Path
) -> None:
    channel, _ = bot
    (tmp_path / "big.bin").write_bytes(b"\0" * (LIMIT + 1))
    with pytest.raises(PermanentDeliveryError, match="over the server's upload limit of 1048576"):
        await channel.send_file(f"xmpp:{alice.jid}", tmp_path / "big.bin", "big.bin")


async def test_no_upload_service_means_files_unsupported(home: Path, tmp_path: Path) -> None:
    server = make_server(tmp_path / "bare", upload=False)
    try:
        channel, _ = await start_channel(home, server)
        try:
            (tmp_path / "a.txt").write_text("hi")
            with pytest.raises(FilesUnsupported, match="no HTTP File Upload"):
                await channel.send_file(f"xmpp:{server.jid('alice')}", tmp_path / "a.txt", "a.txt")
        finally:
            await channel.stop()
    finally:
        server.stop()


async def test_a_peers_shared_file_becomes_an_attachment_with_the_same_bytes(
    bot: tuple[XmppChannel, Recording], alice: Client, prosody: Prosody, tmp_path: Path
) -> None:
    _, inbound = bot
    andy = prosody.jid("andy")
    photo = os.urandom(50_000)
    (tmp_path / "holiday photo.jpg").write_bytes(photo)
    url = await alice.upload(tmp_path / "holiday photo.jpg")
    alice.send_chat(andy, url, oob=url)  # as Conversations shares it: the body is the link
    msg = await next_message(inbound, 0)
    assert msg.text == "" and msg.chat_id == f"xmpp:{prosody.jid('alice')}"
    [att] = msg.attachments
    assert (att.kind, att.name, att.mime) == ("image", "holiday photo.jpg", "image/jpeg")
    assert await fetched(att) == photo

    voice = os.urandom(20_000)
    (tmp_path / "rec.m4a").write_bytes(voice)
    url = await alice.upload(tmp_path / "rec.m4a")
    alice.send_chat(andy, f"listen to this\n{url}", oob=url)
    msg = await next_message(inbound, 1)
    assert msg.text == "listen to this"
    [att] = msg.attachments
    assert (att.kind, att.name) == ("voice", "rec.m4a")
    assert await fetched(att) == voice


async def test_an_oversize_shared_file_stops_one_byte_past_the_cap(
    bot: tuple[XmppChannel, Recording], alice: Client, prosody: Prosody, tmp_path: Path
) -> None:
    _, inbound = bot
    (tmp_path / "huge.pdf").write_bytes(os.urandom(CAP * 3))
    url = await alice.upload(tmp_path / "huge.pdf")
    alice.send_chat(prosody.jid("andy"), url, oob=url)
    [att] = (await next_message(inbound, 0)).attachments
    assert att.kind == "file"
    assert len(await fetched(att)) == CAP + 1  # the saver sees it is over and refuses it


async def test_links_to_foreign_hosts_are_refused_without_a_connection(
    bot: tuple[XmppChannel, Recording], alice: Client, prosody: Prosody
) -> None:
    _, inbound = bot
    nearby = Listener("127.0.0.2")
    try:
        links = [f"http://127.0.0.2:{nearby.port}/x.jpg", "https://evil.example/x.pdf"]
        for n, url in enumerate(links):
            alice.send_chat(prosody.jid("andy"), f"look\n{url}", oob=url)
            msg = await next_message(inbound, n)
            for att in msg.attachments:  # none expected; a saver would fetch any there is
                await fetched(att)
            assert msg.attachments == ()
            what = "photo" if url.endswith(".jpg") else "file"
            assert msg.text.startswith(f"look\n[{what} not downloaded: {url} (")
            assert "is not the upload service of your XMPP server or of the sender's" in msg.text
        await nearby.assert_untouched()
    finally:
        nearby.close()


async def test_links_to_the_own_server_outside_its_file_share_are_refused(
    bot: tuple[XmppChannel, Recording], alice: Client, prosody: Prosody
) -> None:
    """The bot's own server is often this very host: a sender's link to another port or
    path of it is not fetched (the share's place was learnt from a slot at login)."""
    _, inbound = bot
    other = Listener("127.0.0.1")
    try:
        links = [
            f"http://localhost:{other.port}/file_share/x/metrics.jpg",
            f"http://localhost:{prosody.http_port}/admin/x/y.jpg",
        ]
        for n, url in enumerate(links):
            alice.send_chat(prosody.jid("andy"), url, oob=url)
            msg = await next_message(inbound, n)
            assert msg.attachments == (), url
            assert "not where its upload service keeps files" in msg.text, msg.text
        await other.assert_untouched()
    finally:
        other.close()


async def test_a_shared_file_lands_in_the_groups_inbox_through_the_ingest(
    home: Path, prosody: Prosody, alice: Client, store: Store, tmp_path: Path
) -> None:
    """End to end: a peer's HTTP File Upload share, the daemon's own Ingest and saver, the
    real store: the file in groups/<g>/inbox/<day>/ byte for byte and the path in the text;
    a share over MEDIA_MAX_MB stored with the reason and no file."""
    peer = f"xmpp:{prosody.jid('alice')}"
    await store.save_group(Group("team", "team", chats=(peer,), requires_trigger=False))
    settings = channel_settings(home, prosody)
    channel, _ = await start_channel(home, prosody, Ingest(store, media=media_saver(settings)))
    try:
        photo = os.urandom(40_000)
        (tmp_path / "beach.jpg").write_bytes(photo)
        url = await alice.upload(tmp_path / "beach.jpg")
        alice.send_chat(prosody.jid("andy"), f"from the trip\n{url}", oob=url)
        (tmp_path / "huge.pdf").write_bytes(os.urandom(CAP * 2))
        big = await alice.upload(tmp_path / "huge.pdf")
        alice.send_chat(prosody.jid("andy"), big, oob=big)

        async def stored() -> list[Message]:
            return list(await store.messages_for_folder("team", 0))

        texts = [m.text for m in await wait_for(lambda: _two(stored), 30)]
    finally:
        await channel.stop()
    day = datetime.now(settings.zone).strftime("%Y-%m-%d")
    assert texts[0].startswith(f"from the trip\n[photo saved: /workspace/inbox/{day}/beach.jpg")
    assert (home / "groups" / "team" / "inbox" / day / "beach.jpg").read_bytes() == photo
    assert texts[1].startswith("[file not saved: huge.pdf is over"), texts[1]
    assert not (home / "groups" / "team" / "inbox" / day / "huge.pdf").exists()


async def _two(stored: Callable[[], Awaitable[list[Message]]]) -> list[Message] | None:
    got = await stored()
    return got if len(got) >= 2 else None
