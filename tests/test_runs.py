"""Run lifecycle: idle exit, hard timeout killing the whole sandbox, retry told what it sent."""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio
from conftest import Running, settings_for, start_core, stop_core, wait_for
from fake_anthropic import FakeAnthropic, text_reply, tool_reply


@pytest_asyncio.fixture
async def short(home: Path, fake: FakeAnthropic) -> AsyncIterator[Running]:
    settings = settings_for(home, fake.base_url, AGENT_IDLE_TIMEOUT_S=1, AGENT_TIMEOUT_S=4)
    running, task = await start_core(settings)
    yield running
    await stop_core(running, task)


def sandboxes(home: Path) -> list[str]:
    out = subprocess.run(["pgrep", "-af", "--", "--args"], capture_output=True, text=True)
    return [line for line in out.stdout.splitlines() if "bwrap" in line]


async def _status(running: Running, run_id: int) -> str:
    runs = await running.store.runs("main")
    return next((r.status for r in runs if r.id == run_id), "")


async def test_idle_agent_exits_and_run_finishes_ok(short: Running, fake: FakeAnthropic) -> None:
    await short.say("[[say: hi]]")
    await short.reply_containing("Andy: hi")
    await wait_for(lambda: _is(short, 1, "ok"), timeout=20)
    assert not short.core.orchestrator.live


async def test_hard_timeout_kills_the_whole_sandbox(short: Running, fake: FakeAnthropic) -> None:
    fake.script(tool_reply("bash", {"command": "sleep 300 & sleep 300; echo never"}))
    await short.say("run forever")
    await wait_for(lambda: _is(short, 1, "timeout"), timeout=30)
    await wait_for(lambda: not sandboxes(short.settings.nanoclaw_home), timeout=10)
    leftovers = subprocess.run(["pgrep", "-f", "sleep 300"], capture_output=True, text=True)
    assert leftovers.stdout.strip() == ""
    runs = await short.store.runs("main")
    assert "killed after" in runs[-1].error


async def _is(running: Running, run_id: int, status: str) -> bool:
    return await _status(running, run_id) == status


async def test_retry_after_cut_short_run_is_told_what_it_already_sent(
    short: Running, fake: FakeAnthropic
) -> None:
    from dataclasses import replace

    fake.script(
        tool_reply("send_message", {"text": "working on it, step one done"}),
        replace(text_reply("too late"), delay=30),  # the run hits its 4 s limit here
    )
    await short.say("do the long thing")
    await short.reply_containing("step one done")
    await wait_for(lambda: _is(short, 1, "timeout"), timeout=30)
    # the queue retries with backoff; the new run's prompt names what was already sent
    await wait_for(lambda: len(fake.requests) >= 3, timeout=30)
    prompt = fake.requests[2].body["messages"][-1]["content"]
    assert "already sent" in prompt and "step one done" in prompt
    await short.reply_containing("Andy: echo:", timeout=30)
    sent = [line for line in short.output.splitlines() if line.startswith("Andy: working on")]
    assert len(sent) == 1  # the retry did not send it again
