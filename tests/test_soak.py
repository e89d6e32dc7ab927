"""Soak: many messages across many Telegram groups, SIGKILLs of the daemon and API errors.

The daemon is the real `nanoclaw run` subprocess (bwrap sandboxes, model proxy, IPC
watcher, router) against the fake Bot API and the fake model. Every inbound message
`q-G-N` asks for the answer `a-G-N`; the scripted model answers every question of its
prompt it has not already been told it answered. At the end every question must have
been handled (the group's cursor is past it) and answered in its own chat; answers sent
twice are counted and reported: they can only come from a kill between a send and its
record. Every 40 messages the fake Bot API also fails a burst of sends (429 or 5xx), and
twice it fails long polls (502).

CI runs a short version; the long one runs by hand:

    SOAK_MESSAGES=1000 SOAK_GROUPS=20 SOAK_KILLS=10 uv run pytest tests/test_soak.py -s
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from conftest import cli_env, wait_for
from fake_anthropic import FakeAnthropic, Reply, text_reply
from fake_telegram import FakeTelegram

from nanoclaw.models import Group
from nanoclaw.store.messages import Store

pytestmark = pytest.mark.soak
MESSAGES = int(os.environ.get("SOAK_MESSAGES", "200"))
GROUPS = int(os.environ.get("SOAK_GROUPS", "20"))
KILLS = int(os.environ.get("SOAK_KILLS", "4"))
SEED = int(os.environ.get("SOAK_SEED", "7"))
QUESTION = re.compile(r"\bq-(\d+)-(\d+)\b")
ANSWER = re.compile(r"\ba-(\d+)-(\d+)\b")
ALREADY = "do not send them again:"


def chat_of(g: int) -> int:
    return -1_000_000 - g


def answers(body: dict[str, Any]) -> Reply:
    """Answer each question in the newest user turn not listed as already answered."""
    users = [m for m in body.get("messages", []) if m.get("role") == "user"]
    content = users[-1].get("content", "") if users else ""
    text = content if isinstance(content, str) else str(content)
    asked, _, told = text.partition(ALREADY)
    done = set(ANSWER.findall(told))
    todo = [q for q in dict.fromkeys(QUESTION.findall(asked)) if q not in done]
    if not todo:
        return text_reply("<internal>all answered already</internal>")
    return text_reply(" ".join(f"a-{g}-{n}" for g, n in todo))


def start_daemon(home: Path, fake: FakeAnthropic, tg: FakeTelegram) -> subprocess.Popen[bytes]:
    chats = ",".join(str(chat_of(g)) for g in range(GROUPS))
    env = cli_env(
        home,
        ANTHROPIC_BASE_URL=fake.base_url,
        POLL_INTERVAL_MS="100",
        AGENT_IDLE_TIMEOUT_S="3",
        MAX_CONCURRENT_AGENTS="5",
        LOG_LEVEL="info",
        TELEGRAM_BOT_TOKEN=tg.token,
        TELEGRAM_API_URL=tg.base_url,
        TELEGRAM_ALLOWED_CHAT_IDS=chats,
        ALLOWED_SENDERS="tg:111",
    )
    log = (home / "daemon.log").open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", "nanoclaw.cli.main", "run"],
        cwd=home,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log,
    )


def kill(daemon: subprocess.Popen[bytes]) -> None:
    daemon.send_signal(signal.SIGKILL)
    daemon.wait(timeout=30)


async def test_soak_messages_survive_sigkill(home: Path, fake: FakeAnthropic) -> None:
    rng = random.Random(SEED)
    fake.responder = answers
    store = await Store.open(home / "store" / "nanoclaw.db")
    for g in range(GROUPS):
        group = Group(
            folder=f"g{g}", name=f"g{g}", chats=(f"tg:{chat_of(g)}",), requires_trigger=False
        )
        await store.save_group(group)
        (home / "groups" / group.folder).mkdir(parents=True, exist_ok=True)
    await store.close()

    with FakeTelegram() as tg:
        daemon = start_daemon(home, fake, tg)
        kill_at = sorted(rng.sample(range(1, MESSAGES), min(KILLS, MESSAGES - 1)))
        started = time.monotonic()
        expected: set[tuple[str, str]] = set()
        try:
            for n in range(MESSAGES):
                g = rng.randrange(GROUPS)
                expected.add((str(g), str(n)))
                tg.push_update(tg.text_message(chat_of(g), f"q-{g}-{n} please"))
                await asyncio.sleep(rng.uniform(0, 0.04))
                if n % 40 == 20:  # a burst of Bot API errors: 429s and 5xx on sends
                    status = rng.choice((429, 500, 502))
                    tg.fail_next("sendMessage", status, times=rng.randint(2, 6))
                if n in (MESSAGES // 4, MESSAGES // 2):  # and twice on the long poll
                    tg.fail_next("getUpdates", 502, times=2)
                if kill_at and n == kill_at[0]:
                    kill_at.pop(0)
                    await asyncio.sleep(rng.uniform(0, 1.5))  # land anywhere in a run
                    kill(daemon)
                    daemon = start_daemon(home, fake, tg)

            def answered() -> bool:
                return expected <= set(_answers(tg))

            await wait_for(answered, timeout=120 + MESSAGES * 0.5)
            elapsed = time.monotonic() - started
        finally:
            kill(daemon)
        seen = Counter(_answers(tg))
        wrong_chat = [a for a, chat in _answer_chats(tg) if chat != chat_of(int(a[0]))]
        extra = sum(c - 1 for c in seen.values())

    store = await Store.open(home / "store" / "nanoclaw.db")
    try:
        stored = await store._all("SELECT chat_id, text FROM messages WHERE sender_id = 'tg:111'")
        assert len(stored) == MESSAGES  # every inbound message was stored once
        for g in range(GROUPS):
            newest = await store._all(
                "SELECT max(id) FROM messages WHERE chat_id = ?", (f"tg:{chat_of(g)}",)
            )
            assert await store.cursor(f"g{g}") >= (newest[0][0] or 0), f"g{g} not handled"
        left = await store._all("SELECT count(*) FROM outbox WHERE status != 'sent'")
        assert left[0][0] == 0
    finally:
        await store.close()
    assert wrong_chat == []
    print(
        f"\nsoak: {MESSAGES} messages, {GROUPS} groups, {KILLS} SIGKILLs, {elapsed:.0f} s; "
        f"{len(seen)} answered, {extra} answers sent twice"
    )
    # A duplicate needs a kill between a send and its record: at most a few per kill.
    assert extra <= 3 * KILLS


def _answers(tg: FakeTelegram) -> list[tuple[str, str]]:
    return [a for s in tg.sent for a in ANSWER.findall(s.text)]


def _answer_chats(tg: FakeTelegram) -> list[tuple[tuple[str, str], int]]:
    return [(a, int(s.chat_id)) for s in tg.sent for a in ANSWER.findall(s.text)]
