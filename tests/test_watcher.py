"""The IPC watcher under one group's flood: the others are drained side by side, the flood
is capped (the rest set aside unread, the group told once), and errors/ stays bounded.

Real store, real files, the watcher's own scan step; order is read from the store.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import pytest_asyncio

from nanoclaw.ipc import files as ipcfs
from nanoclaw.ipc.handler import IpcHandler
from nanoclaw.ipc.quota import FileLimits
from nanoclaw.ipc.watcher import IpcWatcher
from nanoclaw.models import Group
from nanoclaw.store.messages import Store

GROUPS = {"main": "term:main", "alpha": "tg:-1", "beta": "tg:-2"}
LIMITS = FileLimits(files=100, window_s=3600, errors_kept=1000, prune_every=100)
DAY_MS = 24 * 3600 * 1000


@dataclass
class Env:
    store: Store
    watcher: IpcWatcher
    ipc: Path
    runs: dict[str, int]

    def drop(self, folder: str, data: bytes, count: int = 1) -> None:
        out = self.ipc / folder / "outbound"
        for _ in range(count):
            (out / f"{int(time.time() * 1000)}-{os.urandom(6).hex()}.json").write_bytes(data)

    def errors(self, folder: str) -> list[str]:
        return os.listdir(self.ipc / folder / "errors")

    async def notices(self, folder: str) -> list[str]:
        rows = await self.store._all("SELECT text FROM outbox WHERE folder = ?", (folder,))
        return [r[0] for r in rows if "set aside unread" in r[0]]


@pytest_asyncio.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    store = await Store.open(tmp_path / "store" / "nanoclaw.db")
    ipc = tmp_path / "ipc"
    for folder, chat in GROUPS.items():
        await store.save_group(Group(folder=folder, name=folder, chats=(chat,)))
        ipcfs.ensure_dirs(ipc, folder)
        (tmp_path / "groups" / folder).mkdir(parents=True)
    runs = {"alpha": 7}
    handler = IpcHandler(
        store, ipc, tmp_path / "groups", ZoneInfo("UTC"), current_run=runs.get, limits=LIMITS
    )
    yield Env(store, IpcWatcher(handler, store, ipc), ipc, runs)
    await store.close()


async def test_flood_is_capped_told_once_and_does_not_hold_up_another_group(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="nanoclaw.ipc.handler")
    stale = f"{int(time.time() * 1000) - 8 * DAY_MS}-0123abcd-old.json"
    (env.ipc / "alpha" / "errors" / stale).write_text("{}")
    env.drop("alpha", b"{not json", 3000)
    env.drop("beta", b'{"type": "send_message", "text": "from beta"}')

    assert await env.watcher.scan() == LIMITS.files + 1

    order = [r[0] for r in await env.store._all("SELECT folder FROM ipc_done ORDER BY rowid")]
    assert order.count("alpha") == LIMITS.files  # the rest set aside unread, never parsed
    last_alpha = len(order) - 1 - order[::-1].index("alpha")
    assert order.index("beta") < last_alpha  # beta did not wait for alpha's backlog
    rows = await env.store._all("SELECT folder, text FROM outbox WHERE folder = 'beta'")
    assert [tuple(r) for r in rows] == [("beta", "from beta")]
    assert ipcfs.list_names(env.ipc, "alpha") == []
    # every file is in errors/ or was handled; errors/ is pruned to its cap, oldest first
    errors = env.errors("alpha")
    assert len(errors) == LIMITS.errors_kept and stale not in errors
    notes = [(env.ipc / "alpha" / "errors" / n).read_text() for n in errors if n.endswith(".txt")]
    batch = [note for note in notes if "over the cap" in note]
    assert len(batch) == 1  # one note for the unread batch, kept before the files it explains
    assert batch[0].count("\n") == ipcfs.NOTE_NAMES + 1 and "and 2880 more" in batch[0]
    assert await env.notices("alpha") == [
        "(I wrote more than 100 files per 3600 s; the rest were set aside unread.)"
    ]

    # more in the same window and run: set aside at once, no second notice or warning
    env.drop("alpha", b'{"type": "send_message", "text": "late"}', 150)
    assert await env.watcher.scan() == 0
    assert ipcfs.list_names(env.ipc, "alpha") == []
    assert len(env.errors("alpha")) <= LIMITS.errors_kept
    assert len(await env.notices("alpha")) == 1
    warned = [r for r in caplog.records if "over its cap" in r.getMessage()]
    assert len(warned) == 1 and "group=alpha run=7" in warned[0].getMessage()
    assert len(caplog.records) == LIMITS.files + 1  # one line per parsed file, one for the cap

    # a new run of the group is told again
    env.runs["alpha"] = 8
    env.drop("alpha", b"{}", 3)
    await env.watcher.scan()
    assert len(await env.notices("alpha")) == 2
    assert await env.notices("beta") == []
