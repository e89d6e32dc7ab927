"""Tests for the Synapse fixture: a real homeserver on loopback, real matrix-nio clients."""

from __future__ import annotations

import itertools
import json
import socket
import subprocess
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from synapse import Human, Synapse, running

PASSWORD = "s3cret-pw"
_N = itertools.count()


@pytest.fixture(scope="module", autouse=True)
def no_stray_synapse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """After the module, no synapse process may still run on a config under our temp dir."""
    yield
    base = str(tmp_path_factory.getbasetemp())
    ps = subprocess.run(["pgrep", "-af", "synapse.app"], capture_output=True, text=True)
    assert [line for line in ps.stdout.splitlines() if base in line] == []


@pytest.fixture(scope="module")
def synapse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Synapse]:
    with running(tmp_path_factory.mktemp("synapse")) as server:
        yield server


@dataclass
class Pair:
    alice: Human
    bob: Human
    room: str


async def make_pair(server: Synapse, *, encrypted: bool = False) -> Pair:
    """Register fresh aliceN/bobN; alice creates a room and invites bob, who joins."""
    n = next(_N)
    for name in (f"alice{n}", f"bob{n}"):
        server.register(name, PASSWORD)
    alice = await Human.login(server, f"alice{n}", PASSWORD)
    bob = await Human.login(server, f"bob{n}", PASSWORD)
    room = await alice.create_room("chat", invite=[bob.user_id], encrypted=encrypted)
    await bob.join(room)
    await alice.wait_event(lambda e: e.type == "m.room.member" and e.sender == bob.user_id)
    return Pair(alice, bob, room)


@pytest.fixture
async def pair(synapse: Synapse) -> AsyncIterator[Pair]:
    p = await make_pair(synapse)
    try:
        yield p
    finally:
        await p.alice.close()
        await p.bob.close()


def test_starts_fast_on_loopback_without_federation(synapse: Synapse) -> None:
    assert 0 < synapse.start_seconds < 15
    with urllib.request.urlopen(f"{synapse.url}/_matrix/client/versions") as r:
        assert "v1.11" in json.load(r)["versions"]
    config = json.loads(synapse.config.read_text())  # JSON is YAML
    assert [lst["resources"] for lst in config["listeners"]] == [
        [{"names": ["client"], "compress": False}]
    ]
    assert synapse.user_id("andy") == "@andy:localhost"


async def test_register_token_login_and_admin(synapse: Synapse) -> None:
    token = synapse.register("root", PASSWORD, admin=True, displayname="Root")
    root = await Human.from_token(synapse, "root", token)
    try:
        assert root.user_id == "@root:localhost" and root.client.device_id
        req = urllib.request.Request(
            f"{synapse.url}/_synapse/admin/v2/users/@root:localhost",
            headers={"Authorization": f"Bearer {token}"},
        )
        with urllib.request.urlopen(req) as r:
            user = json.load(r)
        assert user["admin"] is True and user["displayname"] == "Root"
    finally:
        await root.close()
    with pytest.raises(RuntimeError, match="LoginError"):
        await Human.login(synapse, "root", "wrong")
    with pytest.raises(RuntimeError, match="User ID already taken"):
        synapse.register("root", PASSWORD)


async def test_message_reaches_bob_with_body_and_html(pair: Pair) -> None:
    html = "<b>hello</b> bob"
    sent = await pair.alice.send_text(pair.room, "**hello** bob", formatted_body=html)
    got = await pair.bob.wait_event(lambda e: e.event_id == sent)
    assert (got.room_id, got.sender, got.kind) == (pair.room, pair.alice.user_id, "RoomMessageText")
    assert (got.body, got.formatted_body, got.msgtype) == ("**hello** bob", html, "m.text")
    assert got.source["content"]["format"] == "org.matrix.custom.html"
    notice = await pair.alice.send_text(pair.room, "beep", msgtype="m.notice")
    got = await pair.bob.wait_event(lambda e: e.event_id == notice)
    assert (got.kind, got.body) == ("RoomMessageNotice", "beep")


async def test_mention_and_reply_are_in_the_source(pair: Pair) -> None:
    first = await pair.bob.send_text(pair.room, "anyone?")
    sent = await pair.alice.send_text(
        pair.room,
        "Andy: yes",
        mentions_user="@andy:localhost",
        mention_name="Andy",
        reply_to_event_id=first,
    )
    got = await pair.bob.wait_event(lambda e: e.event_id == sent)
    content = got.source["content"]
    assert content["m.mentions"] == {"user_ids": ["@andy:localhost"]}
    assert got.formatted_body == '<a href="https://matrix.to/#/@andy:localhost">Andy</a>: yes'
    assert content["m.relates_to"] == {"m.in_reply_to": {"event_id": first}}
    plain = await pair.alice.send_text(pair.room, "hi <bob>", mentions_user=pair.bob.user_id)
    got = await pair.bob.wait_event(lambda e: e.event_id == plain)
    assert got.formatted_body.startswith(f'<a href="https://matrix.to/#/{pair.bob.user_id}">')
    assert got.formatted_body.endswith(" hi &lt;bob&gt;")


async def test_typing_notice_is_recorded(pair: Pair) -> None:
    await pair.alice.set_typing(pair.room)
    got = await pair.bob.wait_typing(lambda t: pair.alice.user_id in t.user_ids)
    assert got.room_id == pair.room
    await pair.alice.set_typing(pair.room, False)
    await pair.bob.wait_typing(lambda t: t.room_id == pair.room and t.user_ids == ())


async def test_encrypted_like_event_arrives_undecryptable(synapse: Synapse) -> None:
    p = await make_pair(synapse, encrypted=True)
    try:
        await p.bob.wait_event(lambda e: e.type == "m.room.encryption")
        assert p.bob.client.rooms[p.room].encrypted
        sent = await p.alice.send_encrypted_like(p.room)
        got = await p.bob.wait_event(lambda e: e.event_id == sent)
        assert (got.type, got.kind, got.body) == ("m.room.encrypted", "MegolmEvent", "")
        assert got.source["content"]["ciphertext"] == "x"
        # nio has no olm here, so plain text still goes out in an encrypted room.
        text = await p.alice.send_text(p.room, "in the clear")
        assert (await p.bob.wait_event(lambda e: e.event_id == text)).body == "in the clear"
    finally:
        await p.alice.close()
        await p.bob.close()


async def test_restart_keeps_accounts_and_history(tmp_path: Path) -> None:
    server = Synapse(tmp_path)
    server.start()
    try:
        p = await make_pair(server)
        before = await p.alice.send_text(p.room, "before restart")
        await p.bob.wait_event(lambda e: e.event_id == before)
        await p.alice.close()
        port = server.port
        server.restart()
        assert server.port == port
        later = await p.bob.send_text(p.room, "after restart")  # bob's old token still works
        alice = await Human.login(server, p.alice.user_id[1:].split(":")[0], PASSWORD)
        try:  # a new device: the first sync brings the history back
            old = await alice.wait_event(lambda e: e.body == "before restart")
            assert (old.event_id, old.room_id) == (before, p.room)
            assert (await alice.wait_event(lambda e: e.event_id == later)).sender == p.bob.user_id
        finally:
            await alice.close()
            await p.bob.close()
    finally:
        server.stop()
    assert server.proc is None


def test_start_failure_raises_with_log_tail(tmp_path: Path) -> None:
    server = Synapse(tmp_path)
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", server.port))
        blocker.listen()
        with pytest.raises(RuntimeError, match="Address already in use"):
            server.start(attempts=1)  # no second try on a new port
    assert server.proc is None
