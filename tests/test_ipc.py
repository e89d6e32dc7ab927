"""IPC (SPEC section 6): validation, authorisation by directory, once-only, set-aside files."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import pytest_asyncio
from conftest import wait_for

from nanoclaw.errors import IpcRejected
from nanoclaw.ipc import files as ipcfs
from nanoclaw.ipc.handler import Handled, IpcHandler
from nanoclaw.ipc.quota import FileLimits
from nanoclaw.ipc.requests import RegisterGroup, SendMessage, UpdateMemory, authorise, parse
from nanoclaw.ipc.watcher import IpcWatcher
from nanoclaw.models import Group
from nanoclaw.store.messages import Store

GROUPS = {"main": "term:main", "alpha": "tg:-1", "beta": "tg:-2"}


@pytest_asyncio.fixture
async def env(tmp_path: Path) -> AsyncIterator[tuple[Store, IpcHandler, Path]]:
    store = await Store.open(tmp_path / "store" / "nanoclaw.db")
    for folder, chat in GROUPS.items():
        await store.save_group(Group(folder=folder, name=folder, chats=(chat,)))
        ipcfs.ensure_dirs(tmp_path / "ipc", folder)
        (tmp_path / "groups" / folder).mkdir(parents=True)
    handler = IpcHandler(store, tmp_path / "ipc", tmp_path / "groups", ZoneInfo("UTC"))
    yield store, handler, tmp_path
    await store.close()


def drop(root: Path, folder: str, payload: Any, name: str | None = None) -> str:
    name = name or f"{int(time.time() * 1000)}-{os.urandom(4).hex()}.json"
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    (root / "ipc" / folder / "outbound" / name).write_bytes(data)
    return name


async def outbox(store: Store) -> list[tuple[str, str, str]]:
    rows = await store._all("SELECT folder, chat_id, text FROM outbox ORDER BY id")
    return [tuple(r) for r in rows]


def errors(root: Path, folder: str) -> list[str]:
    d = root / "ipc" / folder / "errors"
    return sorted(p.read_text() for p in d.glob("*.reason.txt"))


# the authorisation matrix, pure

SEND_OWN = SendMessage(type="send_message", text="hi", chat=None)
SEND_MAIN = SendMessage(type="send_message", text="hi", chat="term:main")
SEND_ALPHA = SendMessage(type="send_message", text="hi", chat="tg:-1")
SEND_UNKNOWN = SendMessage(type="send_message", text="hi", chat="tg:-999")
REGISTER = RegisterGroup(type="register_group", chat="tg:-5", folder="gamma", trigger=None)
MEMORY = UpdateMemory(type="update_memory", content="likes tea")
OWNER = {"term:main": "main", "tg:-1": "alpha", "tg:-2": "beta"}


@pytest.mark.parametrize(
    ("folder", "req", "allowed"),
    [
        ("alpha", SEND_OWN, True),
        ("alpha", SEND_ALPHA, True),
        ("alpha", SEND_MAIN, False),
        ("beta", SEND_ALPHA, False),
        ("alpha", SEND_UNKNOWN, False),
        ("main", SEND_ALPHA, True),
        ("main", SEND_OWN, True),
        ("main", SEND_UNKNOWN, False),
        ("alpha", REGISTER, False),
        ("beta", REGISTER, False),
        ("main", REGISTER, True),
        ("alpha", MEMORY, True),
        ("main", MEMORY, True),
    ],
)
def test_authorisation_matrix(folder: str, req: Any, allowed: bool) -> None:
    chat = getattr(req, "chat", None)
    reason = authorise(req, folder, OWNER.get(chat) if chat else None)
    assert (reason is None) == allowed, reason


def test_register_global_folder_refused_even_for_main() -> None:
    req = RegisterGroup(type="register_group", chat="tg:-5", folder="global", trigger=None)
    assert authorise(req, "main", None) == "folder 'global' is reserved"


@pytest.mark.parametrize(
    "payload",
    [
        [],
        {"text": "no type"},
        {"type": "send_message"},
        {"type": "send_message", "text": 5},
        {"type": "send_message", "text": "x", "extra": 1},
        {"type": "send_message", "text": "x", "chat": "../../etc"},
        {"type": "register_group", "chat": "tg:-1", "folder": "../escape"},
        {"type": "register_group", "chat": "tg:-1", "folder": "Caps"},
        {"type": "nuke_host"},
        {"type": "update_memory", "content": "x" * 9000},
    ],
)
def test_parse_rejects_bad_requests(payload: Any) -> None:
    with pytest.raises(IpcRejected):
        parse(payload)


# the handler against a real store and real files


async def test_reply_from_own_group_goes_to_outbox_once(env: Any) -> None:
    store, handler, root = env
    name = drop(root, "alpha", {"type": "send_message", "text": "hello <internal>x</internal>"})
    assert await handler.handle_file("alpha", name) == Handled("done")
    assert await outbox(store) == [("alpha", "tg:-1", "hello")]
    assert not (root / "ipc" / "alpha" / "outbound" / name).exists()
    # the same name written again (a replay, or the agent retrying) is never acted on twice
    drop(root, "alpha", {"type": "send_message", "text": "hello"}, name=name)
    assert await handler.handle_file("alpha", name) == Handled("duplicate")
    assert len(await outbox(store)) == 1


async def test_same_name_never_acted_on_twice_across_restarts(env: Any) -> None:
    _store, handler, root = env
    name = drop(root, "alpha", {"type": "send_message", "text": "once"})
    await handler.drain("alpha")
    db = root / "store" / "nanoclaw.db"
    store2 = await Store.open(db)
    try:
        h2 = IpcHandler(store2, root / "ipc", root / "groups", ZoneInfo("UTC"))
        drop(root, "alpha", {"type": "send_message", "text": "once"}, name=name)
        assert await h2.drain("alpha") == 1
        rows = await store2._all("SELECT count(*) FROM outbox")
        assert rows[0][0] == 1
    finally:
        await store2.close()


async def test_non_main_cannot_send_to_another_groups_chat(env: Any) -> None:
    store, handler, root = env
    name = drop(root, "alpha", {"type": "send_message", "text": "spam", "chat": "tg:-2"})
    result = await handler.handle_file("alpha", name)
    assert result.status == "rejected" and result.reason.startswith("only main")
    assert await outbox(store) == []
    assert "only main may send" in errors(root, "alpha")[0]
    assert list((root / "ipc" / "alpha" / "outbound").iterdir()) == []


async def test_main_can_send_anywhere_and_register_groups(env: Any) -> None:
    store, handler, root = env
    drop(root, "main", {"type": "send_message", "text": "hi beta", "chat": "tg:-2"})
    drop(
        root,
        "main",
        {"type": "register_group", "chat": "tg:-7", "folder": "gamma", "requires_trigger": False},
    )
    assert await handler.drain("main") == 2
    assert await outbox(store) == [("main", "tg:-2", "hi beta")]
    gamma = await store.group("gamma")
    assert gamma is not None and gamma.chats == ("tg:-7",) and not gamma.requires_trigger
    assert (root / "groups" / "gamma").is_dir()


async def test_register_group_is_main_only(env: Any) -> None:
    store, handler, root = env
    name = drop(root, "beta", {"type": "register_group", "chat": "tg:-7", "folder": "gamma"})
    assert (await handler.handle_file("beta", name)).status == "rejected"
    assert await store.group("gamma") is None


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"{not json", "malformed JSON"),
        (b"\xff\xfe{}", "not UTF-8"),
        (b"[1, 2]", 'string "type"'),
        (b'{"type": "send_message", "text": 42}', "invalid 'send_message'"),
        (b'{"type": "schedule_task", "prompt": "x"}', "schedule: Field required"),
        (b'{"type": "launch_rocket"}', "not supported"),
        (b"x" * (ipcfs.FILE_CAP + 10), "larger than"),
    ],
)
async def test_bad_files_are_set_aside_with_reason(env: Any, raw: bytes, reason: str) -> None:
    store, handler, root = env
    name = drop(root, "alpha", raw)
    assert (await handler.handle_file("alpha", name)).status == "rejected"
    assert reason in errors(root, "alpha")[0]
    kept = [p for p in (root / "ipc" / "alpha" / "errors").iterdir() if p.name.endswith(name)]
    assert kept and kept[0].read_bytes() == raw  # set aside intact, nothing lost
    assert await outbox(store) == []


async def test_symlinked_file_is_refused_and_its_target_untouched(env: Any) -> None:
    store, handler, root = env
    target = root / "host-secret.json"
    target.write_text(json.dumps({"type": "send_message", "text": "host data"}))
    name = f"{int(time.time() * 1000)}-link.json"
    (root / "ipc" / "alpha" / "outbound" / name).symlink_to(target)
    result = await handler.handle_file("alpha", name)
    assert result.status == "rejected" and result.reason.startswith("cannot open safely")
    assert target.read_text().startswith("{")
    assert await outbox(store) == []


async def test_outbound_dir_swapped_for_symlink_is_not_followed(env: Any) -> None:
    _store, handler, root = env
    elsewhere = root / "elsewhere"
    elsewhere.mkdir()
    name = f"{int(time.time() * 1000)}-x.json"
    (elsewhere / name).write_text(json.dumps({"type": "send_message", "text": "x"}))
    out = root / "ipc" / "alpha" / "outbound"
    out.rmdir()
    out.symlink_to(elsewhere)
    assert await handler.drain("alpha") == 0
    assert (elsewhere / name).exists()
    ipcfs.ensure_dirs(root / "ipc", "alpha")
    assert out.is_dir() and not out.is_symlink()


async def test_update_memory_appends_under_marker(env: Any) -> None:
    _store, handler, root = env
    (root / "groups" / "alpha" / "CLAUDE.md").write_text("# Alpha\nowner notes\n")
    drop(root, "alpha", {"type": "update_memory", "content": "Bob prefers mornings"})
    assert await handler.drain("alpha") == 1
    text = (root / "groups" / "alpha" / "CLAUDE.md").read_text()
    assert text.startswith("# Alpha\nowner notes\n")
    assert text.count("<!-- agent memory -->") == 1
    assert text.index("<!-- agent memory -->") < text.index("Bob prefers mornings")


async def test_watcher_handles_files_written_while_down_then_live(env: Any) -> None:
    store, handler, root = env
    drop(root, "alpha", {"type": "send_message", "text": "written while down"})
    watcher = IpcWatcher(handler, store, root / "ipc")
    task = asyncio.create_task(watcher.run())
    try:
        await asyncio.wait_for(watcher.ready.wait(), 10)
        assert await outbox(store) == [("alpha", "tg:-1", "written while down")]
        drop(root, "beta", {"type": "send_message", "text": "written live"})
        await wait_for(lambda: _count(store, 2), timeout=10)
        assert (await outbox(store))[1] == ("beta", "tg:-2", "written live")
        # temp names (the agent's half-written files) are never read
        (root / "ipc" / "beta" / "outbound" / ".123-x.json.tmp").write_text("{")
        drop(root, "beta", {"type": "send_message", "text": "marker"})  # seen after the temp
        await wait_for(lambda: _count(store, 3), timeout=10)
        assert (root / "ipc" / "beta" / "outbound" / ".123-x.json.tmp").exists()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def _count(store: Store, n: int) -> bool:
    return len(await outbox(store)) >= n


async def test_files_over_the_cap_are_moved_unread_and_pruned_without_following_links(
    env: Any,
) -> None:
    store, _handler, root = env
    handler = IpcHandler(
        store, root / "ipc", root / "groups", ZoneInfo("UTC"), limits=FileLimits(files=1)
    )
    secret = root / "host-secret.txt"
    secret.write_text("host data")
    (root / "host-dir").mkdir()
    (root / "host-dir" / "keep.txt").write_text("keep")
    out = root / "ipc" / "alpha" / "outbound"
    drop(root, "alpha", {"type": "send_message", "text": "within the cap"}, "1000000000000-a.json")
    (out / "1000000000001-link.json").symlink_to(secret)
    (out / "1000000000002-dir.json").mkdir()
    (out / "1000000000002-dir.json" / "inner").symlink_to(root / "host-dir")
    os.mkfifo(out / "1000000000003-fifo.json")  # never opened: it would block a reader
    assert await handler.drain("alpha") == 1
    assert (await outbox(store))[0] == ("alpha", "tg:-1", "within the cap")
    assert ipcfs.list_names(root / "ipc", "alpha") == []
    kept = os.listdir(root / "ipc" / "alpha" / "errors")
    assert len(kept) == 4 and sum(n.endswith(".reason.txt") for n in kept) == 1
    assert "over the cap of 1 files per 10 s" in errors(root, "alpha")[0]
    # errors/ pruned to nothing: links and a dir with a link inside go, their targets stay
    gone = ipcfs.prune_errors(root / "ipc", "alpha", FileLimits(errors_kept=0), time.time())
    assert gone == 4 and os.listdir(root / "ipc" / "alpha" / "errors") == []
    assert secret.read_text() == "host data"
    assert (root / "host-dir" / "keep.txt").read_text() == "keep"
    # outbound swapped for a link after the listing: nothing is moved out of its target
    elsewhere = root / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "1000000000004-x.json").write_text("{}")
    out.rmdir()
    out.symlink_to(elsewhere)
    with pytest.raises(OSError):
        ipcfs.set_aside_all(root / "ipc", "alpha", ["1000000000004-x.json"], "over the cap")
    assert (elsewhere / "1000000000004-x.json").exists()
