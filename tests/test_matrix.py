"""The Matrix channel through the whole pipeline, against a real Synapse on loopback."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from conftest import Running, make_home, settings_for, start_core, stop_core, wait_for
from fake_anthropic import FakeAnthropic
from synapse import Human, Synapse, running

from channels.matrix import MatrixChannel
from nanoclaw.config import Settings
from nanoclaw.models import Group
from nanoclaw.pairing import TTL_MS
from nanoclaw.store.db import now_ms

pytestmark = pytest.mark.asyncio(loop_scope="module")
PW = "pw-for-tests"
BOT = "@andy:localhost"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Synapse]:
    with running(tmp_path_factory.mktemp("synapse"), ("andy", "alice", "mallory"), PW) as synapse:
        yield synapse


@pytest.fixture(scope="module")
def model() -> Iterator[FakeAnthropic]:
    with FakeAnthropic() as fake:
        yield fake


@pytest.fixture
def fake(model: FakeAnthropic) -> FakeAnthropic:
    model.reset()
    return model


def mx_settings(home: Path, fake: FakeAnthropic, server: Synapse) -> Settings:
    return settings_for(
        home,
        fake.base_url,
        MATRIX_HOMESERVER=server.url,
        MATRIX_USER_ID=BOT,
        MATRIX_PASSWORD=PW,
        ALLOWED_SENDERS="mx:@alice:localhost",
    )


class Bot:
    def __init__(self, running: Running, task: asyncio.Task[None], channel: MatrixChannel):
        self.running, self.task, self.channel = running, task, channel

    async def stop(self) -> None:
        await stop_core(self.running, self.task)


async def start(settings: Settings) -> Bot:
    channel = MatrixChannel(settings, settings.layout.store / "matrix")
    running, task = await start_core(settings, channel)
    await asyncio.wait_for(channel.ready.wait(), 30)
    return Bot(running, task, channel)


@pytest_asyncio.fixture(loop_scope="module")
async def bot(tmp_path: Path, fake: FakeAnthropic, server: Synapse) -> AsyncIterator[Bot]:
    daemon = await start(mx_settings(make_home(tmp_path / "home"), fake, server))
    yield daemon
    await daemon.stop()


@pytest_asyncio.fixture(loop_scope="module")
async def alice(server: Synapse) -> AsyncIterator[Human]:
    human = await Human.login(server, "alice", PW)
    yield human
    await human.close()


async def room_with_bot(bot: Bot, alice: Human, requires_trigger: bool = True) -> str:
    room = await alice.create_room(name="team", invite=[BOT])
    await alice.wait_event(lambda e: e.room_id == room and _joined(e, BOT), timeout=30)
    await bot.running.add_group(
        f"g{abs(hash(room)) % 10**8}", f"mx:{room}", requires_trigger=requires_trigger
    )
    return room


def _joined(e: Any, user: str) -> bool:
    content = e.source.get("content", {})
    return bool(
        e.type == "m.room.member"
        and e.source.get("state_key") == user
        and (content.get("membership") == "join")
    )


def from_bot(room: str, needle: str) -> Any:
    return lambda e: e.room_id == room and e.sender == BOT and needle in e.body


async def seen_all_the_bot_sent(bot: Bot, alice: Human, room: str) -> None:
    """A marker from the bot: the room's timeline is in order, so once alice has it she has
    everything the bot sent before it (what a fixed sleep could only hope for)."""
    marker = f"marker {uuid.uuid4().hex}"
    await bot.channel.send(f"mx:{room}", marker)
    await alice.wait_event(from_bot(room, marker), timeout=30)


async def nothing_pending(running: Running, chat: str) -> bool:
    return await running.store.pending_outbox(chat) == 0


async def stored(bot: Bot, room: str, text: str) -> bool:
    return any(t == text for _, t in await bot.running.store.transcript(f"mx:{room}", 50))


async def test_invites_from_allowed_accepted_others_declined(
    bot: Bot, alice: Human, server: Synapse
) -> None:
    room = await alice.create_room(invite=[BOT])
    await alice.wait_event(lambda e: e.room_id == room and _joined(e, BOT), timeout=30)
    mallory = await Human.login(server, "mallory", PW)
    try:
        other = await mallory.create_room(invite=[BOT])
        await mallory.wait_event(
            lambda e: (
                e.room_id == other
                and e.source.get("state_key") == BOT
                and e.source["content"].get("membership") == "leave"
            ),
            timeout=30,
        )
        assert not any(_joined(e, BOT) for e in mallory.events if e.room_id == other)
    finally:
        await mallory.close()


async def test_pairing_a_newcomers_room(bot: Bot, server: Synapse, fake: FakeAnthropic) -> None:
    """Issue 13, item 11: while a code is live anyone's invitation is taken; a room that
    sent no code by the time the codes expire is left, a paired one is kept."""
    store = bot.running.store
    # as `nanoclaw pair lab` does it from another process, the daemon running
    await store.save_group(Group(folder="lab", name="lab", requires_trigger=False))
    (bot.running.settings.layout.groups / "lab").mkdir()
    code = (await store.create_pair_code("lab", now_ms())).code
    mallory = await Human.login(server, "mallory", PW)
    try:
        room = await mallory.create_room(invite=[BOT])
        await mallory.wait_event(lambda e: e.room_id == room and _joined(e, BOT), timeout=30)
        idle = await mallory.create_room(invite=[BOT])  # a second room sends no code
        await mallory.wait_event(lambda e: e.room_id == idle and _joined(e, BOT), timeout=30)
        await mallory.send_text(room, "hello?")
        hint = await mallory.wait_event(from_bot(room, "pairing code"), timeout=30)
        assert "you are mx:@mallory:localhost" in hint.body
        await mallory.send_text(room, code)
        paired = await mallory.wait_event(from_bot(room, "Paired"), timeout=30)
        assert "group lab" in paired.body and "just write to me" in paired.body
        await mallory.send_text(room, "[[say: hi mallory]]")
        await mallory.wait_event(from_bot(room, "hi mallory"), timeout=60)
        lab = await store.group("lab")
        assert lab is not None and lab.chats == (f"mx:{room}",)
        assert lab.allowed_senders == ("mx:@mallory:localhost",)
        await bot.channel.leave_unpaired(now_ms() + TTL_MS + 1)  # the step, past the expiry
        await mallory.wait_event(
            lambda e: (
                e.room_id == idle
                and e.source.get("state_key") == BOT
                and e.source["content"].get("membership") == "leave"
            ),
            timeout=30,
        )
        assert not any(
            e.room_id == room
            and e.source.get("state_key") == BOT
            and e.source.get("content", {}).get("membership") == "leave"
            for e in mallory.events
        )
    finally:
        await mallory.close()


async def test_trigger_gets_a_formatted_reply_and_typing(
    bot: Bot, alice: Human, fake: FakeAnthropic
) -> None:
    room = await room_with_bot(bot, alice)
    await alice.send_text(room, "@Andy hello [[say: **all** <fine> & well]]")
    reply = await alice.wait_event(from_bot(room, "fine"), timeout=60)
    assert reply.body == "**all** <fine> & well"
    assert reply.source["content"]["format"] == "org.matrix.custom.html"
    assert reply.formatted_body == "<b>all</b> &lt;fine&gt; &amp; well"
    await alice.wait_typing(lambda t: t.room_id == room and BOT in t.user_ids, timeout=10)


async def test_mention_and_reply_to_bot_trigger(
    bot: Bot, alice: Human, fake: FakeAnthropic
) -> None:
    room = await room_with_bot(bot, alice)
    await alice.send_text(room, "Andy, [[say: by pill]]", mentions_user=BOT, mention_name="Andy")
    first = await alice.wait_event(from_bot(room, "by pill"), timeout=60)
    await alice.send_text(
        room,
        "> <@andy:localhost> by pill\n\nmore [[say: by reply]]",
        reply_to_event_id=first.event_id,
    )
    await alice.wait_event(from_bot(room, "by reply"), timeout=60)
    prompt = fake.requests[-1].body["messages"][-1]["content"]
    assert "by pill" in prompt  # the quoted answer is context


async def test_sender_not_allowed_does_not_trigger(
    bot: Bot, alice: Human, fake: FakeAnthropic, server: Synapse
) -> None:
    room = await room_with_bot(bot, alice, requires_trigger=False)
    mallory = await Human.login(server, "mallory", PW)
    try:
        await alice.invite(room, "@mallory:localhost")
        await mallory.join(room)
        await mallory.send_text(room, "@Andy do it")
        folder = await bot.running.store.folder_of_chat(f"mx:{room}")
        assert folder is not None
        await wait_for(lambda: bot.running.store.count_messages_for_folder(folder, 0), 30)
        await bot.running.core.settle()
        assert fake.requests == []
    finally:
        await mallory.close()


async def test_encrypted_room_gets_one_notice(bot: Bot, alice: Human) -> None:
    room = await alice.create_room(invite=[BOT], encrypted=True)
    await alice.wait_event(lambda e: e.room_id == room and _joined(e, BOT), timeout=30)
    await alice.send_encrypted_like(room)
    notice = await alice.wait_event(from_bot(room, "encrypted"), timeout=30)
    assert notice.msgtype == "m.notice"
    await alice.send_encrypted_like(room)
    await alice.send_text(room, "in the clear")  # the bot handles a room's events in order
    await wait_for(lambda: stored(bot, room, "in the clear"), 30)
    await seen_all_the_bot_sent(bot, alice, room)
    assert len([e for e in alice.events if from_bot(room, "encrypted")(e)]) == 1


async def test_bot_restart_keeps_login_and_does_not_replay(
    tmp_path: Path, fake: FakeAnthropic, server: Synapse, alice: Human
) -> None:
    home = make_home(tmp_path / "home")
    settings = mx_settings(home, fake, server)
    bot = await start(settings)
    room = await room_with_bot(bot, alice, requires_trigger=False)
    await alice.send_text(room, "[[say: first answer]]")
    await alice.wait_event(from_bot(room, "first answer"), timeout=60)
    await bot.stop()
    session = json.loads((home / "store" / "matrix" / "session.json").read_text())
    await alice.send_text(room, "while you were away [[say: caught up]]")
    bot = await start(settings)
    try:
        await alice.wait_event(from_bot(room, "caught up"), timeout=60)
        await alice.send_text(room, "[[say: marker]]")  # after any replayed event, in order
        await alice.wait_event(from_bot(room, "marker"), timeout=60)
        assert len(fake.requests) == 3  # the first message was not handled again
        after = json.loads((home / "store" / "matrix" / "session.json").read_text())
        assert after["device_id"] == session["device_id"]  # no second login
    finally:
        await bot.stop()


async def test_a_retried_chunk_with_the_same_key_posts_once(bot: Bot, alice: Human) -> None:
    room = await room_with_bot(bot, alice)
    await bot.channel.send(f"mx:{room}", "only once", key="nanoclaw-1-0-abc")
    await bot.channel.send(f"mx:{room}", "only once", key="nanoclaw-1-0-abc")  # a retry
    await bot.channel.send(f"mx:{room}", "marker", key="nanoclaw-2-0-def")
    await alice.wait_event(from_bot(room, "marker"), timeout=30)
    assert len([e for e in alice.events if from_bot(room, "only once")(e)]) == 1


async def test_synapse_restart_while_reply_pending_delivers_once(
    bot: Bot, alice: Human, fake: FakeAnthropic, server: Synapse
) -> None:
    room = await room_with_bot(bot, alice, requires_trigger=False)
    await alice.send_text(room, "slow [[sleep: 2]] [[say: after the restart]]")
    await wait_for(lambda: fake.requests, 30)
    server.stop()  # the answer is produced while the homeserver is down
    await wait_for(lambda: bot.running.store.pending_outbox(f"mx:{room}"), 30)
    server.restart()
    await alice.wait_event(from_bot(room, "after the restart"), timeout=90)
    await wait_for(lambda: nothing_pending(bot.running, f"mx:{room}"), 30)
    await bot.running.core.router.deliver_once()
    await seen_all_the_bot_sent(bot, alice, room)
    assert len([e for e in alice.events if from_bot(room, "after the restart")(e)]) == 1
