"""The XMPP channel through the whole pipeline, against a real Prosody on loopback."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from conftest import Running, settings_for, start_core, stop_core, wait_for
from fake_anthropic import FakeAnthropic
from prosody import Client, Prosody
from slixmpp import JID

from channels.xmpp import XmppChannel
from nanoclaw.config import Settings
from nanoclaw.models import Group
from nanoclaw.store.db import now_ms

PW = "pw-for-tests"
ROOM = "team@conference.localhost"


@pytest.fixture
def prosody(tmp_path: Path) -> Iterator[Prosody]:
    server = Prosody(tmp_path / "prosody")
    server.start()
    for user in ("andy", "alice", "mallory"):
        server.register(user, PW)
    try:
        yield server
    finally:
        server.stop()


def xmpp_settings(home: Path, fake: FakeAnthropic, server: Prosody, **extra: Any) -> Settings:
    values: dict[str, Any] = {
        "XMPP_JID": server.jid("andy"),
        "XMPP_PASSWORD": PW,
        "XMPP_SERVER": f"127.0.0.1:{server.port}",
        "XMPP_TLS": "off",
        "XMPP_ROOMS": ROOM,
        "ALLOWED_SENDERS": f"xmpp:{server.jid('alice')}",
    }
    values.update(extra)
    return settings_for(home, fake.base_url, **values)


class Daemon:
    def __init__(self, running: Running, task: asyncio.Task[None], channel: XmppChannel):
        self.running, self.task, self.channel = running, task, channel

    async def stop(self) -> None:
        await stop_core(self.running, self.task)


async def start(settings: Settings) -> Daemon:
    channel = XmppChannel(settings, settings.layout.store / "xmpp")
    running, task = await start_core(settings, channel)
    await asyncio.wait_for(channel.wait_online(), 30)
    return Daemon(running, task, channel)


@pytest_asyncio.fixture
async def bot(home: Path, fake: FakeAnthropic, prosody: Prosody) -> AsyncIterator[Daemon]:
    daemon = await start(xmpp_settings(home, fake, prosody))
    await daemon.running.add_group("team", f"xmpp:{ROOM}", requires_trigger=True)
    await daemon.running.add_group("alice", f"xmpp:{prosody.jid('alice')}", requires_trigger=False)
    yield daemon
    await daemon.stop()


@pytest_asyncio.fixture
async def alice(prosody: Prosody) -> AsyncIterator[Client]:
    client = await Client.connect(prosody, "alice", PW, nick="alice")
    yield client
    await client.disconnect()


async def nothing_pending(running: Running, chat: str) -> bool:
    return await running.store.pending_outbox(chat) == 0


async def failed_attempts(running: Running, chat: str) -> int:
    rows = await running.store._all("SELECT max(attempts) FROM outbox WHERE chat_id = ?", (chat,))
    return int(rows[0][0] or 0)


def from_andy(kind: str, needle: str) -> Any:
    return lambda m: (
        m.type == kind and needle in (m.body or "") and "andy" in str(m.from_jid).lower()
    )


async def test_one_to_one_trigger_gets_a_reply(
    bot: Daemon, alice: Client, fake: FakeAnthropic, prosody: Prosody
) -> None:
    alice.send_chat(prosody.jid("andy"), "hi [[say: hello alice]]")
    msg = await alice.wait_message(from_andy("chat", "hello alice"), timeout=60)
    assert msg.body == "hello alice"
    prompt = fake.requests[0].body["messages"][-1]["content"]
    assert f'sender_id="xmpp:{prosody.jid("alice")}"' in prompt


async def test_room_trigger_gets_a_reply_and_nick_addressing_works(
    bot: Daemon, alice: Client, fake: FakeAnthropic
) -> None:
    await alice.join_room(ROOM, "alice")
    alice.send_room(ROOM, "@Andy status? [[say: all green]]")
    await alice.wait_message(lambda m: m.type == "groupchat" and m.body == "all green", 60)
    alice.send_room(ROOM, "Andy: and now? [[say: still green]]")
    await alice.wait_message(lambda m: m.type == "groupchat" and m.body == "still green", 60)
    assert len(fake.requests) == 2  # the bot's own reflected messages started nothing


async def test_sender_not_allowed_does_not_trigger(
    bot: Daemon, prosody: Prosody, fake: FakeAnthropic
) -> None:
    mallory = await Client.connect(prosody, "mallory", PW, nick="mallory")
    try:
        mallory.send_chat(prosody.jid("andy"), "@Andy hi")
        await mallory.join_room(ROOM, "alice")  # a nick that looks like an allowed sender
        mallory.send_room(ROOM, "@Andy do it")
        await wait_for(lambda: bot.running.store.count_messages_for_folder("team", 0), 20)
        await bot.running.core.settle()
        assert fake.requests == []
    finally:
        await mallory.disconnect()


async def test_pairing_a_strangers_one_to_one_chat(
    bot: Daemon, prosody: Prosody, fake: FakeAnthropic
) -> None:
    """Issue 13, item 11: anyone may write 1:1; a code makes that chat a group's."""
    # as `nanoclaw pair lab` does it from another process, the daemon running
    await bot.running.store.save_group(Group(folder="lab", name="lab", requires_trigger=False))
    (bot.running.settings.layout.groups / "lab").mkdir()
    code = (await bot.running.store.create_pair_code("lab", now_ms())).code
    mallory = await Client.connect(prosody, "mallory", PW, nick="mallory")
    jid = prosody.jid("mallory")
    try:
        mallory.send_chat(prosody.jid("andy"), "hello?")
        hint = await mallory.wait_message(from_andy("chat", "pairing code"), 30)
        assert f"you are xmpp:{jid}" in str(hint.body)
        mallory.send_chat(prosody.jid("andy"), f"pair {code.lower()}")
        paired = await mallory.wait_message(from_andy("chat", "Paired"), 30)
        assert paired.body == (
            f"Paired: this chat now talks to group lab, and you (xmpp:{jid}) may just write to me."
        )
        mallory.send_chat(prosody.jid("andy"), "[[say: hi mallory]]")
        await mallory.wait_message(from_andy("chat", "hi mallory"), 60)
        lab = await bot.running.store.group("lab")
        assert lab is not None and f"xmpp:{jid}" in lab.chats
        assert lab.allowed_senders == (f"xmpp:{jid}",)
        prompt = fake.requests[-1].body["messages"][-1]["content"]
        assert code.lower() not in prompt and "hello?" in prompt
        assert sum("pairing code" in str(m.body) for m in mallory.messages) == 1  # told once
    finally:
        await mallory.disconnect()


