"""The orchestrator's tick: one group's broken agent does not stall the other groups.

The orchestrator runs against a real store; `launch` returns a scripted run that writes
follow-ups with the real `ipcfs.write_input`, and ends turns when the test says so.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest_asyncio
from conftest import wait_for

from nanoclaw import ipcfs
from nanoclaw.gate import Gate
from nanoclaw.launcher import RunOptions
from nanoclaw.models import Group, InboundMessage
from nanoclaw.orchestrator import Orchestrator, Rules
from nanoclaw.runner import Outcome
from nanoclaw.store import Store

SENDER = "tg:111"
CHATS = {"alpha": "tg:-1", "beta": "tg:-2"}


class ScriptedRun:
    """An agent run without a sandbox: follow-ups land in the group's real input dir."""

    def __init__(
        self,
        ipc: Path,
        folder: str,
        run_id: int,
        prompt: str,
        done: Callable[[str], Awaitable[None]],
    ) -> None:
        self.folder, self.run_id, self.prompts = folder, run_id, [prompt]
        self._ipc, self._done = ipc, done
        self._exit = asyncio.Event()
        self.closing = self.killed = False
        self.turns = 0

    @property
    def accepting(self) -> bool:
        return not self.closing and not self._exit.is_set()

    def follow_up(self, name: str, prompt: str) -> None:
        ipcfs.write_input(self._ipc, self.folder, name, {"type": "messages", "prompt": prompt})
        self.prompts.append(prompt)

    def close(self) -> None:
        self.closing = True
        self._exit.set()

    def kill(self) -> None:
        self.killed = True
        self._exit.set()

    async def finish_turn(self, name: str = "initial") -> None:
        self.turns += 1
        await self._done(name)

    async def wait(self) -> Outcome:
        await self._exit.wait()
        return Outcome("failed" if self.killed else "ok", "", self.turns)


@dataclass
class Env:
    store: Store
    orch: Orchestrator
    runs: list[ScriptedRun]
    ipc: Path

    async def say(self, folder: str, text: str) -> int:
        msg = InboundMessage(CHATS[folder], uuid.uuid4().hex, SENDER, "bob", text,
                             int(time.time() * 1000))  # fmt: skip
        msg_id = await self.store.add_message(msg)
        assert msg_id is not None
        return msg_id

    async def run_of(self, folder: str, nth: int = 1) -> ScriptedRun:
        async def found() -> ScriptedRun | None:
            mine = [r for r in self.runs if r.folder == folder]
            return mine[nth - 1] if len(mine) >= nth else None

        run: ScriptedRun = await wait_for(found, 10)
        return run


@pytest_asyncio.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    store = await Store.open(tmp_path / "store" / "nanoclaw.db")
    ipc = tmp_path / "ipc"
    for folder, chat in CHATS.items():
        await store.save_group(Group(folder, folder, (chat,), requires_trigger=False))
        ipcfs.ensure_dirs(ipc, folder)
    runs: list[ScriptedRun] = []

    async def launch(
        group: Group, run_id: int, prompt: str, done: Any, options: RunOptions
    ) -> ScriptedRun:
        ipcfs.ensure_dirs(ipc, group.folder)  # as AgentRun.start does
        runs.append(ScriptedRun(ipc, group.folder, run_id, prompt, done))
        return runs[-1]

    async def drain(folder: str) -> int:
        return 0

    async def typing(chat: str, on: bool) -> None:
        pass

    async def gate(group: Group, script: str) -> Gate:
        raise AssertionError("no task runs here")

    rules = Rules((SENDER,), "@Andy", ZoneInfo("UTC"))
    orch = Orchestrator(store, rules, max_concurrent=4, poll_s=0.05, launch=launch,  # type: ignore[arg-type]
                        drain=drain, typing=typing, gate=gate)  # fmt: skip
    yield Env(store, orch, runs, ipc)
    orch.close_live()
    await orch.queue.shutdown()
    await store.close()


async def test_agent_that_breaks_its_input_stalls_no_other_group(env: Env) -> None:
    await env.say("alpha", "first")
    await env.orch.tick()
    alpha = await env.run_of("alpha")
    await alpha.finish_turn()  # idle now, waiting for follow-ups
    assert await env.store.cursor("alpha") > 0
    # the attack: the agent replaces /ipc/input with a file, then new messages arrive
    inp = env.ipc / "alpha" / "input"
    for entry in inp.iterdir():
        entry.unlink()
    inp.rmdir()
    inp.write_text("not a directory")
    lost = await env.say("alpha", "second, for alpha")
    await env.say("beta", "hello beta")

    await env.orch.tick()  # must not raise, and must not skip beta

    beta = await env.run_of("beta")
    assert "hello beta" in beta.prompts[0]
    # alpha's run cannot be steered any more: stopped, recorded as such, not fed
    assert alpha.killed and alpha.prompts == [alpha.prompts[0]]
    assert await env.store.cursor("alpha") < lost
    # alpha's message is not lost: the next run (after the queue's retry) gets it
    again = await env.run_of("alpha", 2)
    assert "second, for alpha" in again.prompts[0]
    assert (env.ipc / "alpha" / "input").is_dir()
    runs = {r.id: r for r in await env.store.runs("alpha")}
    assert runs[alpha.run_id].status == "killed"
    assert "/ipc/input" in runs[alpha.run_id].error
    await again.finish_turn()
    assert await env.store.cursor("alpha") == lost
    # a tick that raised for one group left nothing behind for the next ticks
    await env.say("beta", "more for beta")
    await env.orch.tick()
    await wait_for(lambda: len(beta.prompts) == 2, 5)
