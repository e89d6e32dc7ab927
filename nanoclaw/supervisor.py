"""The supervisor: one agent run from launch to its recorded outcome, and the live runs.

It launches a run (an injected `Launch`), watches its tool calls, moves the group's cursor
as each turn is reported done (its replies are on disk by then), drains the last files,
records the outcome, and stops a run when the owner asks. What to run, and when, is the
orchestrator's.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from nanoclaw.errors import SandboxError
from nanoclaw.live import Launch, Live, LiveRuns
from nanoclaw.models import Group
from nanoclaw.nixenv import EnvError
from nanoclaw.progress import ToolStep
from nanoclaw.sandbox.launcher import RunOptions
from nanoclaw.sandbox.run import Outcome, RunStatus
from nanoclaw.store.messages import Store

log = logging.getLogger(__name__)
OWNER_STOP = "stopped by the owner"


@dataclass(frozen=True)
class Stopped:
    """What the owner's stop ended: the run, how long it had worked, the turns it finished,
    the tool calls it started."""

    run_id: int
    seconds: float
    turns: int
    steps: int = 0


class Supervisor:
    def __init__(
        self,
        store: Store,
        launch: Launch,
        drain: Callable[[str], Awaitable[int]],
        typing: Callable[[str, bool], Awaitable[None]],
        idle: Callable[[], None],
        live: LiveRuns | None = None,
        progress: Callable[[str, int, ToolStep], Awaitable[None]] | None = None,
    ) -> None:
        self._store = store
        self._launch = launch
        self._drain = drain
        self._typing = typing
        self._idle = idle  # an agent went idle: it may give its slot away
        self._progress = progress  # (folder, run id, step): each tool call as it starts, ends
        self.live = live if live is not None else LiveRuns()

    async def agent(self, group: Group, live: Live, prompt: str, options: RunOptions) -> Outcome:
        """Launch, wait, drain the last files, record the outcome."""
        folder, run_id = group.folder, live.run_id
        self.live[folder] = live
        await self._typing(live.chat_id, True)
        try:
            live.run = await self._launch(
                group, run_id, prompt, lambda n: self._done(folder, live, n), options
            )
            if self._progress is not None:
                live.run.watch(functools.partial(self._progress, folder, run_id))
            if live.stopped == OWNER_STOP:
                live.run.kill()  # stopped while it was starting
            outcome = await live.run.wait()
            if live.stopped:
                halt: RunStatus = "stopped" if live.stopped == OWNER_STOP else "killed"
                outcome = Outcome(halt, live.stopped, outcome.turns)
        except EnvError as exc:  # the group's tools cannot be had: never the host's instead
            outcome = Outcome("env", str(exc))
        except SandboxError as exc:
            outcome = Outcome("failed", str(exc))
        finally:
            self.live.pop(folder, None)
            await self._typing(live.chat_id, False)
        await self._drain(folder)
        if outcome.ok and outcome.turns == 0:
            outcome = Outcome("failed", "agent exited without finishing a turn")
        await self._store.finish_run(run_id, outcome.status, outcome.error)
        log.log(
            logging.INFO if outcome.ok else logging.WARNING,
            "group=%s run=%s finished: %s %s",
            folder,
            run_id,
            outcome.status,
            outcome.error,
        )
        return outcome

    async def _done(self, folder: str, live: Live, name: str) -> None:
        """The agent finished the turn for input `name`: its replies are on disk."""
        upto = live.inputs.get(name)
        if upto is None:
            return
        for key in [k for k, v in live.inputs.items() if v <= upto]:
            del live.inputs[key]
        await self._drain(folder)
        if live.kind == "message":
            await self._store.advance_cursor(folder, upto)
        if not live.inputs:
            live.idle_since = time.monotonic()
            await self._typing(live.chat_id, False)
            self._idle()

    async def stop(self, folder: str, upto: int = 0) -> Stopped | None:
        """The owner stops the group's run: its sandbox is killed now. A message run's batch
        counts as handled (the cursor passes what it was given, and `upto`), so no later run
        asks it again; a scheduled run is logged "stopped". None when none was live; a batch
        still waiting is dropped all the same."""
        live = self.live.get(folder)
        if live is None:
            await self._store.advance_cursor(folder, upto)
            return None
        live.stopped = OWNER_STOP
        if live.run is not None:
            live.run.kill()
        await self._store.advance_cursor(folder, max(live.given_upto, upto))
        run = live.run
        seconds, turns = (time.monotonic() - run.started, run.turns) if run else (0.0, 0)
        log.info("group=%s run=%s %s after %.0fs", folder, live.run_id, OWNER_STOP, seconds)
        return Stopped(live.run_id, seconds, turns, run.activity.steps if run else 0)

    def close_live(self) -> None:
        """Ask every live agent to finish its turn and exit (shutdown)."""
        for live in list(self.live.values()):
            if live.run is not None:
                live.run.close()
