"""Tests for the Prosody fixture: a real server on loopback, real slixmpp clients."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from prosody import Client, ConnectError, Prosody
from slixmpp import JID

PASSWORD = "s3cret-pw"
USERS = ("alice", "bob", "carol")


@pytest.fixture(scope="module", autouse=True)
def no_stray_prosody(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """After the module, no prosody process may still run on a config under our temp dir."""
    yield
    base = str(tmp_path_factory.getbasetemp())
    ps = subprocess.run(["pgrep", "-af", "prosody"], capture_output=True, text=True)
    assert [line for line in ps.stdout.splitlines() if base in line] == []


def make_server(path: Path, *, tls: bool) -> Prosody:
    server = Prosody(path, tls=tls)
    server.start()
    try:
        for user in USERS:
            server.register(user, PASSWORD)
    except BaseException:
        server.stop()
        raise
    return server


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Prosody]:
    s = make_server(tmp_path, tls=False)
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[Prosody]:
    s = make_server(tmp_path, tls=True)
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
async def alice(server: Prosody) -> AsyncIterator[Client]:
    c = await Client.connect(server, "alice", PASSWORD)
    yield c
    await c.disconnect()


@pytest.fixture
async def bob(server: Prosody) -> AsyncIterator[Client]:
    c = await Client.connect(server, "bob", PASSWORD)
    yield c
    await c.disconnect()


async def test_one_to_one_chat(server: Prosody, alice: Client, bob: Client) -> None:
    alice.send_chat(server.jid("bob"), "hi bob", chat_state="active")
    got = await bob.wait_message(lambda m: m.body == "hi bob")
    assert (got.type, got.from_jid, got.chat_state, got.has_delay) == (
        "chat",
        "alice@localhost/test",
        "active",
        False,
    )
    bob.send_chat(alice.jid, "hi alice")
    back = await alice.wait_message(lambda m: m.body == "hi alice")
    assert back.from_jid == "bob@localhost/test"
    assert back.to_jid == "alice@localhost/test"


async def test_wrong_password_is_refused(server: Prosody) -> None:
    with pytest.raises(ConnectError, match="authentication failed"):
        await Client.connect(server, "alice", "wrong")


async def test_room_message_reaches_others_and_reflects(
    server: Prosody, alice: Client, bob: Client
) -> None:
    room = server.room_jid("team")
    assert room == "team@conference.localhost"
    await alice.join_room(room)
    await bob.join_room(room, "Bobby")
    alice.send_room(room, "hello team")
    got = await bob.wait_message(lambda m: m.body == "hello team")
    assert (got.type, got.from_jid, got.has_delay) == ("groupchat", f"{room}/alice", False)
    echo = await alice.wait_message(lambda m: m.body == "hello team")
    assert echo.from_jid == f"{room}/alice"
    bob.send_room(room, "hi from bob")
    assert (await alice.wait_message(lambda m: m.body == "hi from bob")).from_jid == f"{room}/Bobby"


async def test_late_joiner_gets_delayed_history(server: Prosody, alice: Client) -> None:
    room = server.room_jid("team")
    await alice.join_room(room)
    alice.send_room(room, "before carol")
    await alice.wait_message(lambda m: m.body == "before carol")  # the room has stored it
    carol = await Client.connect(server, "carol", PASSWORD)
    try:
        await carol.join_room(room, history=10)
        old = await carol.wait_message(lambda m: m.body == "before carol")
        assert (old.from_jid, old.has_delay) == (f"{room}/alice", True)
        alice.send_room(room, "after carol")
        new = await carol.wait_message(lambda m: m.body == "after carol")
        assert new.has_delay is False
    finally:
        await carol.disconnect()


async def test_restart_keeps_accounts_and_rooms(server: Prosody) -> None:
    room, port = server.room_jid("keep"), server.port
    alice = await Client.connect(server, "alice", PASSWORD)
    await alice.join_room(room)
    server.restart()
    assert server.port == port
    # A connected client sees the stream end (slixmpp does not reconnect by itself).
    await asyncio.wait_for(alice.xmpp.disconnected, 5)
    await alice.disconnect()
    alice = await Client.connect(server, "alice", PASSWORD, resource="again")
    try:
        info = await alice.xmpp.plugin["xep_0030"].get_info(jid=JID(room), timeout=10)
        assert "muc_persistent" in info["disco_info"]["features"]
        bob = await Client.connect(server, "bob", PASSWORD)
        alice.send_chat(server.jid("bob"), "after restart")
        assert (await bob.wait_message(lambda m: m.body == "after restart")).type == "chat"
        await bob.disconnect()
    finally:
        await alice.disconnect()


async def test_tls_starttls_and_direct_tls_with_ca(tls_server: Prosody) -> None:
    assert tls_server.ca_file is not None and tls_server.ca_file.exists()
    assert tls_server.tls_port not in (None, tls_server.port)
    alice = await Client.connect(tls_server, "alice", PASSWORD, mode="starttls")
    bob = await Client.connect(tls_server, "bob", PASSWORD, mode="direct_tls")
    try:
        for c in (alice, bob):
            assert isinstance(c.xmpp.socket, ssl.SSLObject)
            assert c.xmpp.socket.version() in ("TLSv1.2", "TLSv1.3")
        alice.send_chat(tls_server.jid("bob"), "over tls")
        got = await bob.wait_message(lambda m: m.body == "over tls")
        assert got.from_jid == "alice@localhost/test"
    finally:
        await alice.disconnect()
        await bob.disconnect()


@pytest.mark.parametrize("mode", ["starttls", "direct_tls"])
async def test_tls_without_ca_fails_verification(tls_server: Prosody, mode: str) -> None:
    with pytest.raises(ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        await Client.connect(tls_server, "alice", PASSWORD, mode=mode, verify=False)  # type: ignore[arg-type]


async def test_carbons_are_unwrapped(server: Prosody, alice: Client, bob: Client) -> None:
    phone = await Client.connect(server, "alice", PASSWORD, resource="phone", carbons=True)
    try:
        alice.send_chat(server.jid("bob"), "sent from test resource")
        sent = await phone.wait_message(lambda m: m.body == "sent from test resource")
        assert (sent.carbon, sent.from_jid, sent.to_jid) == ("sent", alice.jid, "bob@localhost")
        bob.send_chat(alice.jid, "to the test resource")
        got = await phone.wait_message(lambda m: m.body == "to the test resource")
        assert (got.carbon, got.from_jid) == ("received", bob.jid)
    finally:
        await phone.disconnect()
