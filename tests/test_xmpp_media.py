"""XMPP file sharing decisions (pure) and the guarded download against a real local server."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import pytest
from aiohttp import web
from served import Served

from channels.xmpp_media import (
    UploadService,
    address_refusal,
    caption_of,
    media_kind,
    name_from_url,
    own_refusal,
    refused_note,
    share_prefix,
    slot_headers,
    upload_refusal,
    url_refusal,
)
from channels.xmpp_message import Seen, ignore_reason, sender_domain
from channels.xmpp_upload import FetchFailed, download

OWN = frozenset({"example.org", "upload.example.org"})
BODY = bytes(range(256)) * 400  # 102400 bytes


@pytest.mark.parametrize(
    ("url", "prefix"),
    [
        (
            "https://upload.example.org:5281/file_share/abc/cat.jpg",
            "https://upload.example.org:5281/file_share/",
        ),
        ("https://Example.ORG/upload/h1/x.pdf", "https://example.org:443/upload/"),
        ("http://localhost:8080/file_share/a/b", "http://localhost:8080/file_share/"),
        # dot segments resolved as the download would: the place is where it really goes
        ("https://example.org/file_share/../admin/x", "https://example.org:443/admin/"),
        ("https://example.org/file_share/a/../../x/y", "https://example.org:443/x/"),
        ("https://example.org/x", None),  # no file under a place
        ("https://example.org:99999/file_share/a/b", None),
        ("not a url", None),
    ],
)
def test_share_prefix(url: str, prefix: str | None) -> None:
    assert share_prefix(url) == prefix


def test_own_server_links_only_where_its_upload_service_keeps_files() -> None:
    places = frozenset({"https://upload.example.org:5281/file_share/"})
    assert own_refusal("https://upload.example.org:5281/file_share/u/cat.jpg", places) is None
    for url in (
        "https://upload.example.org:5280/file_share/u/cat.jpg",  # another port
        "https://upload.example.org:5281/admin/u/cat.jpg",  # another path
        "https://upload.example.org:5281/file_share/../admin/x.jpg",  # a way out of it
        "http://upload.example.org:5281/file_share/u/cat.jpg",  # another scheme
    ):
        assert own_refusal(url, places) == (
            "it is on your XMPP server but not where its upload service keeps files"
        ), url
    assert own_refusal("https://example.org:1/anything/x/y", frozenset()) is None  # unknown


class Listener:
    """A listening socket that proves nobody connected to it before a marker connection."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.sock = socket.socket()
        self.sock.bind((host, 0))
        self.sock.listen(8)
        self.sock.setblocking(False)
        self.host, self.port = host, int(self.sock.getsockname()[1])

    async def assert_untouched(self) -> None:
        """Connect ourselves: the first connection accepted must be this marker."""
        marker = socket.create_connection((self.host, self.port), timeout=5)
        try:
            loop = asyncio.get_running_loop()
            conn, peer = await asyncio.wait_for(loop.sock_accept(self.sock), 5)
            conn.close()
            assert peer == marker.getsockname(), f"{peer} connected before the marker"
        finally:
            marker.close()

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    sock = Listener("127.0.0.2")
    yield sock
    sock.close()


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("IMG_2024.JPG", "image"),
        ("a.webp", "image"),
        ("voice-message.m4a", "voice"),
        ("rec.oga", "voice"),
        ("rec.opus", "voice"),
        ("song.mp3", "audio"),
        ("clip.mp4", "video"),
        ("report.pdf", "file"),
        ("noext", "file"),
    ],
)
def test_media_kind(name: str, kind: str) -> None:
    assert media_kind(name) == kind


@pytest.mark.parametrize(
    ("url", "name"),
    [
        ("https://up.example.org/file_share/abc/my%20report%20%C3%BC.pdf", "my report ü.pdf"),
        ("https://up.example.org/a/..%2F..%2Fetc%2Fpasswd", "passwd"),
        ("https://up.example.org/a/x%5C..%5Cwin.ini", "win.ini"),
        ("https://up.example.org/", "file"),
        ("https://up.example.org/a/..", "file"),
        ("https://up.example.org/a/photo.jpg?sig=1#frag", "photo.jpg"),
    ],
)
def test_name_from_url(url: str, name: str) -> None:
    assert name_from_url(url) == name


def test_caption_drops_only_the_link_lines() -> None:
    url = "https://upload.example.org/s/x.jpg"
    assert caption_of(url, (url,)) == ""
    assert caption_of(f"look at this\n{url}\n", (url,)) == "look at this"
    assert caption_of(f"see {url} here", (url,)) == f"see {url} here"


@pytest.mark.parametrize(
    ("url", "sender", "allow_http", "refused"),
    [
        ("https://upload.example.org/s/x.jpg", set(), False, None),
        ("https://example.org:5443/upload/x.jpg", set(), False, None),  # ejabberd's default
        ("https://UPLOAD.example.org./s/x.jpg", set(), False, None),
        ("http://upload.example.org/s/x.jpg", set(), False, "only https"),
        ("http://upload.example.org/s/x.jpg", set(), True, None),
        ("ftp://upload.example.org/x.jpg", set(), True, "only https"),
        ("file:///etc/passwd", set(), True, "only https"),
        ("https://evil.example/x.jpg", set(), False, "evil.example is not the upload service"),
        ("https://upload.other.net/x", {"other.net", "upload.other.net"}, False, None),
        ("https://evil.example/x", {"other.net", "upload.other.net"}, False, "not the upload"),
        ("https://10.0.0.5/x.jpg", {"other.net", "10.0.0.5"}, False, "private address"),
        ("https://user:pw@upload.example.org/x", set(), False, "credentials"),
        ("https://upload.example.org:99999/x", set(), False, "not a valid link"),
        ("https:///x", set(), False, "no host"),
    ],
)
def test_url_refusal(url: str, sender: set[str], allow_http: bool, refused: str | None) -> None:
    got = url_refusal(url, OWN, frozenset(sender), allow_http)
    if refused is None:
        assert got is None
    else:
        assert got is not None and refused in got


