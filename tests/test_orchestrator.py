"""The orchestrator against a real store, queue and scheduler, with scripted runs: no sandbox.

`launch` returns a `ScriptedRun` (the `live.Run` protocol): the test ends its turns and says
how it exits; follow-ups land in the group's real input dir through `ipcfs.write_input`.
Every test settles the queue (it retries after a few ms here) instead of sleeping.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import pytest_asyncio
from conftest import wait_for

from nanoclaw.agent.protocol import INITIAL_INPUT
from nanoclaw.errors import SandboxError
from nanoclaw.ipc import files as ipcfs
from nanoclaw.live import Run, TurnDone
from nanoclaw.models import Group, InboundMessage
from nanoclaw.orchestrator import Orchestrator, Rules
from nanoclaw.progress import Activity, Watch
from nanoclaw.sandbox.gate import Gate
from nanoclaw.sandbox.launcher import RunOptions
from nanoclaw.sandbox.run import Outcome, key_refused
from nanoclaw.schedule.scheduler import Scheduler, TaskChanges
from nanoclaw.schedule.tasks import AGENT, Schedule, Task
from nanoclaw.store.db import now_ms
from nanoclaw.store.messages import Store

SENDER = "tg:111"
CHATS = {"alpha": "tg:-1", "beta": "tg:-2"}
UTC = ZoneInfo("UTC")
SETTLE_S = 10.0


class ScriptedRun:
    """An agent run without a sandbox; `close()` ends an idle one as the agent would."""

    def __init__(self, ipc: Path, folder: str, run_id: int, prompt: str, done: TurnDone) -> None:
        self.folder, self.run_id, self.prompts, self.names = (
            folder,
            run_id,
            [prompt],
            [INITIAL_INPUT],
        )
        self.started = time.monotonic()
        self.turns = 0
        self.closing = self.killed = False
        self._ipc, self._done = ipc, done
        self._outcome: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()

    @property
    def accepting(self) -> bool:
        return not self.closing and not self._outcome.done()

    def follow_up(self, name: str, prompt: str) -> None:
        ipcfs.write_input(self._ipc, self.folder, name, {"type": "messages", "prompt": prompt})
        self.names.append(name)
        self.prompts.append(prompt)

    def close(self) -> None:
        self.closing = True
        self.end(Outcome("ok", "", self.turns))

    activity = Activity()  # read only: the scripted run reports no tool calls

    def watch(self, listener: Watch) -> None:
        pass

    def pause(self, on: bool) -> bool:
        return False

    def kill(self) -> None:
        self.killed = True
        self.end(Outcome("killed", "killed", self.turns))

    def end(self, outcome: Outcome) -> None:
        if not self._outcome.done():
            self._outcome.set_result(outcome)

    async def finish_turn(self, name: str | None = None) -> None:
        self.turns += 1
        await self._done(self.names[-1] if name is None else name)

    async def wait(self) -> Outcome:
        return await self._outcome


@dataclass
class Env:
    store: Store
    ipc: Path
    max_concurrent: int
    runs: list[ScriptedRun] = field(default_factory=list)
    refuse_launches: int = 0  # the next launches fail as a sandbox that cannot start
    told: list[str] = field(default_factory=list)
    typing: list[tuple[str, bool]] = field(default_factory=list)
    made: list[Orchestrator] = field(default_factory=list)
    changes: TaskChanges = field(default_factory=TaskChanges)
    orch: Orchestrator = field(init=False)
    scheduler: Scheduler = field(init=False)

    def __post_init__(self) -> None:
        self.orch = self.orchestrator()
        self.scheduler = Scheduler(
            self.store, self.ipc, UTC, self.orch.task_due, changes=self.changes
        )

    def orchestrator(self) -> Orchestrator:
        """A fresh orchestrator (a daemon start) over the same store."""

        async def launch(
            group: Group, run_id: int, prompt: str, done: TurnDone, options: RunOptions
        ) -> Run:
            if self.refuse_launches:
                self.refuse_launches -= 1
                raise SandboxError("bwrap: cannot start")
            ipcfs.ensure_dirs(self.ipc, group.folder)  # as AgentRun.start does
            self.runs.append(ScriptedRun(self.ipc, group.folder, run_id, prompt, done))
            return self.runs[-1]

        async def drain(folder: str) -> int:
            return 0

        async def typing(chat: str, on: bool) -> None:
            self.typing.append((chat, on))

        async def gate(group: Group, script: str) -> Gate:
            raise AssertionError("no task here has a script")

        orch = Orchestrator(
            self.store,
            Rules((SENDER,), "@Andy", UTC),
            max_concurrent=self.max_concurrent,
            poll_s=0.05,
            launch=launch,
            drain=drain,
            typing=typing,
            gate=gate,
            tasks_changed=self.changes.changed,
            retry_base_s=0.001,
        )
        self.made.append(orch)
        return orch

    async def say(self, folder: str, text: str) -> int:
        msg = InboundMessage(
            CHATS[folder], uuid.uuid4().hex, SENDER, "bob", text, int(time.time() * 1000)
        )
        msg_id = await self.store.add_message(msg)
        assert msg_id is not None
        return msg_id

    async def run_of(self, folder: str, nth: int = 1) -> ScriptedRun:
        def found() -> ScriptedRun | None:
            mine = [r for r in self.runs if r.folder == folder]
            return mine[nth - 1] if len(mine) >= nth else None

        run: ScriptedRun = await wait_for(found, SETTLE_S)
        return run

    async def settle(self, orch: Orchestrator | None = None) -> None:
        """Nothing runs, waits or is due for a retry; the outbox read into `told`."""
        await asyncio.wait_for((orch or self.orch).queue.wait_idle(), SETTLE_S)
        self.told += [item.text for item in await self.store.claim_outbox(["tg"])]

    async def statuses(self, folder: str) -> list[tuple[str, str]]:
        return [(r.status, r.error) for r in reversed(await self.store.runs(folder))]


@pytest_asyncio.fixture
async def make_env(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[Env]]]:
    store = await Store.open(tmp_path / "store" / "nanoclaw.db")
    envs: list[Env] = []

    async def make(max_concurrent: int = 4) -> Env:
        ipc = tmp_path / "ipc"
        for folder, chat in CHATS.items():
            await store.save_group(Group(folder, folder, (chat,), requires_trigger=False))
            ipcfs.ensure_dirs(ipc, folder)
        envs.append(Env(store, ipc, max_concurrent))
        return envs[-1]

    yield make
    for env in envs:
        for orch in env.made:
            orch.close_live()
            await orch.queue.shutdown()
    await store.close()


@pytest_asyncio.fixture
async def env(make_env: Callable[..., Awaitable[Env]]) -> Env:
    return await make_env()


async def test_cursor_moves_on_turn_done_and_follow_ups_reach_the_live_run(env: Env) -> None:
    first = await env.say("alpha", "first")
    await env.orch.tick()
    run = await env.run_of("alpha")
    assert "first" in run.prompts[0]
    assert await env.store.cursor("alpha") < first  # started, not answered yet

    second = await env.say("alpha", "second")
    await env.orch.tick()
    assert len(run.prompts) == 2 and "second" in run.prompts[1] and "first" not in run.prompts[1]
    assert (env.ipc / "alpha" / "input" / run.names[1]).is_file()
    live = env.orch.live["alpha"]
    assert live.given_upto == second and env.orch.live.run_id("alpha") == run.run_id

    await run.finish_turn(INITIAL_INPUT)  # the first turn covers the first batch only
    assert await env.store.cursor("alpha") == first and live.idle_since is None
    await run.finish_turn("1700000000000-unknown.json")  # no such input: nothing moves
    assert await env.store.cursor("alpha") == first
    await run.finish_turn(run.names[1])
    assert await env.store.cursor("alpha") == second and live.idle_since is not None
    assert env.typing[-1] == (CHATS["alpha"], False)

    await env.orch.tick()  # nothing new: an idle run with nobody waiting keeps its slot
    assert run.accepting and len(env.runs) == 1
    run.close()
    await env.settle()
    assert await env.statuses("alpha") == [("ok", "")]
    assert env.orch.live.run_id("alpha") is None


@pytest.mark.parametrize("waiting", ["another group", "its own task"])
async def test_an_idle_agent_gives_way(
    make_env: Callable[..., Awaitable[Env]], waiting: str
) -> None:
    env = await make_env(max_concurrent=1)
    await env.say("alpha", "hi")
    await env.orch.tick()
    alpha = await env.run_of("alpha")
    await alpha.finish_turn()
    assert alpha.accepting  # idle, holding the only slot

    if waiting == "another group":
        await env.say("beta", "hello beta")
        await env.orch.tick()
        assert alpha.closing
        beta = await env.run_of("beta")
        assert "hello beta" in beta.prompts[0]
        await beta.finish_turn()
        beta.close()
    else:
        task = Task(
            id="report",
            folder="alpha",
            source=AGENT,
            prompt="the weekly report",
            schedule=Schedule("every", every_s=3600),
            next_run_ms=now_ms() - 1,
            created_ms=now_ms(),
        )
        assert await env.store.add_task(task)
        [(claimed, _)] = await env.scheduler.tick()  # submits to the orchestrator
        assert claimed.id == "report" and alpha.closing
        run = await env.run_of("alpha", 2)
        assert "the weekly report" in run.prompts[0]
        assert env.orch.live["alpha"].kind == "task"
        await run.finish_turn()
        run.close()
    await env.settle()
    assert [s for s, _ in await env.statuses("alpha")] == ["ok"] * (
        1 + (waiting != "another group")
    )
    if waiting == "its own task":
        [task_run] = await env.store.task_runs("report")
        assert task_run.status == "silent" and task_run.run_id == run.run_id


async def test_over_budget_counts_the_batch_handled_and_tells_the_chat_once(env: Env) -> None:
    why = "nanoclaw: the group's daily request budget is spent"
    for nth in (1, 2):
        msg_id = await env.say("alpha", f"message {nth}")
        await env.orch.tick()
        (await env.run_of("alpha", nth)).end(Outcome("over_budget", why))
        await env.settle()
        assert await env.store.cursor("alpha") == msg_id  # retrying cannot help: moved on
    assert env.told == ["(I cannot answer now: the group's daily request budget is spent.)"]
    assert [s for s, _ in await env.statuses("alpha")] == ["over_budget"] * 2  # no retries


async def test_a_refused_key_holds_the_batch_without_retry_and_tells_once(env: Env) -> None:
    refused = Outcome("auth", f"{key_refused('openai')} (the model endpoint answered 401)")
    notice = f"(I cannot answer now: {refused.error}.)"
    assert "OPENAI_API_KEY" in notice
    one = await env.say("alpha", "one")
    await env.orch.tick()
    (await env.run_of("alpha")).end(refused)
    await env.settle()
    await env.orch.tick()  # a tick alone does not run the held batch again
    await env.settle()
    assert len(env.runs) == 1 and env.told == [notice]
    assert await env.store.cursor("alpha") < one

    await env.say("alpha", "two")  # the next message runs the batch again; not told twice
    await env.orch.tick()
    again = await env.run_of("alpha", 2)
    assert "one" in again.prompts[0] and "two" in again.prompts[0]
    again.end(refused)
    await env.settle()
    assert env.told == [notice]

    three = await env.say("alpha", "three")  # the key is fixed: all three are answered
    await env.orch.tick()
    fixed = await env.run_of("alpha", 3)
    assert all(word in fixed.prompts[0] for word in ("one", "two", "three"))
    await fixed.finish_turn()
    assert await env.store.cursor("alpha") == three
    fixed.close()
    await env.settle()

    await env.say("alpha", "four")  # refused again later: a new verdict, told again
    await env.orch.tick()
    (await env.run_of("alpha", 4)).end(refused)
    await env.settle()
    assert env.told == [notice, notice]
    assert [s for s, _ in await env.statuses("alpha")] == ["auth", "auth", "ok", "auth"]


@pytest.mark.parametrize(
    ("failure", "error"),
    [
        (Outcome("failed", "agent exited 1"), "agent exited 1"),
        (Outcome("ok", "", 0), "agent exited without finishing a turn"),
        (None, "bwrap: cannot start"),  # the sandbox never started
    ],
)
async def test_a_failed_run_is_retried_by_the_queue(
    env: Env, failure: Outcome | None, error: str
) -> None:
    env.refuse_launches = int(failure is None)
    msg_id = await env.say("alpha", "please answer")
    await env.orch.tick()
    if failure is not None:
        (await env.run_of("alpha")).end(failure)
    retry = await env.run_of("alpha", 1 if failure is None else 2)
    assert "please answer" in retry.prompts[0]
    assert await env.store.cursor("alpha") < msg_id
    await retry.finish_turn()
    assert await env.store.cursor("alpha") == msg_id
    retry.close()
    await env.settle()
    assert await env.statuses("alpha") == [("failed", error), ("ok", "")]


async def test_after_a_crash_the_batch_runs_again_with_the_replies_already_sent(
    env: Env,
) -> None:
    msg_id = await env.say("alpha", "deploy the site")
    await env.orch.tick()
    cut = await env.run_of("alpha")
    await env.store.enqueue_reply("alpha", CHATS["alpha"], "deploying now", cut.run_id)
    await env.orch.queue.shutdown()  # the daemon dies mid-turn: no outcome, no cursor move
    assert await env.store.interrupt_stale_runs() == 1  # the next start's first step

    restarted = env.orchestrator()
    await restarted.tick()
    run = await env.run_of("alpha", 2)
    assert "deploy the site" in run.prompts[0]
    assert "do not send them again" in run.prompts[0] and "deploying now" in run.prompts[0]
    await run.finish_turn()
    assert await env.store.cursor("alpha") == msg_id
    run.close()
    await env.settle(restarted)
    assert [s for s, _ in await env.statuses("alpha")] == ["interrupted", "ok"]


async def test_the_owners_stop_kills_the_run_and_drops_its_batch(env: Env) -> None:
    await env.say("alpha", "start something long")
    await env.orch.tick()
    run = await env.run_of("alpha")
    await run.finish_turn()
    given = await env.say("alpha", "and then more")
    await env.orch.tick()
    typed = await env.say("alpha", "typed while stopping")  # not given to the run yet
    assert env.orch.live["alpha"].given_upto == given

    stopped = await env.orch.stop("alpha", typed)
    assert stopped is not None and (stopped.run_id, stopped.turns) == (run.run_id, 1)
    assert run.killed
    await env.settle()
    assert await env.store.cursor("alpha") == typed
    assert await env.statuses("alpha") == [("stopped", "stopped by the owner")]  # no retry

    later = await env.say("alpha", "never mind")  # nothing live: the cursor still passes it
    assert await env.orch.stop("alpha", later) is None
    await env.orch.tick()
    await env.settle()
    assert await env.store.cursor("alpha") == later and len(env.runs) == 1


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
    [(status, error), _] = await env.statuses("alpha")
    assert status == "killed" and "/ipc/input" in error
    await again.finish_turn()
    assert await env.store.cursor("alpha") == lost
    # a tick that raised for one group left nothing behind for the next ticks
    await env.say("beta", "more for beta")
    await env.orch.tick()
    await wait_for(lambda: len(beta.prompts) == 2, SETTLE_S)
