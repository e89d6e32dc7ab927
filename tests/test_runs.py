"""Run lifecycle: idle exit, hard timeout killing the whole sandbox, retry told what it sent."""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio
from conftest import Running, settings_for, start_core, stop_core, wait_for
from fake_anthropic import FakeAnthropic, text_reply, tool_reply


@pytest_asyncio.fixture
async def short(home: Path, fake: FakeAnthropic) -> AsyncIterator[Running]:
    settings = settings_for(home, fake.base_url, AGENT_IDLE_TIMEOUT_S=1, AGENT_TIMEOUT_S=8)
    running, task = await start_core(settings)
    yield running
    await stop_core(running, task)


def sandboxes() -> list[str]:
    """The bwrap children of this process: the sandboxes this test started, not those of
    another suite running on the machine."""
    out = subprocess.run(["pgrep", "-a", "-P", str(os.getpid())], capture_output=True, text=True)
    return [line for line in out.stdout.splitlines() if "bwrap" in line]


def pgrep(command: str) -> list[str]:
    out = subprocess.run(["pgrep", "-fx", command], capture_output=True, text=True)
    return out.stdout.split()


async def _status(running: Running, run_id: int) -> str:
    runs = await running.store.runs("main")
    return next((r.status for r in runs if r.id == run_id), "")


async def test_idle_agent_exits_and_run_finishes_ok(short: Running, fake: FakeAnthropic) -> None:
    await short.say("[[say: hi]]")
    await short.reply_containing("Andy: hi")
    await wait_for(lambda: _is(short, 1, "ok"), timeout=20)
    assert not short.core.orchestrator.live


async def test_hard_timeout_kills_the_whole_sandbox(short: Running, fake: FakeAnthropic) -> None:
    forever = f"sleep {300 + secrets.randbelow(10**6) / 10**6}"  # no other test's sleep
    fake.script(tool_reply("bash", {"command": f"{forever} & {forever}; echo never"}))
    await short.say("run forever")
    await wait_for(lambda: pgrep(forever), timeout=30)  # the checks below can see them
    assert sandboxes()
    await wait_for(lambda: _is(short, 1, "timeout"), timeout=30)
    await wait_for(lambda: not sandboxes(), timeout=10)
    assert pgrep(forever) == []
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


async def test_idle_agent_gives_way_to_a_group_waiting_for_a_slot(
    home: Path, fake: FakeAnthropic
) -> None:
    """One slot, a long idle timeout: the second group must not wait for the first to idle out."""
    settings = settings_for(home, fake.base_url, MAX_CONCURRENT_AGENTS=1, AGENT_IDLE_TIMEOUT_S=600)
    running, task = await start_core(settings)
    try:
        await running.add_group("other", "term:other", requires_trigger=False)
        await running.say("[[say: first answer]]")
        await running.reply_containing("first answer")
        await running.say("[[say: second answer]]", chat="term:other")
        await running.reply_containing("second answer", timeout=60)
        runs = {r.folder: r.status for r in await running.store.runs()}
        assert runs["main"] == "ok"  # closed cleanly after its turn, not killed
        # ...and a follow-up for the first group now starts it again, after the second idles
        await running.say("[[say: third answer]]")
        await running.reply_containing("third answer", timeout=60)
    finally:
        await stop_core(running, task)


async def test_group_over_its_budget_is_told_once_and_not_retried(
    home: Path, fake: FakeAnthropic
) -> None:
    settings = settings_for(home, fake.base_url, GROUP_DAILY_REQUESTS=1, AGENT_IDLE_TIMEOUT_S=1)
    running, task = await start_core(settings)
    try:
        await running.say("[[say: the one answer]]")
        await running.reply_containing("the one answer")
        await wait_for(lambda: _is(running, 1, "ok"), timeout=20)
        second = await running.say("[[say: never forwarded]]")
        out = await running.reply_containing("over its daily request budget", timeout=60)
        assert "(I cannot answer now: group main is over its daily request budget (1 of 1)" in out
        await wait_for(lambda: _is(running, 2, "over_budget"), timeout=20)
        assert await running.store.cursor("main") >= second  # handled: not run again
        await running.say("[[say: still never]]")
        await wait_for(lambda: _is(running, 3, "over_budget"), timeout=60)
        await running.core.settle()  # waits out a retry, had one been scheduled
        assert [r.status for r in await running.store.runs("main")] == ["over_budget"] * 2 + ["ok"]
        assert out.count("over its daily") == running.output.count("over its daily") == 1
        assert len(fake.requests) == 1 and "never" not in running.output
    finally:
        await stop_core(running, task)
