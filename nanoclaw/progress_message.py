"""A group's progress message (`progress=on`): one chat message that a turn's tool calls edit in
place on networks that can edit (Telegram, Matrix), at most one edit per EDIT_EVERY_S, the
turn's last state always shown. Its words and timing are pure; `ProgressPosts` applies them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from nanoclaw.background import Background
from nanoclaw.progress import ToolStep

log = logging.getLogger(__name__)
EDIT_EVERY_S = 3.0  # Telegram and Synapse both rate-limit edits; a chat wants no flicker


@runtime_checkable
class EditsMessages(Protocol):
    """A channel that can post a message and later replace its text (Telegram, Matrix)."""

    async def post_progress(self, chat_id: str, text: str) -> str:
        """Post `text`; the platform's id of the new message."""
        ...

    async def edit_progress(self, chat_id: str, message_id: str, text: str) -> None: ...


def working_text(steps: int, step: ToolStep) -> str:
    """ "Working: step 3, bash: npm run build ...", then how that step ended."""
    what = step.tool if not step.what or step.what == step.tool else f"{step.tool}: {step.what}"
    if step.phase == "start":
        return f"Working: step {steps}, {what} ..."
    code = "" if step.exit is None else f"exit {step.exit}, "
    return f"Working: step {steps}, {what} ({code}{step.ms / 1000:.1f} s)"


def done_text(steps: int, seconds: float) -> str:
    """ "Done: 4 steps in 38 s"."""
    return f"Done: {steps} step{'' if steps == 1 else 's'} in {seconds:.0f} s"


def edit_wait(last: float, now: float, every: float = EDIT_EVERY_S) -> float:
    """Seconds until the message may be edited again (0: now); `last` its last post or edit."""
    return max(0.0, last + every - now)


@dataclass
class Board:
    """One turn's progress message: what it shows, what it should show, when it last changed."""

    channel: EditsMessages
    started: float
    last: float = 0.0
    steps: int = 0
    message_id: str | None = None
    shown: str = ""
    want: str = ""
    final: bool = False  # the turn is over: `want` is its last words
    flushing: bool = False  # a deferred edit is waiting for its turn
    broken: bool = False  # the post failed: nothing more is shown for this turn


class ProgressPosts:
    """The progress message of each chat whose group shows one. `step` as tool calls arrive,
    `finish` when the turn is over; an edit that may not go yet goes later, in the background,
    with whatever is newest by then."""

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        every: float = EDIT_EVERY_S,
    ) -> None:
        self._clock = clock
        self._sleep = sleep
        self._every = every
        self._boards: dict[str, Board] = {}
        self._background = Background("progress")

    async def step(self, channel: EditsMessages, chat_id: str, step: ToolStep) -> None:
        board = self._boards.get(chat_id)
        if board is None or board.final:  # a new turn (a follow-up): a new message
            board = Board(channel, self._clock())
            self._boards[chat_id] = board
        if step.phase == "start":
            board.steps += 1
        board.want = working_text(max(board.steps, 1), step)
        await self._show(chat_id, board)

    async def finish(self, chat_id: str) -> None:
        """The turn is over: its message ends with what it did, edited when the limit allows."""
        board = self._boards.get(chat_id)
        if board is None or board.final:
            return
        board.want = done_text(board.steps, self._clock() - board.started)
        board.final = True
        await self._show(chat_id, board)

    async def close(self) -> None:
        await self._background.close()

    async def _show(self, chat_id: str, board: Board) -> None:
        if board.broken:
            self._forget(chat_id, board)
            return
        if board.message_id is None:
            try:
                board.message_id = await board.channel.post_progress(chat_id, board.want)
            except Exception as exc:  # cosmetic, as typing is: never let it fail a run
                log.info("progress chat=%s: cannot post: %s", chat_id, exc)
                board.broken = True
                self._forget(chat_id, board)
                return
            board.shown, board.last = board.want, self._clock()
            self._forget_if_done(chat_id, board)
        elif not board.flushing:
            if edit_wait(board.last, self._clock(), self._every) > 0:
                board.flushing = True
                self._background.spawn(self._flush(chat_id, board))
            else:
                await self._edit(chat_id, board)

    async def _flush(self, chat_id: str, board: Board) -> None:
        """The deferred edit: waits out the limit, then shows what is newest."""
        try:
            while (wait := edit_wait(board.last, self._clock(), self._every)) > 0:
                await self._sleep(wait)
        finally:
            board.flushing = False
        await self._edit(chat_id, board)

    async def _edit(self, chat_id: str, board: Board) -> None:
        if board.want != board.shown and board.message_id is not None:
            text = board.want
            board.last = self._clock()
            try:
                await board.channel.edit_progress(chat_id, board.message_id, text)
                board.shown = text
            except Exception as exc:  # cosmetic; the next edit may go through
                log.info("progress chat=%s: cannot edit: %s", chat_id, exc)
        self._forget_if_done(chat_id, board)

    def _forget_if_done(self, chat_id: str, board: Board) -> None:
        if board.final and board.shown == board.want:
            self._forget(chat_id, board)

    def _forget(self, chat_id: str, board: Board) -> None:
        if self._boards.get(chat_id) is board:
            del self._boards[chat_id]
