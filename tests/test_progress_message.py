"""The progress message of `progress=on` groups: its words and edit timing (pure), the posts
against a recording channel and a fake clock, `groups set/show progress`, and Telegram end to
end (one sendMessage, then editMessageText) against the fake Bot API."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import pytest_asyncio
from conftest import Running, wait_for
from fake_anthropic import FakeAnthropic
from fake_telegram import FakeTelegram
from test_cli import ok, stored_group
from test_telegram import GROUP, start, stop, tg, tg_settings

from nanoclaw.cli.groups import apply_setting
from nanoclaw.models import Group
from nanoclaw.progress import ToolStep
from nanoclaw.progress_message import (
    EditsMessages,
    ProgressPosts,
    done_text,
    edit_wait,
    working_text,
)

__all__ = ["tg"]  # the fixture, imported for the Telegram tests


@pytest.mark.parametrize(
    ("steps", "step", "text"),
    [
        (3, ToolStep("start", "bash", "npm run build"), "Working: step 3, bash: npm run build ..."),
        (
            3,
            ToolStep("end", "bash", "npm run build", 0, 1234),
            "Working: step 3, bash: npm run build (exit 0, 1.2 s)",
        ),
        (1, ToolStep("start", "read_file", ""), "Working: step 1, read_file ..."),
        (
            2,
            ToolStep("end", "read_file", "notes.md", None, 40),
            "Working: step 2, read_file: notes.md (0.0 s)",
        ),
        (1, ToolStep("start", "web", "web"), "Working: step 1, web ..."),
    ],
)
def test_working_text(steps: int, step: ToolStep, text: str) -> None:
    assert working_text(steps, step) == text


@pytest.mark.parametrize(
    ("steps", "seconds", "text"),
    [
        (4, 38.2, "Done: 4 steps in 38 s"),
        (1, 2.0, "Done: 1 step in 2 s"),
        (0, 0.4, "Done: 0 steps in 0 s"),
    ],
)
def test_done_text(steps: int, seconds: float, text: str) -> None:
    assert done_text(steps, seconds) == text


@pytest.mark.parametrize(
    ("last", "now", "wait"),
    [(10.0, 10.0, 3.0), (10.0, 11.5, 1.5), (10.0, 13.0, 0.0), (10.0, 60.0, 0.0)],
)
def test_edit_wait(last: float, now: float, wait: float) -> None:
    assert edit_wait(last, now) == pytest.approx(wait)


@dataclass
class FakeClock:
    """Time that moves only when told, or when a deferred edit sleeps."""

    now: float = 1000.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        await asyncio.sleep(0)


@dataclass
class Recorder:
    """A channel that edits messages, recording (what, message id, text, when)."""

    clock: FakeClock
    calls: list[tuple[str, str, str, float]] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def post_progress(self, chat_id: str, text: str) -> str:
        self.calls.append(("post", str(len(self.calls)), text, self.clock.now))
        self.changed.set()
        return str(len(self.calls) - 1)

    async def edit_progress(self, chat_id: str, message_id: str, text: str) -> None:
        self.calls.append(("edit", message_id, text, self.clock.now))
        self.changed.set()


def start_(tool: str, what: str) -> ToolStep:
    return ToolStep("start", tool, what)


def end_(tool: str, what: str, code: int = 0) -> ToolStep:
    return ToolStep("end", tool, what, code, 500)


async def test_one_post_then_edits_no_closer_than_the_limit_and_the_end_always_shown() -> None:
    clock = FakeClock()
    channel = Recorder(clock)
    assert isinstance(channel, EditsMessages)
    posts = ProgressPosts(clock=clock, sleep=clock.sleep)

    async def shown(n: int) -> None:
        await wait_for(lambda: len(channel.calls) >= n, 10)

    await posts.step(channel, "tg:1", start_("bash", "ls"))  # posted at once
    await posts.step(channel, "tg:1", end_("bash", "ls"))  # too soon: deferred
    await shown(2)
    await posts.step(channel, "tg:1", start_("bash", "make"))  # too soon again
    await shown(3)
    clock.now += 10
    await posts.step(channel, "tg:1", end_("bash", "make", 2))  # long after: at once
    await posts.step(channel, "tg:1", start_("read_file", "a.txt"))  # deferred, then overtaken
    await posts.finish("tg:1")
    await wait_for(lambda: channel.calls[-1][2].startswith("Done"), 10)
    await posts.close()
    assert [(c[0], c[1], c[2], c[3] - 1000) for c in channel.calls] == [
        ("post", "0", "Working: step 1, bash: ls ...", 0),
        ("edit", "0", "Working: step 1, bash: ls (exit 0, 0.5 s)", 3),
        ("edit", "0", "Working: step 2, bash: make ...", 6),
        ("edit", "0", "Working: step 2, bash: make (exit 2, 0.5 s)", 16),
        ("edit", "0", "Done: 3 steps in 16 s", 19),
    ]


async def test_a_new_turn_posts_a_new_message() -> None:
    clock = FakeClock()
    channel = Recorder(clock)
    posts = ProgressPosts(clock=clock, sleep=clock.sleep)
    await posts.step(channel, "tg:1", start_("bash", "ls"))
    await posts.finish("tg:1")  # deferred: within the limit
    await posts.step(channel, "tg:1", start_("bash", "pwd"))  # the follow-up's turn
    await wait_for(lambda: any(c[2].startswith("Done") for c in channel.calls), 10)
    await posts.close()
    assert [(c[0], c[1], c[2]) for c in channel.calls] == [
        ("post", "0", "Working: step 1, bash: ls ..."),
        ("post", "1", "Working: step 1, bash: pwd ..."),
        ("edit", "0", "Done: 1 step in 0 s"),
    ]


async def test_finish_without_steps_posts_nothing() -> None:
    clock = FakeClock()
    channel = Recorder(clock)
    posts = ProgressPosts(clock=clock, sleep=clock.sleep)
    await posts.finish("tg:1")
    await posts.close()
    assert channel.calls == []


def test_apply_setting_progress() -> None:
    base = Group("work", "work")
    assert apply_setting(base, "progress", "on").progress is True
    assert apply_setting(apply_setting(base, "progress", "ON"), "progress", "off").progress is False
    with pytest.raises(ValueError, match="progress is on or off"):
        apply_setting(base, "progress", "sometimes")


async def test_groups_set_and_show_progress(tmp_path: Path) -> None:
    ok(tmp_path, "groups", "add", "work", "--chat", "tg:-100123")
    assert "progress:        off" in ok(tmp_path, "groups", "show", "work")
    ok(tmp_path, "groups", "set", "work", "progress=on")
    group = await stored_group(tmp_path, "work")
    assert group is not None and group.progress is True
    assert "progress:        on" in ok(tmp_path, "groups", "show", "work")
    ok(tmp_path, "groups", "set", "work", "progress=off")
    group = await stored_group(tmp_path, "work")
    assert group is not None and group.progress is False


@pytest_asyncio.fixture
async def tg_bot(home: Path, fake: FakeAnthropic, tg: FakeTelegram) -> AsyncIterator[Running]:
    running, task, _ = await start(tg_settings(home, fake, tg))
    yield running
    await stop(running, task)


async def test_telegram_posts_one_progress_message_and_edits_it(
    tg_bot: Running, tg: FakeTelegram
) -> None:
    await tg_bot.add_group("team", f"tg:{GROUP}", requires_trigger=True, progress=True)
    tg.push_update(tg.text_message(GROUP, "@Andy go [[bash: echo one]] [[bash: echo two]]"))
    await asyncio.to_thread(
        tg.wait_until, lambda: any(e.visible.startswith("Done") for e in tg.edits), 60, "Done"
    )
    progress = [s for s in tg.sent if s.visible.startswith("Working")]
    assert len(progress) == 1 and progress[0].parse_mode is None
    assert progress[0].visible == "Working: step 1, bash: echo one ..."
    edits = tg.edits
    assert {(e.chat_id, e.message_id) for e in edits} == {(GROUP, progress[0].message_id)}
    assert edits[-1].visible.startswith("Done: 2 steps in ")
    assert any(s.visible.startswith("RESULT") for s in tg.sent)  # the reply, as ever


async def test_telegram_without_the_setting_shows_typing_only(
    tg_bot: Running, tg: FakeTelegram
) -> None:
    await tg_bot.add_group("team", f"tg:{GROUP}", requires_trigger=True)
    tg.push_update(tg.text_message(GROUP, "@Andy go [[bash: echo one]]"))
    sent = await tg.await_sent(1, timeout=60)
    await tg_bot.core.settle()
    assert sent[0].visible.startswith("RESULT")
    assert [s for s in tg.sent if s.visible.startswith("Working")] == [] and tg.edits == []
