"""Shared fixtures: a NANOCLAW_HOME in a temp dir, settings, a store, the fake model, a core.

Everything is real: SQLite files, bwrap sandboxes, watchfiles, the anthropic SDK talking
HTTP to `fake_anthropic.FakeAnthropic`. Waits poll a condition with a deadline.
"""

from __future__ import annotations

import asyncio
import io
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from fake_anthropic import FakeAnthropic

from channels.terminal import TerminalChannel
from nanoclaw.app import Core
from nanoclaw.channel import Channel
from nanoclaw.config import Settings, load_settings
from nanoclaw.layout import Layout
from nanoclaw.models import Group, InboundMessage
from nanoclaw.progress import DONE, RUNNING
from nanoclaw.store.messages import Store

PROGRESS_PREFIXES = (RUNNING, DONE)
REPO = Path(__file__).resolve().parents[1]
SECRET_KEY = "sk-ant-test-SECRET-4f1c9e"


def make_home(root: Path) -> Path:
    (root / "groups" / "main").mkdir(parents=True)
    (root / "groups" / "global").mkdir(parents=True)
    shutil.copy(REPO / "groups" / "main" / "CLAUDE.md", root / "groups" / "main" / "CLAUDE.md")
    shutil.copy(REPO / "groups" / "global" / "CLAUDE.md", root / "groups" / "global" / "CLAUDE.md")
    shutil.copytree(REPO / "skills", root / "skills")
    (root / ".env").write_text(f"ANTHROPIC_API_KEY={SECRET_KEY}\n")
    return root


def settings_for(home: Path, base_url: str, **extra: Any) -> Settings:
    values: dict[str, Any] = {
        "NANOCLAW_HOME": home,
        "ANTHROPIC_API_KEY": SECRET_KEY,
        "ANTHROPIC_BASE_URL": base_url,
        "POLL_INTERVAL_MS": 50,
        "AGENT_IDLE_TIMEOUT_S": 30,
        "AGENT_TIMEOUT_S": 120,
        "TZ": "UTC",
        "ALLOWED_SENDERS": "tg:111",
    }
    values.update(extra)
    return load_settings(None, **values)


def cli_env(home: Path, **settings: str) -> dict[str, str]:
    """The environment for a `nanoclaw` subprocess: this one without nanoclaw's or the
    model's settings (a developer's own must not leak in), plus `settings`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC", "NANOCLAW"))}
    env.update(NANOCLAW_HOME=str(home), TZ="UTC", **settings)
    return env


def chat_env(home: Path, model_url: str) -> dict[str, str]:
    """`cli_env` for a `nanoclaw chat` or `run` driven by a test: the fake model, quick polls,
    an agent idle for 5 s, a terminal that draws no colours."""
    return cli_env(
        home,
        ANTHROPIC_BASE_URL=model_url,
        POLL_INTERVAL_MS="50",
        AGENT_IDLE_TIMEOUT_S="5",
        TERM="dumb",
    )


def run_cli(home: Path, *args: str, **settings: str) -> subprocess.CompletedProcess[str]:
    """`nanoclaw ARGS` as a subprocess in `home`, with `cli_env(home, **settings)`."""
    return subprocess.run(
        [sys.executable, "-m", "nanoclaw.cli.main", *args],
        env=cli_env(home, **settings),
        cwd=home,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def wait_for(
    check: Callable[[], Awaitable[Any]] | Callable[[], Any], timeout: float = 30.0
) -> Any:
    """Poll `check` until it returns something truthy; fail with a clear message otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(0.02)


@pytest.fixture
def fake() -> Iterator[FakeAnthropic]:
    with FakeAnthropic() as server:
        yield server


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return make_home(tmp_path / "home")


@pytest.fixture
def settings(home: Path, fake: FakeAnthropic) -> Settings:
    return settings_for(home, fake.base_url)


@pytest.fixture
def db_path(home: Path) -> Path:
    """The store's file in `home`, the one `settings` names; no fake server needed."""
    return Layout(home).db


@pytest_asyncio.fixture
async def store(db_path: Path) -> AsyncIterator[Store]:
    s = await Store.open(db_path)
    try:
        yield s
    finally:
        await s.close()


def line(text: str, chat: str = "term:main", sender: str = "term:local") -> InboundMessage:
    """A message as a channel hands it in, from `sender` (default: the terminal's user)."""
    return InboundMessage(
        chat_id=chat,
        platform_id=uuid.uuid4().hex,
        sender_id=sender,
        sender_name=sender.split(":", 1)[1],
        text=text,
        ts_ms=int(time.time() * 1000),
    )


@dataclass
class Running:
    """A core running in-process with the terminal channel writing into a buffer."""

    core: Core
    store: Store
    channel: TerminalChannel
    settings: Settings

    @property
    def output(self) -> str:
        out = self.channel.out
        assert isinstance(out, io.StringIO)
        return out.getvalue()

    async def say(self, text: str, chat: str = "term:main", sender: str = "term:local") -> int:
        msg_id = await self.core.ingest.message(line(text, chat, sender))
        assert msg_id is not None
        return msg_id

    @property
    def replies(self) -> str:
        """The output without the progress lines (they quote the agent's commands)."""
        lines = self.output.splitlines(keepends=True)
        return "".join(line for line in lines if not line.startswith(PROGRESS_PREFIXES))

    async def reply_containing(self, needle: str, timeout: float = 60.0) -> str:
        await wait_for(lambda: needle in self.replies, timeout)
        return self.replies

    async def add_group(self, folder: str, chat: str, **kw: Any) -> Group:
        group = Group(folder=folder, name=folder, chats=(chat,), **kw)
        await self.store.save_group(group)
        (self.settings.layout.groups / folder).mkdir(parents=True, exist_ok=True)
        self.core.groups_changed()
        return group


async def start_core(settings: Settings, *others: Channel) -> tuple[Running, asyncio.Task[None]]:
    """The core in-process with the terminal channel and any `others` (tg, xmpp, mx)."""
    store = await Store.open(settings.layout.db)
    channel = TerminalChannel(
        settings.assistant_name, out=io.StringIO(), received=settings.layout.received
    )
    channels: dict[str, Channel] = {"term": channel, **{c.name: c for c in others}}
    started = asyncio.Event()
    cores: list[Core] = []

    async def serve() -> None:  # the task owns the core's HTTP session: cancelling it ends both
        async with Core.open(settings, store, channels) as core:
            cores.append(core)
            await core.run(started)

    task = asyncio.create_task(serve())
    await asyncio.wait_for(started.wait(), 30)
    return Running(cores[0], store, channel, settings), task


async def stop_core(running: Running, task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await running.store.close()


@pytest_asyncio.fixture
async def running(settings: Settings) -> AsyncIterator[Running]:
    r, task = await start_core(settings)
    yield r
    await stop_core(r, task)


def pytest_configure(config: pytest.Config) -> None:
    """Hypothesis profiles for the property tests (test_hostile_*.py), loaded before collection.

    CI (CI=true) is bounded and reproducible: a fixed example count, the same examples every
    run (a red CI is never a newly drawn example, and replays with
    HYPOTHESIS_PROFILE=nanoclaw-ci), no example database. Elsewhere each run draws new ones.
    """
    import hypothesis

    common: dict[str, Any] = {"max_examples": 100, "deadline": None, "database": None}
    hypothesis.settings.register_profile("nanoclaw-ci", derandomize=True, **common)
    hypothesis.settings.register_profile("nanoclaw-dev", print_blob=True, **common)
    default = "nanoclaw-ci" if os.environ.get("CI") else "nanoclaw-dev"
    hypothesis.settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", default))