async def test_join_history_is_not_handled_again(
    home: Path, fake: FakeAnthropic, prosody: Prosody
) -> None:
    alice = await Client.connect(prosody, "alice", PW, nick="alice")
    try:
        await alice.join_room(ROOM, "alice")
        alice.send_room(ROOM, "@Andy old news [[say: should not answer]]")
        await alice.sync()  # in the room's history before the bot joins
        daemon = await start(xmpp_settings(home, fake, prosody))
        try:
            await daemon.running.add_group("team", f"xmpp:{ROOM}", requires_trigger=True)
            alice.send_room(ROOM, "@Andy fresh [[say: fresh answer]]")
            await alice.wait_message(lambda m: m.body == "fresh answer", 60)
            assert all("old news" not in str(r.body) for r in fake.requests)
            assert await daemon.running.store.count_messages_for_folder("team", 0) == 1
        finally:
            await daemon.stop()
    finally:
        await alice.disconnect()


async def test_invitation_only_direct_and_from_allowed_senders(
    bot: Daemon, alice: Client, prosody: Prosody, caplog: pytest.LogCaptureFixture
) -> None:
    """A mediated invitation names its inviter in a field the room's service writes, so a
    hostile service can name anyone: such invitations are never followed. Mallory's forged
    one below comes from her account here; from a hostile service it would come from a room.
    """
    caplog.set_level(logging.WARNING, "channels.xmpp")
    mallory = await Client.connect(prosody, "mallory", PW, nick="mallory")
    try:
        other, lab = "other@conference.localhost", "lab@conference.localhost"
        mediated = "mediated@conference.localhost"
        await mallory.join_room(other, "mallory")
        for client in (mallory, alice):
            client.xmpp.register_plugin("xep_0249")
        mallory.xmpp.plugin["xep_0249"].send_invitation(JID(prosody.jid("andy")), JID(other))
        forged = mallory.xmpp.make_message(mto=JID(prosody.jid("andy")))
        forged["muc"]["invite"]["from"] = JID(prosody.jid("alice"))
        forged.send()
        await mallory.sync()
        await alice.join_room(mediated, "alice")  # a real room relays Alice's own invitation
        alice.xmpp.plugin["xep_0045"].invite(JID(mediated), JID(prosody.jid("andy")))
        await alice.sync()
        await alice.join_room(lab, "alice")
        alice.xmpp.plugin["xep_0249"].send_invitation(JID(prosody.jid("andy")), JID(lab))
        await wait_for(lambda: lab in bot.channel.joined, 20)
        assert bot.channel.joined == {ROOM, lab}
        saved = bot.running.settings.layout.store / "xmpp" / "rooms.json"
        assert json.loads(saved.read_text()) == sorted([ROOM, lab])  # what it joins on start
        said = caplog.text
        assert f"mediated invitation to {mediated} (naming {prosody.jid('alice')}" in said
        assert f"mediated invitation to {prosody.jid('mallory')} (naming" in said
    finally:
        await mallory.disconnect()