def test_own_server_may_be_on_a_private_address() -> None:
    own = frozenset({"192.168.1.10"})
    assert url_refusal("https://192.168.1.10/s/x", own, frozenset(), False) is None


@pytest.mark.parametrize(
    ("addresses", "refused"),
    [
        (["93.184.216.34"], False),
        (["2606:2800:220:1:248:1893:25c8:1946"], False),
        (["93.184.216.34", "127.0.0.1"], True),
        (["10.1.2.3"], True),
        (["169.254.169.254"], True),
        (["::1"], True),
        (["::ffff:10.0.0.1"], True),
        (["fd00::1"], True),
        ([], True),
    ],
)
def test_address_refusal(addresses: list[str], refused: bool) -> None:
    assert (address_refusal("h.example", addresses) is not None) is refused


def test_refused_note_names_the_link_and_why() -> None:
    note = refused_note("https://evil.example/cat.png", "evil.example is not ...")
    assert note == "[photo not downloaded: https://evil.example/cat.png (evil.example is not ...)]"


def test_upload_refusal_and_slot_headers() -> None:
    service = UploadService("upload.example.org", 1000)
    assert upload_refusal(1000, "a.bin", service) is None
    why = upload_refusal(1001, "a.bin", service)
    assert why is not None and "a.bin is 1001 bytes, over the server's upload limit of 1000" in why
    assert upload_refusal(10**12, "a.bin", UploadService("u", None)) is None
    headers = {"Authorization": "Basic x", "Host": "evil", "Cookie": "a\nb", "X-Other": "1"}
    assert slot_headers(headers) == {"Authorization": "Basic x", "Cookie": "ab"}


def test_a_link_without_a_body_is_kept_and_the_senders_server_is_known_only_when_revealed() -> None:
    link = Seen("chat", "alice@other.net", "phone", "", False, urls=("https://x/y.jpg",))
    assert ignore_reason(link, "andy@example.org", "Andy", set()) is None
    assert ignore_reason(Seen("chat", "a@b", "r", " ", False), "andy@b", "Andy", set())
    assert sender_domain(link, set()) == "other.net"
    room = "team@conference.example.org"
    anon = Seen("groupchat", room, "alice", "hi", False)
    assert sender_domain(anon, {room}) == ""
    private = Seen("chat", room, "alice", "hi", False)  # a private message through the room
    assert sender_domain(private, {room}) == ""
    revealed = Seen("groupchat", room, "alice", "hi", False, real_jid="alice@other.net")
    assert sender_domain(revealed, {room}) == "other.net"


# the download, against a real local HTTP server


@pytest.fixture
def site(listener: Listener) -> Iterator[str]:
    async def body(_: web.Request) -> web.Response:
        return web.Response(body=BODY, content_type="image/jpeg")

    async def moved(_: web.Request) -> web.Response:
        raise web.HTTPFound("/file/x.jpg")

    async def away(_: web.Request) -> web.Response:
        raise web.HTTPFound(f"http://{listener.host}:{listener.port}/x.jpg")

    def app() -> web.Application:
        a = web.Application()
        a.router.add_get("/file/x.jpg", body)
        a.router.add_get("/moved", moved)
        a.router.add_get("/away", away)
        return a

    served = Served("xmpp-media-site")
    yield served.start(app)
    served.stop()


async def collect(url: str, *, private_ok: bool, limit: int) -> bytes:
    return b"".join([c async for c in download(url, private_ok=private_ok, limit=limit)])


async def test_download_follows_same_origin_redirects_and_stops_at_the_limit(site: str) -> None:
    assert await collect(f"{site}/file/x.jpg", private_ok=True, limit=10**6) == BODY
    assert await collect(f"{site}/moved", private_ok=True, limit=10**6) == BODY
    cut = await collect(f"{site}/file/x.jpg", private_ok=True, limit=1001)
    assert cut == BODY[:1001]


async def test_download_refuses_a_redirect_to_another_host(site: str, listener: Listener) -> None:
    with pytest.raises(FetchFailed, match="redirected to another host"):
        await collect(f"{site}/away", private_ok=True, limit=10**6)
    await listener.assert_untouched()


async def test_download_says_http_errors(site: str) -> None:
    with pytest.raises(FetchFailed, match="HTTP 404"):
        await collect(f"{site}/nothing", private_ok=True, limit=10**6)


async def test_a_senders_host_on_a_private_address_is_never_connected(site: str) -> None:
    """localhost is a name here (as a hostile server's DNS could answer): it resolves to
    loopback, so nothing connects to it unless it is the account's own server."""
    own = Listener("127.0.0.1")
    try:
        with pytest.raises(FetchFailed, match="resolves to a private address"):
            await collect(f"http://localhost:{own.port}/x.jpg", private_ok=False, limit=100)
        await own.assert_untouched()
    finally:
        own.close()
