"""The nudge: real datagram sockets served by `NudgeServer`, the agent's own `write_json` and
`nudge`, a real IPC handler and store behind the watcher, and one real sandboxed agent.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest_asyncio
from conftest import Running, wait_for

from nanoclaw.agent.ipcfiles import nudge, write_json
from nanoclaw.agent.protocol import NUDGE_SOCK, OUTBOUND
from nanoclaw.ipc import files as ipcfs
from nanoclaw.ipc.handler import IpcHandler
from nanoclaw.ipc.nudge import READ_BATCH, NudgeServer
from nanoclaw.ipc.watcher import IpcWatcher
from nanoclaw.models import Group
from nanoclaw.store.messages import Store

GROUPS = {"main": "term:main", "alpha": "tg:-1"}


class Counted:
    """The real handler, with its drains counted (the watcher's `Drainer` seam)."""

    def __init__(self, handler: IpcHandler) -> None:
        self.handler = handler
        self.drains = 0

    async def drain(self, folder: str) -> int:
        self.drains += 1
        return await self.handler.drain(folder)


@dataclass
class Env:
    store: Store
    handler: Counted
    watcher: IpcWatcher
    ipc: Path
    sockets: Path

    def sock(self, folder: str) -> Path:
        return self.sockets / folder / NUDGE_SOCK

    def reply(self, folder: str, text: str, nudged: bool = True) -> None:
        """As the agent writes a reply; without the nudge, one to a socket nobody serves."""
        where = self.sock(folder) if nudged else self.ipc / "nobody.sock"
        write_json(self.ipc / folder / OUTBOUND, {"type": "send_message", "text": text}, where)

    async def replies(self) -> list[str]:
        rows = await self.store._all("SELECT text FROM outbox ORDER BY id")
        return [str(r[0]) for r in rows]


@pytest_asyncio.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    store = await Store.open(tmp_path / "store" / "nanoclaw.db")
    ipc, sockets = tmp_path / "ipc", tmp_path / "sockets"
    for folder, chat in GROUPS.items():
        await store.save_group(Group(folder=folder, name=folder, chats=(chat,)))
        ipcfs.ensure_dirs(ipc, folder)
        (tmp_path / "groups" / folder).mkdir(parents=True)
    handler = Counted(IpcHandler(store, ipc, tmp_path / "groups", ZoneInfo("UTC"), lambda f: 1))
    watcher = IpcWatcher(handler, store, ipc, sockets)
    yield Env(store, handler, watcher, ipc, sockets)
    watcher.nudges.close()
    await store.close()


async def test_server_wakes_its_group_and_says_nothing_without_one(tmp_path: Path) -> None:
    woken: list[str] = []
    server = NudgeServer(woken.append)
    server.sync({"a": tmp_path / "a" / NUDGE_SOCK, "b": tmp_path / "b" / NUDGE_SOCK})
    try:
        assert (tmp_path / "a").stat().st_mode & 0o777 == 0o700
        assert nudge(tmp_path / "b" / NUDGE_SOCK)
        await wait_for(lambda: woken, 5)
        assert woken == ["b"]
        server.sync({"a": tmp_path / "a" / NUDGE_SOCK})  # b is no longer served: gone
        assert not (tmp_path / "b" / NUDGE_SOCK).exists()
        assert not nudge(tmp_path / "b" / NUDGE_SOCK)  # nobody there: False, never an error
    finally:
        server.close()
    assert not (tmp_path / "a" / NUDGE_SOCK).exists()


async def test_a_flood_of_nudges_is_bounded_and_coalesced(tmp_path: Path) -> None:
    woken: list[str] = []
    server = NudgeServer(woken.append)
    server.sync({"a": tmp_path / NUDGE_SOCK})
    try:
        # All sent before the loop runs again: the kernel queues a few, refuses the rest
        # at once (the sender never blocks), and the server takes the queue in batches.
        sent = sum(nudge(tmp_path / NUDGE_SOCK) for _ in range(2000))
        assert 0 < sent < 2000
        await wait_for(lambda: server.received == sent, 5)  # all taken: no wake can follow
        assert server.wakes == len(woken) <= -(-sent // READ_BATCH)
    finally:
        server.close()


async def test_a_nudge_gets_the_file_handled_without_the_watch(env: Env) -> None:
    env.watcher.nudges.sync({f: env.sock(f) for f in GROUPS})  # served, but nothing watches
    env.reply("alpha", "hello from alpha")
    await wait_for(env.replies, 5)
    assert await env.replies() == ["hello from alpha"]
    await env.watcher.settle()
    assert env.handler.drains == 1


async def test_a_flood_of_nudges_drains_a_few_times_only(env: Env) -> None:
    env.watcher.nudges.sync({f: env.sock(f) for f in GROUPS})
    env.reply("alpha", "one reply")
    sent = 1 + sum(nudge(env.sock("alpha")) for _ in range(1000))
    await wait_for(lambda: env.watcher.nudges.received == sent, 5)
    await env.watcher.settle()
    assert await env.replies() == ["one reply"]
    assert env.handler.drains <= env.watcher.nudges.wakes <= -(-sent // READ_BATCH) + 1


async def test_the_watch_still_handles_a_file_that_came_without_a_nudge(env: Env) -> None:
    task = asyncio.create_task(env.watcher.run())
    try:
        await asyncio.wait_for(env.watcher.ready.wait(), 10)
        assert env.watcher.nudges.folders == set(GROUPS)  # served while the group is watched
        env.reply("main", "nobody nudged", nudged=False)
        await wait_for(env.replies, 10)
        assert env.watcher.nudges.received == 0
        env.reply("main", "nudged")
        await wait_for(lambda: env.watcher.nudges.received == 1, 5)
        await wait_for(lambda: _has(env, "nudged"), 10)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert not env.sock("main").exists()  # the watcher's sockets go with it


async def _has(env: Env, text: str) -> bool:
    return text in await env.replies()


async def test_the_sandboxed_agent_nudges_through_its_bind(running: Running) -> None:
    await running.say("hello there")
    await running.reply_containing("hello there", 60)
    assert running.core.watcher.nudges.received >= 1  # sent from inside, to /ipc/nudge.sock