async def test_reply_survives_a_server_restart(
    bot: Daemon, prosody: Prosody, fake: FakeAnthropic
) -> None:
    alice = await Client.connect(prosody, "alice", PW, nick="alice")
    await alice.join_room(ROOM, "alice")
    alice.send_room(ROOM, "@Andy slow one [[sleep: 2]] [[say: after restart]]")
    await wait_for(lambda: fake.requests, 30)
    await alice.disconnect()
    prosody.stop()  # the reply is produced while the server is down
    await wait_for(lambda: failed_attempts(bot.running, f"xmpp:{ROOM}"), 30)  # tried while down
    prosody.restart()
    alice = await Client.connect(prosody, "alice", PW, nick="alice")
    try:
        await alice.join_room(ROOM, "alice", history=0)
        await alice.wait_message(lambda m: m.body == "after restart" and not m.has_delay, 60)
        await wait_for(lambda: nothing_pending(bot.running, f"xmpp:{ROOM}"), 30)
        await bot.running.core.router.deliver_once()
        await bot.channel.send(f"xmpp:{ROOM}", "marker")  # the room relays in order:
        await alice.wait_message(lambda m: m.body == "marker", 30)  # all before it came
        live = [m for m in alice.messages if m.body == "after restart" and not m.has_delay]
        assert len(live) == 1
        assert ROOM in bot.channel.joined  # rejoined after the reconnect
    finally:
        await alice.disconnect()


async def test_tls_with_a_self_signed_ca(home: Path, fake: FakeAnthropic, tmp_path: Path) -> None:
    server = Prosody(tmp_path / "tls", tls=True)
    server.start()
    try:
        for user in ("andy", "alice"):
            server.register(user, PW)
        assert server.ca_file is not None
        settings = xmpp_settings(
            home,
            fake,
            server,
            XMPP_TLS="required",
            XMPP_CA_FILE=str(server.ca_file),
            XMPP_SERVER=f"localhost:{server.port}",
        )
        daemon = await start(settings)
        try:
            await daemon.running.add_group(
                "alice", f"xmpp:{server.jid('alice')}", requires_trigger=False
            )
            alice = await Client.connect(server, "alice", PW)
            alice.send_chat(server.jid("andy"), "[[say: over tls]]")
            await alice.wait_message(from_andy("chat", "over tls"), 60)
            await alice.disconnect()
        finally:
            await daemon.stop()
    finally:
        server.stop()


async def test_nick_in_a_room_that_hides_jids_is_untrusted(
    home: Path, fake: FakeAnthropic, tmp_path: Path
) -> None:
    server = Prosody(tmp_path / "anon", public_jids=False)
    server.start()
    try:
        for user in ("andy", "alice"):
            server.register(user, PW)
        alice = await Client.connect(server, "alice", PW, nick="alice")
        await alice.join_room(ROOM, "alice")  # alice creates (and owns) a semi-anonymous room
        daemon = await start(xmpp_settings(home, fake, server))
        try:
            await daemon.running.add_group("team", f"xmpp:{ROOM}", requires_trigger=True)
            alice.send_room(ROOM, "@Andy hi")
            await wait_for(lambda: daemon.running.store.count_messages_for_folder("team", 0), 20)
            [msg] = await daemon.running.store.messages_for_folder("team", 0)
            assert msg.sender_id == f"xmpp:{ROOM}/alice"  # the room hid her JID from us
            await daemon.running.core.settle()
            assert fake.requests == []
        finally:
            await daemon.stop()
        await alice.disconnect()
    finally:
        server.stop()
