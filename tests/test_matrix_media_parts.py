"""channels.matrix_media's parts: Attachments read from event content, mxc:// parsing, the
outbound event content (pure), and download()'s v1 -> v3 fallback against a homeserver
double that does not know authenticated media (Synapse always does)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

from channels.matrix_event import normalise
from channels.matrix_media import (
    ENCRYPTED,
    MediaUnavailable,
    attachment_of,
    download,
    file_content,
    parse_mxc,
)
from channels.picture import Picture

TOKEN = "syt_secret_token"


async def nothing(uri: str) -> AsyncIterator[bytes]:
    raise AssertionError(f"no download expected of {uri}")
    yield b""


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ({"msgtype": "m.text", "body": "hi"}, None),
        ({"msgtype": "m.notice", "body": "x", "url": "mxc://a/b"}, None),
        ({"msgtype": "m.image", "body": "x.png"}, None),  # no file at all
        ({"msgtype": "m.image", "body": "x.png", "url": ["mxc://a/b"]}, None),
        ({"msgtype": ["m.image"], "url": "mxc://a/b"}, None),
        (
            {"msgtype": "m.image", "body": "a cat", "filename": "cat.png", "url": "mxc://a/b"},
            ("image", "cat.png", "", None),
        ),
        (
            {"msgtype": "m.file", "body": " r.pdf ", "url": "mxc://a/b", "info": {"size": 9}},
            ("file", "r.pdf", "", 9),
        ),
        (
            {"msgtype": "m.audio", "url": "mxc://a/b", "info": {"mimetype": "audio/ogg"}},
            ("audio", "audio", "audio/ogg", None),
        ),
        (
            {"msgtype": "m.audio", "url": "mxc://a/b", "org.matrix.msc3245.voice": {}},
            ("voice", "voice", "", None),
        ),
        (
            {"msgtype": "m.video", "url": "mxc://a/b", "info": {"size": -1, "mimetype": 5}},
            ("video", "video", "", None),
        ),
        (
            {"msgtype": "m.video", "url": "mxc://a/b", "info": {"size": True}},
            ("video", "video", "", None),
        ),
        ({"msgtype": "m.video", "url": "mxc://a/b", "info": ["x"]}, ("video", "video", "", None)),
    ],
)
def test_attachment_of(content: dict[str, Any], expected: tuple[Any, ...] | None) -> None:
    att = attachment_of(content, nothing)
    got = None if att is None else (att.kind, att.name, att.mime, att.size)
    assert got == expected


async def test_an_encrypted_file_is_refused_without_a_request() -> None:
    att = attachment_of({"msgtype": "m.image", "file": {"url": "mxc://a/b"}}, nothing)
    assert att is not None
    with pytest.raises(MediaUnavailable, match=ENCRYPTED):
        async for _ in att.fetch():
            pass


@pytest.mark.parametrize(
    ("uri", "parsed"),
    [
        ("mxc://example.org/AbC_-123", ("example.org", "AbC_-123")),
        ("mxc://example.org:8448/id", ("example.org:8448", "id")),
        ("mxc://[::1]:8448/id", ("[::1]:8448", "id")),
        ("mxc://example.org/a/b", None),
        ("mxc://example.org/..", None),
        ("mxc://example.org/id?x=1", None),
        ("mxc://exa mple.org/id", None),
        ("mxc:///id", None),
        ("https://example.org/id", None),
        ("MXC://example.org/id", None),
    ],
)
def test_parse_mxc(uri: str, parsed: tuple[str, str] | None) -> None:
    assert parse_mxc(uri) == parsed


def test_normalise_carries_the_attachment_and_the_caption() -> None:
    content = {"msgtype": "m.image", "body": "look", "filename": "x.png", "url": "mxc://a/b"}
    event = {"type": "m.room.message", "sender": "@a:h", "event_id": "$1", "content": content}
    att = attachment_of(content, nothing)
    assert att is not None
    msg = normalise(
        event, "!r:h", "@me:h", sender_name="A", room_name="R", is_group=True, attachments=(att,)
    )
    assert msg is not None and (msg.text, msg.attachments) == ("look", (att,))
    bare = {**content, "body": "x.png"}
    msg = normalise(
        {**event, "content": bare},
        "!r:h",
        "@me:h",
        sender_name="A",
        room_name="R",
        is_group=True,
        attachments=(att,),
    )
    assert msg is not None and msg.text == ""
    msg = normalise(
        {**event, "content": bare}, "!r:h", "@me:h", sender_name="A", room_name="R", is_group=True
    )
    assert msg is not None and msg.text == "[Image: x.png]"


def test_file_content() -> None:
    pic = Picture("JPEG", "image/jpeg", 30, 20)
    jpeg = file_content("mxc://h/i", "photo.bin", 99, "", pic)  # the content decides, not the name
    assert jpeg == {
        "msgtype": "m.image",
        "body": "photo.bin",
        "filename": "photo.bin",
        "url": "mxc://h/i",
        "info": {"size": 99, "mimetype": "image/jpeg", "w": 30, "h": 20},
        "m.mentions": {},
    }
    captioned = file_content("mxc://h/i", "r.pdf", 5, "see *this*", None)
    assert (captioned["msgtype"], captioned["body"], captioned["filename"]) == (
        "m.file",
        "see *this*",
        "r.pdf",
    )
    assert captioned["formatted_body"] == "see <i>this</i>"
    assert file_content("mxc://h/i", "r.pdf", 5, "  \n", None)["body"] == "r.pdf"
    assert (
        file_content("mxc://h/i", "x.weird", 5, "", None)["info"]["mimetype"]
        == "application/octet-stream"
    )


# download() against a homeserver double


@dataclass
class OldServer:
    """A homeserver that answers v1 as `v1_status`/`v1_errcode` and serves v3."""

    v1_status: int = 404
    v1_errcode: str = "M_UNRECOGNIZED"
    data: bytes = b"x" * 200_000
    seen: list[tuple[str, str | None]] = field(default_factory=list)  # (path, Authorization)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.seen.append((request.path, request.headers.get("Authorization")))
        if request.path.startswith("/_matrix/client/v1/"):
            if self.v1_status == 302:
                raise web.HTTPFound("http://127.0.0.1:9/elsewhere")
            body = {"errcode": self.v1_errcode, "error": "no"}
            return web.json_response(body, status=self.v1_status)
        return web.Response(body=self.data, content_type="application/octet-stream")


async def serve(server: OldServer) -> tuple[web.AppRunner, str]:
    app = web.Application()
    app.router.add_route("GET", "/{tail:.*}", server.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}/"


async def read(base: str, uri: str = "mxc://old.example:8448/Media1") -> bytes:
    return b"".join([chunk async for chunk in download(base, TOKEN, uri)])


async def test_a_server_without_v1_is_asked_on_v3_without_the_token() -> None:
    server = OldServer()
    runner, base = await serve(server)
    try:
        assert await read(base) == server.data
    finally:
        await runner.cleanup()
    assert server.seen == [
        ("/_matrix/client/v1/media/download/old.example:8448/Media1", f"Bearer {TOKEN}"),
        ("/_matrix/media/v3/download/old.example:8448/Media1", None),
    ]


@pytest.mark.parametrize(
    ("status", "errcode", "why"),
    [
        (404, "M_NOT_FOUND", "answered 404 M_NOT_FOUND"),
        (401, "M_MISSING_TOKEN", "answered 401 M_MISSING_TOKEN"),
        (302, "", "answered 302"),  # the token never follows a redirect
    ],
)
async def test_other_v1_answers_are_final(status: int, errcode: str, why: str) -> None:
    server = OldServer(v1_status=status, v1_errcode=errcode)
    runner, base = await serve(server)
    try:
        with pytest.raises(MediaUnavailable, match=why):
            await read(base)
    finally:
        await runner.cleanup()
    assert [path for path, _ in server.seen] == [
        "/_matrix/client/v1/media/download/old.example:8448/Media1"
    ]


async def test_an_unreachable_homeserver_is_a_failed_download() -> None:
    with pytest.raises(MediaUnavailable, match="the download failed"):
        await read("http://127.0.0.1:9")
    with pytest.raises(MediaUnavailable, match="only mxc:// media"):
        await read("http://127.0.0.1:9", "mxc://h/../x")
