"""Crash safety: kill -9 of the daemon during a run; after restart nothing inbound is lost."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import uuid
from dataclasses import replace
from pathlib import Path

from conftest import cli_env, wait_for
from fake_anthropic import FakeAnthropic, text_reply

from nanoclaw.home import ensure_main
from nanoclaw.models import InboundMessage
from nanoclaw.store.messages import Store


def start_daemon(home: Path, fake: FakeAnthropic) -> subprocess.Popen[bytes]:
    env = cli_env(
        home, ANTHROPIC_BASE_URL=fake.base_url, POLL_INTERVAL_MS="50", AGENT_IDLE_TIMEOUT_S="2"
    )
    return subprocess.Popen(
        [sys.executable, "-m", "nanoclaw.cli.main", "run"],
        cwd=home,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(home / "daemon.log", "ab"),
    )


def message(text: str) -> InboundMessage:
    return InboundMessage(
        chat_id="term:main",
        platform_id=uuid.uuid4().hex,
        sender_id="term:local",
        sender_name="me",
        text=text,
        ts_ms=int(time.time() * 1000),
    )


def sandboxes_alive(home: Path) -> list[str]:
    out = subprocess.run(["pgrep", "-af", "bwrap"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if "--args" in line]


async def test_kill_9_during_run_then_restart_reruns_batch(home: Path, fake: FakeAnthropic) -> None:
    store = await Store.open(home / "store" / "nanoclaw.db")
    await ensure_main(store)
    daemon = start_daemon(home, fake)
    try:
        fake.script(replace(text_reply("late"), delay=30))
        first = await store.add_message(message("slow one"))
        await wait_for(lambda: fake.requests, timeout=60)  # the agent is mid-request
        runs = await store.runs("main")
        assert runs and runs[0].status == "running"
        daemon.send_signal(signal.SIGKILL)
        daemon.wait(timeout=10)
        await wait_for(lambda: not sandboxes_alive(home), timeout=10)  # died with its parent
        # a message that arrives while the daemon is down is kept too
        second = await store.add_message(message("while down [[say: both handled]]"))
        assert await store.cursor("main") < (first or 0)
        fake.reset()
        daemon = start_daemon(home, fake)
        await wait_for(lambda: store.pending_outbox("term:main"), timeout=60)
        await wait_for(lambda: _cursor_at(store, second or 0), timeout=30)
        prompt = fake.requests[0].body["messages"][-1]["content"]
        assert "slow one" in prompt and "while down" in prompt  # the whole batch, again
        runs = await store.runs("main")
        assert runs[-1].status == "interrupted"
        rows = await store._all("SELECT text FROM outbox WHERE chat_id = 'term:main'")
        assert [r[0] for r in rows] == ["both handled"]
    finally:
        daemon.kill()
        daemon.wait(timeout=10)
        await store.close()


async def _cursor_at(store: Store, msg_id: int) -> bool:
    return await store.cursor("main") >= msg_id
