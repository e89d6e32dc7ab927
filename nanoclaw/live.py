"""A group's live run as the orchestrator sees it: the `Run` seam and what was handed to it.

`Run` is all the orchestrator asks of an agent run (`runner.AgentRun` is one; the tests
script one without a sandbox); `Live` records which messages each input carried, and
`LiveRuns` answers the IPC handler's "which run of this group is writing now".
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol

from nanoclaw.models import Group
from nanoclaw.progress import Activity, Watch
from nanoclaw.sandbox.launcher import RunOptions
from nanoclaw.sandbox.run import Outcome

RunKind = Literal["message", "task"]
TurnDone = Callable[[str], Awaitable[None]]  # the agent finished the turn for this input name


class Run(Protocol):
    """A started agent run: steered with follow-ups, ended by close (after its turn) or kill."""

    @property
    def run_id(self) -> int: ...

    @property
    def accepting(self) -> bool:
        """Whether a follow-up may still be handed to it."""
        ...

    @property
    def turns(self) -> int:
        """Turns it reported done so far."""
        ...

    @property
    def started(self) -> float:
        """`time.monotonic()` when it was launched."""
        ...

    @property
    def activity(self) -> Activity:
        """Its steps, the tool running now, whether it is paused."""
        ...

    def follow_up(self, name: str, prompt: str) -> None:
        """Write input `name`; raises OSError when the run's input dir cannot take it."""

    def watch(self, listener: Watch) -> None:
        """Tell `listener` of each tool call as it starts and ends."""

    def pause(self, on: bool) -> bool:
        """Hold the agent before its next model call or tool (or let it go on); False when
        it cannot be told."""
        ...

    def close(self) -> None: ...

    def kill(self) -> None: ...

    async def wait(self) -> Outcome: ...


Launch = Callable[[Group, int, str, TurnDone, RunOptions], Awaitable[Run]]


@dataclass
class Live:
    run_id: int
    chat_id: str
    given_upto: int  # the newest message id handed to the run, in its first input or a follow-up
    inputs: dict[str, int] = field(default_factory=dict)  # input name -> newest id it carries
    run: Run | None = None
    kind: RunKind = "message"  # "task": takes no follow-ups and exits after its turn
    idle_since: float | None = None  # done with every turn, waiting for a follow-up
    stopped: str = ""  # why the host stopped the run (it broke its own /ipc/input, OWNER_STOP)


class LiveRuns(dict[str, Live]):
    """folder -> its live run; shared by the orchestrator (which fills it) and the IPC handler."""

    def run_id(self, folder: str) -> int | None:
        live = self.get(folder)
        return live.run_id if live else None
