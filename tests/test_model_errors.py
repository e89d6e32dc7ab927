"""Model errors in a run: a refused key is permanent (told once, not retried, messages kept);
an unreachable model endpoint is retried by the queue with one short log line per failure."""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import (
    SECRET_KEY,
    Running,
    cli_env,
    settings_for,
    start_core,
    stop_core,
    wait_for,
)
from fake_anthropic import FakeAnthropic

from nanoclaw.agent.__main__ import describe_error
from nanoclaw.agent.model import error_of
from nanoclaw.config import Settings

NOTICE = "the model refused the key: check ANTHROPIC_API_KEY"


async def _finished(running: Running, n: int) -> bool:
    runs = await running.store.runs("main")
    return len(runs) == n and all(r.status != "running" for r in runs)


async def test_a_refused_key_is_told_once_and_its_batch_waits(
    fake: FakeAnthropic, settings: Settings
) -> None:
    fake.api_key = "sk-ant-the-right-key"  # the daemon's SECRET_KEY is refused: 401
    running, task = await start_core(settings)
    try:
        first = await running.say("hello one")
        await running.reply_containing(NOTICE, timeout=30)
        await wait_for(lambda: _finished(running, 1))
        await running.core.settle()  # settled: no retry is due
        assert [r.path for r in fake.requests] == ["/v1/messages"]  # the SDK did not retry
        [run] = await running.store.runs("main")
        assert run.status == "auth" and "ANTHROPIC_API_KEY" in run.error
        assert await running.store.cursor("main") < first  # the batch stays pending

        await running.say("hello two")  # the next message runs again; the chat is not told twice
        await wait_for(lambda: _finished(running, 2))
        await running.core.settle()
        assert len(fake.requests) == 2
        assert running.output.count(NOTICE) == 1

        fake.api_key = SECRET_KEY  # the key is fixed: the next message runs all three
        third = await running.say("hello three")
        await running.reply_containing("echo: hello three", timeout=30)
        prompt = str(fake.requests[-1].body["messages"][-1]["content"])
        assert "hello one" in prompt and "hello two" in prompt
        await wait_for(lambda: _cursor_past(running, third))
    finally:
        await stop_core(running, task)


async def _cursor_past(running: Running, msg_id: int) -> bool:
    return await running.store.cursor("main") >= msg_id


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_an_unreachable_model_is_one_short_line_per_failed_run(
    home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = settings_for(home, f"http://127.0.0.1:{_closed_port()}")
    caplog.set_level(logging.INFO)
    running, task = await start_core(settings)
    try:
        await running.say("hello")
        await wait_for(lambda: _finished(running, 1), timeout=60)
        await wait_for(lambda: "retry 1" in caplog.text)
        [run] = await running.store.runs("main")
    finally:
        await stop_core(running, task)
    assert run.status == "failed"
    assert "cannot reach the model endpoint" in run.error
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    about_run = [r.getMessage() for r in warnings if f"run={run.id}" in r.getMessage()]
    assert len(about_run) == 1, about_run  # the orchestrator's "finished" line, nothing else
    assert "Error code" not in about_run[0] and "{" not in about_run[0]
    assert [r for r in warnings if r.name == "nanoclaw.proxy.server"] == []  # nor one per SDK retry
    assert "Traceback" not in caplog.text
    log_text = "".join(p.read_text() for p in settings.layout.logs.rglob("*.log"))
    assert "Traceback" not in log_text


@pytest.mark.parametrize(
    ("status", "kind", "message", "expected"),
    [
        (401, "authentication_error", "invalid x-api-key", "401 authentication_error"),
        (403, "permission_error", "nanoclaw: server tools are off", "nanoclaw: server tools"),
        (
            502,
            "api_error",
            "model endpoint unreachable: ClientConnectorError",
            "cannot reach the model endpoint",
        ),
        (529, "overloaded_error", "Overloaded", "529 overloaded_error: Overloaded"),
    ],
)
def test_describe_error_is_one_short_line(
    status: int, kind: str, message: str, expected: str
) -> None:
    body = {"type": "error", "error": {"type": kind, "message": message + "\n" + "x" * 2000}}
    line = describe_error(error_of(status, json.dumps(body).encode(), None))
    assert expected in line
    assert "\n" not in line and len(line) < 400 and "Error code" not in line


def test_piped_chat_with_a_refused_key_ends_with_one_clear_line(
    home: Path, fake: FakeAnthropic
) -> None:
    """`echo hi | nanoclaw chat` says why and exits, instead of waiting for a reply that is
    never retried (and without the SDK's dump)."""
    fake.api_key = "sk-ant-the-right-key"  # home/.env holds SECRET_KEY: refused
    proc = subprocess.run(
        [sys.executable, "-m", "nanoclaw.cli.main", "chat"],
        input="hello\n",
        env=cli_env(home, ANTHROPIC_BASE_URL=fake.base_url, AGENT_TIMEOUT_S="60"),
        cwd=home,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 1
    told = [line for line in proc.stderr.splitlines() if NOTICE in line]
    assert len(told) == 1 and "retrying" not in told[0], proc.stderr
    assert "Error code" not in proc.stderr and "Traceback" not in proc.stderr
    assert len(fake.requests) == 1
