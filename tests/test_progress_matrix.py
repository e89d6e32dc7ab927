"""`progress=on` in a Matrix room, against a real Synapse: one notice, then m.replace edits of
it, the last saying what the turn did."""

from __future__ import annotations

from typing import Any

import pytest
from synapse import Human
from test_matrix import BOT, Bot, _joined, alice, bot, fake, model, server

pytestmark = pytest.mark.asyncio(loop_scope="module")
__all__ = ["alice", "bot", "fake", "model", "server"]  # the fixtures this file uses


def replaces(room: str, event_id: str, prefix: str) -> Any:
    def match(e: Any) -> bool:
        content = e.source.get("content", {})
        relation = content.get("m.relates_to", {})
        new = content.get("m.new_content", {})
        return bool(
            e.room_id == room
            and e.sender == BOT
            and relation == {"rel_type": "m.replace", "event_id": event_id}
            and new.get("body", "").startswith(prefix)
        )

    return match


async def test_matrix_posts_one_notice_and_replaces_it(bot: Bot, alice: Human) -> None:
    room = await alice.create_room(name="progress", invite=[BOT])
    await alice.wait_event(lambda e: e.room_id == room and _joined(e, BOT), timeout=30)
    await bot.running.add_group("prog", f"mx:{room}", requires_trigger=False, progress=True)
    await alice.send_text(room, "go [[bash: echo one]] [[bash: echo two]]")
    first = await alice.wait_event(
        lambda e: e.room_id == room and e.sender == BOT and e.body.startswith("Working"), 60
    )
    assert first.body == "Working: step 1, bash: echo one ..." and first.msgtype == "m.notice"
    done = await alice.wait_event(replaces(room, first.event_id, "Done: 2 steps in "), 60)
    assert done.body.startswith("* Done: 2 steps in ")  # the fallback of clients without edits
    await alice.wait_event(lambda e: e.room_id == room and "RESULT" in e.body, 60)
