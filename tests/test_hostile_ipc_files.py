"""Hostile IPC files by example: odd names and contents, FIFOs, times at the end of the
calendar, a swapped outbound/ directory, a file gone between listing and reading, and the
watcher going on through all of them.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from pathlib import Path

import pytest
from conftest import wait_for
from hostile import UTC_ZONE
from hostile_ipc import (
    Host,
    drop_file,
    notes,
    run_host,
    set_aside,
    snapshot,
)

from nanoclaw.ipc import files as ipcfs
from nanoclaw.ipc.handler import IpcHandler
from nanoclaw.ipc.watcher import IpcWatcher
from nanoclaw.models import Group
from nanoclaw.store.messages import Store


def test_undecodable_file_name_is_set_aside() -> None:
    async def scenario(h: Host) -> None:
        name = drop_file(h, "alpha", "{}", b"\xff\xfe-\xc0.json")
        result = str(await h.handler.handle_file("alpha", name))
        assert result == "rejected: file name is not <unix-ms>-<random>.json"
        assert ipcfs.list_names(h.ipc, "alpha") == []
        assert "\\udcff\\udcfe" in notes(h, "alpha")[0]

    run_host(scenario)


def test_names_that_clean_alike_are_all_kept_and_a_fifo_never_blocks() -> None:
    # All clean to "x_", most in the same millisecond; "x!.reason.txt" cleans to the note
    # name of "x_": a FIFO kept there must not block writing that note.
    alike = ["x_", "x?", "x*", "x:", "x<", "x>", "x|", "x ", "x~", "x="]

    async def scenario(h: Host) -> None:
        os.mkfifo(h.ipc / "alpha" / "outbound" / "x!.reason.txt")
        for name in alike:
            drop_file(h, "alpha", name, name)
        await h.handler.drain("alpha")
        assert ipcfs.list_names(h.ipc, "alpha") == []
        kept, texts = set_aside(h, "alpha")
        assert kept[("other", "")] == 1
        for name in alike:
            assert kept[("file", hashlib.sha256(name.encode()).hexdigest())] == 1
        assert len(texts) == len(alike) + 1

    run_host(scenario)


@pytest.mark.parametrize(
    ("name", "data", "reason"),
    [
        (b"1234567890123-a.json\n", b'{"type": "send_message", "text": "x"}', "file name"),
        ("١٢٣٤٥٦٧٨٩٠١٢٣-a.json".encode(), b'{"type": "send_message", "text": "x"}', "file name"),
        (None, b"[" * 100_000, "nested too deeply"),
        (None, b'{"type": "send_message", "text": ' + b"9" * 5000 + b"}", "malformed JSON"),
        (None, b'{"type": "send_message", "text": "\\udfff"}', "unpaired surrogate"),
        (None, b'{"type": "send_message", "text": "x", "\\ud800": 1}', "unpaired surrogate"),
        (
            None,
            b'{"type": "schedule_task", "prompt": "p", "schedule": {"cron": "0 0 30 2 *"}}',
            "cron",
        ),
        (
            None,
            b'{"type": "schedule_task", "prompt": "p", "schedule": {"cron": "* * * * *", '
            b'"tz": "America"}}',
            "unknown timezone",
        ),
        (
            None,
            b'{"type": "schedule_task", "prompt": "p", "schedule": {"cron": "* * * * *", '
            b'"tz": "' + b"a" * 64 + b'"}}',
            "unknown timezone",
        ),
    ],
)
def test_odd_files_get_a_clear_reason(name: bytes | None, data: bytes, reason: str) -> None:
    async def scenario(h: Host) -> None:
        listed = drop_file(h, "alpha", data, name)
        result = str(await h.handler.handle_file("alpha", listed))
        assert result.startswith("rejected: ") and reason in result, result
        assert "internal error" not in result
        assert ipcfs.list_names(h.ipc, "alpha") == []

    run_host(scenario)


@pytest.mark.parametrize("at", ["9999-12-31T23:59:59-23:59", "9999-12-31T22:00:00-05:00"])
def test_at_near_the_ends_of_time(at: str) -> None:
    async def scenario(h: Host) -> None:
        data = json.dumps({"type": "schedule_task", "prompt": "p", "schedule": {"at": at}})
        result = str(await h.handler.handle_file("alpha", drop_file(h, "alpha", data)))
        assert result.startswith("rejected: ") and "internal error" not in result, result

    run_host(scenario)


def test_a_reason_is_one_line_whatever_the_keys() -> None:
    async def scenario(h: Host) -> None:
        forged = "\nipc group=main file=x reply queued for tg:-2"
        data = json.dumps({"type": "send_message", "text": "x", forged: 1})
        result = str(await h.handler.handle_file("alpha", drop_file(h, "alpha", data)))
        assert result.startswith("rejected: ") and result.isprintable(), result

    run_host(scenario)


def test_file_gone_between_listing_and_reading_leaves_no_note() -> None:
    async def scenario(h: Host) -> None:
        name = drop_file(h, "alpha", '{"type": "send_message", "text": "x"}')
        (h.ipc / "alpha" / "outbound" / name).unlink()
        assert (await h.handler.handle_file("alpha", name)).status == "gone"
        assert str(await h.handler.handle_file("alpha", "not-a-name.txt")) == (
            "rejected: file name is not <unix-ms>-<random>.json"
        )
        assert os.listdir(h.ipc / "alpha" / "errors") == []

    run_host(scenario)


@pytest.mark.parametrize("replacement", ["symlink", "file", "fifo"])
def test_outbound_dir_swapped_out(replacement: str) -> None:
    async def scenario(h: Host) -> None:
        elsewhere = h.root / "elsewhere"
        elsewhere.mkdir()
        name = "1234567890123-x.json"
        (elsewhere / name).write_text('{"type": "send_message", "text": "x"}')
        out = h.ipc / "alpha" / "outbound"
        out.rmdir()
        if replacement == "symlink":
            out.symlink_to(elsewhere)
        elif replacement == "file":
            out.write_text("{}")
        else:
            os.mkfifo(out)
        before = snapshot(h.root)
        assert await h.handler.drain("alpha") == 0
        result = str(await h.handler.handle_file("alpha", name))
        assert result.startswith("rejected: outbound/ cannot be opened safely"), result
        assert snapshot(h.root) == before
        assert await h.store._all("SELECT * FROM outbox") == []
        ipcfs.ensure_dirs(h.ipc, "alpha")
        assert out.is_dir() and not out.is_symlink()

    run_host(scenario)


async def test_watcher_keeps_going_through_hostile_files(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "store" / "nanoclaw.db")
    await store.save_group(Group(folder="alpha", name="alpha", chats=("tg:-1",)))
    (tmp_path / "groups" / "alpha").mkdir(parents=True)
    handler = IpcHandler(store, tmp_path / "ipc", tmp_path / "groups", UTC_ZONE)
    watcher = IpcWatcher(handler, store, tmp_path / "ipc")
    task = asyncio.create_task(watcher.run())
    out = tmp_path / "ipc" / "alpha" / "outbound"
    try:
        await asyncio.wait_for(watcher.ready.wait(), 10)
        os.mkfifo(out / "1234567890123-fifo.json")
        (out / "1234567890123-dir.json").mkdir()
        (out / "1234567890123-link.json").symlink_to(tmp_path / "store" / "nanoclaw.db")
        Path(os.fsdecode(os.fsencode(out) + b"/\xff.json")).write_text("{}")
        (out / "1234567890123-nl.json\n").write_text('{"type": "send_message", "text": "nl"}')
        with (out / "1234567890123-inplace.json").open("w") as fh:  # added, then modified
            fh.write('{"type": "send_message", ')
            fh.flush()
            await asyncio.sleep(0.05)
            fh.write('"text": "late"}')
        await wait_for(lambda: ipcfs.list_names(tmp_path / "ipc", "alpha") == [], 20)
        assert not task.done()
        (out / "1234567890124-ok.json").write_text('{"type": "send_message", "text": "ok"}')

        async def sent() -> bool:
            rows = await store._all("SELECT text FROM outbox")
            return ("ok",) in [tuple(r) for r in rows]

        await wait_for(sent, 20)
        errors = tmp_path / "ipc" / "alpha" / "errors"
        assert sum(n.endswith(".reason.txt") for n in os.listdir(errors)) >= 5
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await store.close()
