"""A throw-away NANOCLAW_HOME for one benchmark, the settings pointing at it, and the channel.

`BenchChannel` is the real terminal channel with a clock on `send`, so the reply figure
stops exactly where the router hands a chunk to a channel.
"""

from __future__ import annotations

import asyncio
import io
import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from fake_anthropic import FakeAnthropic, Recorded

from channels.terminal import TerminalChannel
from nanoclaw.config import Settings, load_settings
from nanoclaw.models import InboundMessage
from nanoclaw.trigger import LOCAL_SENDER


def make_home(root: Path) -> Path:
    """groups/{main,global}, skills/, store/ipc/main/{outbound,input,errors}, llm.sock stand-in."""
    for sub in ("groups/main", "groups/global", "skills", "store/logs"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    ipc = root / "store" / "ipc" / "main"
    for sub in ("outbound", "input", "errors"):
        (ipc / sub).mkdir(parents=True, exist_ok=True)
    (ipc / "llm.sock").touch()
    return root


async def requests_at_least(fake: FakeAnthropic, n: int, timeout: float) -> list[Recorded]:
    """The fake's requests once there are `n`; waits in short slices so a cancel ends it fast."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        try:
            return await fake.await_requests(n, max(0.0, min(0.25, left)))
        except TimeoutError:
            if left <= 0.25:
                raise


def run_log_tail(home: Path, run_id: int, folder: str = "main") -> str:
    """The first and last lines of a run's stderr log, enough to say what went wrong."""
    path = home / "store" / "logs" / folder / f"run-{run_id}.log"
    try:
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "no log"
    if len(lines) <= 2:
        return " | ".join(lines) or "empty log"
    return f"{lines[0]} | ... | {lines[-1]}"[:400]


def bench_settings(home: Path, base_url: str) -> Settings:
    return load_settings(
        None,
        NANOCLAW_HOME=home,
        ANTHROPIC_API_KEY="k",
        ANTHROPIC_BASE_URL=base_url,
        NANOCLAW_MODEL="claude-bench",
        TZ="UTC",
        LOG_LEVEL="warning",
        AGENT_IDLE_TIMEOUT_S=120,
        AGENT_TIMEOUT_S=600,
    )


def terminal_message(text: str, chat_id: str = "term:main") -> InboundMessage:
    return InboundMessage(
        chat_id=chat_id,
        platform_id=uuid.uuid4().hex,
        sender_id=LOCAL_SENDER,
        sender_name="bench",
        text=text,
        ts_ms=int(time.time() * 1000),
        chat_name="terminal (bench)",
        is_group_chat=False,
    )


@dataclass(frozen=True)
class Sent:
    perf: float  # time.perf_counter() when send was called
    wall: float  # time.time() when send was called
    chat_id: str
    text: str


class BenchChannel(TerminalChannel):
    """The terminal channel writing to a StringIO, recording when each `send` is called."""

    def __init__(self, assistant_name: str = "Andy") -> None:
        super().__init__(assistant_name, io.StringIO())
        self.sent: list[Sent] = []
        self._changed = asyncio.Event()

    async def send(self, chat_id: str, text: str, key: str = "") -> None:
        self.sent.append(Sent(time.perf_counter(), time.time(), chat_id, text))
        self._changed.set()
        await super().send(chat_id, text)

    async def wait_for(self, token: str, timeout: float) -> Sent:
        """The first send whose text contains `token` (already sent or still to come)."""
        deadline = time.monotonic() + timeout
        seen = 0
        while True:
            for item in self.sent[seen:]:
                if token in item.text:
                    return item
            seen = len(self.sent)
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no send containing {token!r} within {timeout}s")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), left)
            except TimeoutError:
                continue


def start_daemon(home: Path, base_url: str, **settings: str) -> subprocess.Popen[bytes]:
    """`nanoclaw run` in its own process on `home`, the model at `base_url`, its log in
    home/daemon.log; `settings` add to (or override) the environment it is given."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "NANOCLAW_HOME": str(home),
        "ANTHROPIC_API_KEY": "k",
        "ANTHROPIC_BASE_URL": base_url,
        "TZ": "UTC",
        **settings,
    }
    with open(home / "daemon.log", "wb") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "nanoclaw.cli.main", "run"],
            cwd=home,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
