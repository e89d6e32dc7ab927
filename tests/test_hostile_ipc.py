"""Hostile IPC files (SPEC sections 6, 10) as property tests: any file in outbound/ is acted
on where its directory allows or set aside intact beside a note of why; nothing raises,
nothing is written outside where it may be. Example counts: the conftest profiles.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from hostile import HEAVY, JSON, one_of_values
from hostile_ipc import (
    GROUPS,
    OWN_TASKS,
    Host,
    host,
    may_change,
    set_aside,
    snapshot,
)
from hypothesis import event, given
from hypothesis import strategies as st

from nanoclaw.agent.protocol import NAME_RE
from nanoclaw.ipc import files as ipcfs
from nanoclaw.models import Group
from nanoclaw.store.messages import Store

HUGE_TEXT = "x" * 100_001
PATHS = [
    "../../etc/passwd",
    "/etc/passwd",
    "..",
    ".",
    "",
    "/",
    "a/../../b",
    "a//b",
    "./a",
    "/workspace/../../etc/passwd",
    "/workspace",
    "/workspace/",
    "/workspace/hello.txt",
    "hello.txt",
    "escape/host-secret.json",
    "/workspace/escape/host-secret.json",
    "escape/new.txt",
    "new/dir/file.txt",
    "a\\..\\b",
    "x\x00y",
    "../exports/beta/x",
    "%2e%2e/x",
    "\u202e/etc",
    "a/" * 40 + "b",
    "é" * 600,
    "hello.txt/",
]
CHATS = ["tg:-1", "tg:-2", "term:main", "tg:-999", "tg:-1\n", "../tg", "tg:", "xmpp:a@b/c"]
FOLDERS = ["main", "alpha", "beta", "gamma", "global", "../x", "Alpha", "a" * 65, "x\x00"]
TASK_IDS = [*OWN_TASKS, "alpha-md", "nope", "../x", "", "a" * 65]
CRONS = [
    "* * * * *",
    "0 8 * * 1-5",
    "0 0 30 2 *",
    "0 0 31 4 *",
    "61 * * * *",
    "* * * *",
    "*/0 * * * *",
    "0 0 1 1 1#5",
    "@reboot",
    "H * * * *",
    "0 0 L 2 *",
    "x" * 201,
]
ZONES = [
    "UTC",
    "Asia/Kolkata",
    "America",
    "Etc",
    "right",
    "../../etc/passwd",
    "/etc/localtime",
    "",
    "posixrules",
    "a" * 64,
    "Europe/\x00",
    "zone.tab",
]
ODD = one_of_values(
    "\ud800", "a\x00b", "\u202e\u200d", "<internal>x</internal>", HUGE_TEXT, *PATHS[:6]
)


def offsets() -> st.SearchStrategy[timezone]:
    most = 23 * 60 + 59
    return st.integers(-most, most).map(lambda minutes: timezone(timedelta(minutes=minutes)))


# Years 2..9998: the end of time is test_at_near_the_ends_of_time's.
AT = st.datetimes(datetime(2, 1, 1), datetime(9998, 1, 1)) | st.datetimes(
    datetime(2, 1, 1), datetime(9998, 1, 1), timezones=offsets()
)  # naive, or at any offset
SCHEDULES = st.one_of(
    st.fixed_dictionaries(
        {"cron": st.sampled_from(CRONS)}, optional={"tz": st.sampled_from(ZONES)}
    ),
    st.fixed_dictionaries({"every_s": st.integers() | st.sampled_from([59, 60, 86_400, 10**12])}),
    st.fixed_dictionaries({"at": AT.map(datetime.isoformat) | st.text(max_size=64)}),
)
TEXT = st.text(min_size=1, max_size=40) | st.sampled_from(["<internal>x</internal>", "a\x00b"])
B64 = st.binary(max_size=64).map(lambda b: base64.b64encode(b).decode())
TASK_ID = st.sampled_from(TASK_IDS)
# Per request type: (required fields, optional fields), each of the right JSON type but
# with hostile values: traversal paths, other groups' chats, folders and task ids.
SHAPES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "send_message": ({"text": TEXT}, {"chat": st.sampled_from(CHATS)}),
    "send_file": (
        {"path": st.sampled_from(PATHS)},
        {"caption": TEXT, "chat": st.sampled_from(CHATS)},
    ),
    "update_memory": ({"content": TEXT | one_of_values("m" * 8193)}, {}),
    "write_file": (
        {
            "target": st.sampled_from(["out", "out", "none"]),
            "path": st.sampled_from(PATHS) | st.sampled_from(["notes.txt", "deep/er/notes.txt"]),
            "content": TEXT | B64,
        },
        {"encoding": st.sampled_from(["utf-8", "base64"])},
    ),
    "schedule_task": (
        {"prompt": TEXT, "schedule": SCHEDULES},
        {
            "context": st.sampled_from(["group", "isolated"]),
            "script": TEXT,
            "catch_up": st.sampled_from(["once", "skip"]),
            "group": st.sampled_from(FOLDERS),
        },
    ),
    "update_task": (
        {"task_id": TASK_ID},
        {"prompt": TEXT, "schedule": SCHEDULES, "context": st.sampled_from(["group"])},
    ),
    "pause_task": ({"task_id": TASK_ID}, {}),
    "resume_task": ({"task_id": TASK_ID}, {}),
    "cancel_task": ({"task_id": TASK_ID}, {}),
    "register_group": (
        {"chat": st.sampled_from([*CHATS, "tg:-7"]), "folder": st.sampled_from(FOLDERS)},
        {"trigger": TEXT, "requires_trigger": st.booleans()},
    ),
}
WELL_FORMED = st.one_of(
    *(
        st.fixed_dictionaries({"type": st.just(kind), **required}, optional=optional)
        for kind, (required, optional) in SHAPES.items()
    )
)


@st.composite
def mutated(draw: st.DrawFn) -> dict[str, Any]:
    """A well-formed request with one thing wrong: a field gone, of another type, or extra."""
    request: dict[str, Any] = draw(WELL_FORMED)
    key = draw(st.sampled_from(sorted(request)))
    how = draw(st.sampled_from(["drop", "retype", "extra"]))
    if how == "drop":
        del request[key]
    elif how == "retype":
        request[key] = draw(st.one_of(ODD, JSON))
    else:
        request[draw(st.text(max_size=8))] = draw(JSON)
    return request


ANY_TYPE = st.builds(
    lambda t, rest: {**rest, "type": t}, st.one_of(TEXT, ODD, JSON), st.dictionaries(TEXT, JSON)
)
REQUESTS = st.one_of(WELL_FORMED, WELL_FORMED, WELL_FORMED, mutated(), ANY_TYPE, JSON)
ENCODED = st.builds(
    lambda obj, ascii_only: json.dumps(obj, ensure_ascii=ascii_only).encode(
        "utf-8", "surrogatepass"
    ),
    REQUESTS,
    st.booleans(),
)
RAW = st.one_of(
    st.binary(max_size=64),
    one_of_values(
        b" " * (ipcfs.FILE_CAP + 1),
        b"[" * 100_000 + b"]" * 100_000,
        b'{"type": "send_message", "text": ' + b"9" * 5000 + b"}",
        b"NaN",
        b"\x00",
        '\ufeff{"type": "send_message", "text": "bom"}'.encode(),
        b'{"type": "send_message", "text": "a"} trailing',
        b'{"type": "send_message"}\xff',
        b'{"type": "send_message", "text": "x", "\\ud800": 1}',
        b'{"type": "send_message", "text": "raw \x00 nul"}',
    ),
)
PAYLOADS = st.one_of(ENCODED, ENCODED, ENCODED, RAW)
VALID_NAMES = st.builds(
    lambda ms, rid: f"{ms}-{rid}.json".encode(),
    st.integers(10**12, 10**13 - 1),
    st.text(
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-", min_size=1, max_size=64
    ),
)
TRICKY_NAMES = [
    b"1234567890123-a.json\n",
    "١٢٣٤٥٦٧٨٩٠١٢٣-a.json".encode(),
    b"1234567890123-a.JSON",
    b"1234567890123-a.json.reason.txt",
    b"x!.reason.txt",
    b"x_",
    b"x?",
    b"\xff\xfe.json",
    b"1234567890123-" + b"a" * 65 + b".json",
    b" 1234567890123-a.json",
    b"unnamed",
]
NAMES = st.one_of(
    VALID_NAMES,
    VALID_NAMES,
    st.sampled_from(TRICKY_NAMES),
    st.text(
        st.characters(exclude_characters="/\x00", exclude_categories=["Cs"]),
        min_size=1,
        max_size=40,
    ).map(os.fsencode),
    st.binary(min_size=1, max_size=40),
).filter(lambda n: b"/" not in n and b"\x00" not in n and not n.startswith(b".") and len(n) < 200)
# What sits at the name when the handler reads it: "vanish" is deleted after listing, the
# others replace the listed file (a swap between listing and reading).
KINDS = ["file", "file", "file", "symlink", "dangling", "fifo", "dir", "vanish"]


@dataclass(frozen=True)
class Drop:
    folder: str
    name: bytes
    kind: str
    data: bytes

    @property
    def listed(self) -> str:
        return os.fsdecode(self.name)

    @property
    def request_type(self) -> str:
        try:
            value = json.loads(self.data)
        except (ValueError, RecursionError):
            return ""
        return str(value.get("type", "")) if isinstance(value, dict) else ""


def drops(
    names: st.SearchStrategy[bytes], kinds: list[str], payloads: st.SearchStrategy[bytes]
) -> st.SearchStrategy[list[Drop]]:
    one = st.builds(Drop, st.sampled_from(list(GROUPS)), names, st.sampled_from(kinds), payloads)
    return st.lists(one, min_size=1, max_size=4, unique_by=lambda d: (d.folder, d.name))


def encoded(requests: st.SearchStrategy[Any]) -> st.SearchStrategy[bytes]:
    return st.builds(lambda obj: json.dumps(obj).encode(), requests)


def place(h: Host, drop: Drop, kind: str) -> None:
    path = os.path.join(os.fsencode(h.ipc / drop.folder / "outbound"), drop.name)
    if kind in ("file", "vanish"):
        Path(os.fsdecode(path)).write_bytes(drop.data)
    elif kind == "symlink":
        os.symlink(h.secret, path)
    elif kind == "dangling":
        os.symlink("/nonexistent/nowhere", path)
    elif kind == "fifo":
        os.mkfifo(path)
    else:
        os.mkdir(path)
        Path(os.fsdecode(path), "inner.json").write_bytes(drop.data)


def swap(h: Host, drop: Drop) -> None:
    path = os.path.join(os.fsencode(h.ipc / drop.folder / "outbound"), drop.name)
    os.unlink(path)
    if drop.kind != "vanish":
        place(h, drop, drop.kind)


def signature(h: Host, drop: Drop) -> tuple[str, str]:
    """What the set-aside copy of a refused drop must look like in errors/."""
    if drop.kind == "file":
        return ("file", hashlib.sha256(drop.data).hexdigest())
    if drop.kind in ("symlink", "dangling"):
        return ("link", str(h.secret) if drop.kind == "symlink" else "/nonexistent/nowhere")
    return ("dir", "") if drop.kind == "dir" else ("other", "")


async def state(store: Store) -> tuple[dict[str, tuple[Any, ...]], list[Group]]:
    tasks = {
        t.id: (t.folder, t.status, t.prompt, t.schedule) for t in await store.tasks(with_gone=True)
    }
    return tasks, await store.groups()


async def handle_drops(drops: list[Drop]) -> None:
    async with host() as h:
        for drop in drops:
            place(h, drop, "file")
        listed = {folder: ipcfs.list_names(h.ipc, folder) for folder in GROUPS}
        for drop in drops:
            if drop.kind != "file":
                swap(h, drop)
        results: dict[Drop, str] = {}
        by_name = {(d.folder, d.listed): d for d in drops}
        outbox_seen = 0
        for folder, names in listed.items():
            for name in names:
                drop = by_name[(folder, name)]
                before, (tasks, groups) = snapshot(h.root), await state(h.store)
                result = str(await h.handler.handle_file(folder, name))
                results[drop] = result
                label = drop.request_type if drop.request_type in SHAPES else "other"
                event(f"{drop.kind} {label}: {result.split(':')[0]}")
                assert result in ("done", "gone") or result.startswith("rejected: "), result
                assert "internal error" not in result, (drop, result)
                assert result != "gone" or drop.kind == "vanish", (drop, result)
                # nothing written outside where this file may write
                after = snapshot(h.root)
                done, kind = result == "done", drop.request_type
                changed = {p for p in before.keys() | after.keys() if before.get(p) != after.get(p)}
                outside = [p for p in changed if not may_change(p, folder, kind, done)]
                assert not outside, (drop, result, outside)
                # authorised by the directory the file came from
                rows = await h.store._all("SELECT id, folder, chat_id FROM outbox ORDER BY id")
                for _, row_folder, chat in rows[outbox_seen:]:
                    owner = await h.store.folder_of_chat(chat)
                    assert row_folder == folder and owner is not None, (drop, chat)
                    assert owner == folder or folder == "main", (drop, chat, owner)
                outbox_seen = len(rows)
                tasks_after, groups_after = await state(h.store)
                for task_id, row in tasks_after.items():
                    if tasks.get(task_id) != row and folder != "main":
                        assert row[0] == folder, (drop, task_id, row)
                        assert task_id not in tasks or tasks[task_id][0] == folder
                assert groups_after == groups or (folder == "main" and done), drop
        await check_set_aside(h, drops, results)


async def check_set_aside(h: Host, drops: list[Drop], results: dict[Drop, str]) -> None:
    """Outbound is empty; every refused file is in errors/, intact, beside a note of why."""
    for folder in GROUPS:
        assert ipcfs.list_names(h.ipc, folder) == []
        kept, texts = set_aside(h, folder)
        refused = [
            d
            for d in drops
            if d.folder == folder and d.kind != "vanish" and results[d].startswith("rejected")
        ]
        assert kept == Counter(signature(h, d) for d in refused), (folder, kept, refused)
        assert len(texts) == len(refused)
        for drop in refused:
            reason = results[drop].removeprefix("rejected: ")
            assert any(reason in text for text in texts), (drop, reason, texts)
        done = {
            r[0]
            for r in await h.store._all("SELECT name FROM ipc_done WHERE folder = ?", (folder,))
        }
        for drop in drops:
            if drop.folder == folder and NAME_RE.match(drop.listed):
                acted = results[drop] == "done" or drop in refused
                assert (drop.listed in done) == acted, (drop, results[drop])


@HEAVY
@given(drops(NAMES, KINDS, PAYLOADS))
def test_any_outbound_files_are_acted_on_or_set_aside(dropped: list[Drop]) -> None:
    asyncio.run(handle_drops(dropped))


@HEAVY
@given(drops(VALID_NAMES, ["file"], encoded(WELL_FORMED | mutated())))
def test_requests_act_only_where_their_directory_allows(dropped: list[Drop]) -> None:
    asyncio.run(handle_drops(dropped))
