"""Staged files (store/files/, store/received/): sparse files refused, a group's waiting bytes
capped, old files swept, and the router's copy removed once its row is settled."""

from __future__ import annotations

import io
import json
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import pytest_asyncio

from channels.terminal import TerminalChannel
from nanoclaw.ipc import files as ipcfs
from nanoclaw.ipc import staging
from nanoclaw.ipc.exports import SEND_CAP
from nanoclaw.ipc.handler import IpcHandler
from nanoclaw.ipc.staging import Entry, Retention
from nanoclaw.models import Group
from nanoclaw.router import Router
from nanoclaw.store.messages import Store

MiB = 1024 * 1024


@dataclass
class Env:
    store: Store
    root: Path

    def handler(self, staged_cap: int = staging.STAGED_CAP) -> IpcHandler:
        groups, files = self.root / "groups", self.root / "files"
        zone = ZoneInfo("UTC")
        return IpcHandler(
            self.store, self.root / "ipc", groups, zone, files_root=files, staged_cap=staged_cap
        )

    @property
    def workspace(self) -> Path:
        return self.root / "groups" / "main"

    @property
    def staged(self) -> Path:
        return self.root / "files" / "main"

    def drop(self, path: str) -> str:
        name = f"{int(time.time() * 1000)}-{os.urandom(4).hex()}.json"
        body = json.dumps({"type": "send_file", "path": path})
        (self.root / "ipc" / "main" / "outbound" / name).write_text(body)
        return name


@pytest_asyncio.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    store = await Store.open(tmp_path / "store" / "nanoclaw.db")
    await store.save_group(Group(folder="main", name="main", chats=("term:main",)))
    ipcfs.ensure_dirs(tmp_path / "ipc", "main")
    (tmp_path / "groups" / "main").mkdir(parents=True)
    yield Env(store, tmp_path)
    await store.close()


def allocated(directory: Path) -> int:
    return sum(p.stat().st_blocks * 512 for p in directory.rglob("*") if p.is_file())


async def test_sparse_file_is_refused_and_never_copied(env: Env) -> None:
    """10 requests for a 50 MiB file of 1 MiB on disk: no full copy lands in store/."""
    with (env.workspace / "big.bin").open("wb") as fh:
        fh.write(os.urandom(MiB))
        fh.truncate(SEND_CAP)
    handler = env.handler()
    results = [await handler.handle_file("main", env.drop("big.bin")) for _ in range(10)]
    assert all(str(r).startswith("rejected: big.bin is sparse (") for r in results), results[0]
    assert allocated(env.root / "files") < MiB
    assert await env.store.pending_outbox("term:main") == 0
    # the same bytes written out densely still go
    (env.workspace / "dense.bin").write_bytes(os.urandom(2 * MiB))
    assert (await handler.handle_file("main", env.drop("/workspace/dense.bin"))).status == "done"
    assert allocated(env.staged) >= 2 * MiB


async def test_waiting_bytes_are_capped_per_group(env: Env) -> None:
    for n in range(3):
        (env.workspace / f"f{n}.bin").write_bytes(os.urandom(MiB + MiB // 2))
    handler = env.handler(staged_cap=4 * MiB)
    assert (await handler.handle_file("main", env.drop("f0.bin"))).status == "done"
    assert (await handler.handle_file("main", env.drop("f1.bin"))).status == "done"
    refused = await handler.handle_file("main", env.drop("f2.bin"))
    assert str(refused).startswith("rejected: f2.bin is 1572864 bytes, but the group's files")
    assert allocated(env.staged) <= 4 * MiB
    # the router delivers (and deletes) one copy: room again
    channel = TerminalChannel("Andy", out=io.StringIO(), received=env.root / "received")
    router = Router(env.store, {"term": channel}, poll_s=1.0)
    assert await router.deliver_once() == 2
    assert list(env.staged.iterdir()) == []
    assert (await handler.handle_file("main", env.drop("f2.bin"))).status == "done"


async def test_router_removes_the_copy_when_sending_fails_for_good(env: Env) -> None:
    (env.workspace / "a.txt").write_text("a")
    assert (await env.handler().handle_file("main", env.drop("a.txt"))).status == "done"
    (env.root / "received").write_text("a file where the terminal keeps its files")
    channel = TerminalChannel("Andy", out=io.StringIO(), received=env.root / "received")
    assert await Router(env.store, {"term": channel}, poll_s=1.0).deliver_once() == 0
    assert list(env.staged.iterdir()) == []
    assert await env.store.pending_outbox("term:main") == 0


async def test_staging_sweeps_copies_left_for_a_week(env: Env) -> None:
    """A copy whose row was lost (crash, or failed in an older version) is not kept forever."""
    other = env.root / "files" / "other"
    other.mkdir(parents=True)
    week_old = time.time() - staging.STAGED_RETENTION.max_age_s - 60
    for stale in (other / "1700000000000-x", env.root / "files" / "main" / "1700000000000-y"):
        stale.parent.mkdir(parents=True, exist_ok=True)
        stale.write_bytes(b"x" * 1000)
        os.utime(stale, (week_old, week_old))
    (other / "fresh").write_bytes(b"kept")
    (env.workspace / "a.txt").write_text("a")
    assert (await env.handler().handle_file("main", env.drop("a.txt"))).status == "done"
    assert [p.name for p in other.iterdir()] == ["fresh"]
    assert len(list(env.staged.iterdir())) == 1


def entry(name: str, size: int, age_s: float) -> Entry:
    return Entry(name, size, 1_000_000.0 - age_s)


@pytest.mark.parametrize(
    ("entries", "keep", "gone"),
    [
        ([], Retention(100), []),
        ([entry("a", 1, 50), entry("b", 1, 150)], Retention(100), ["b"]),
        ([entry("a", 10, 1), entry("b", 10, 2), entry("c", 10, 3)], Retention(100, 25), ["c"]),
        (
            [entry("a", 10, 1), entry("b", 10, 2), entry("c", 10, 3)],
            Retention(100, 5),
            ["c", "b", "a"],
        ),
        ([entry("new", 10, 1), entry("old", 1, 500)], Retention(100, 10), ["old"]),
    ],
)
def test_expired(entries: list[Entry], keep: Retention, gone: list[str]) -> None:
    assert sorted(staging.expired(entries, 1_000_000.0, keep)) == sorted(gone)
