"""Hostile CLAUDE.md task sections (SPEC section 8): bad lines are reported where they are,
any text parses, the daemon syncs any file and its watch survives an odd file name.
"""

from __future__ import annotations

import asyncio
import os
import re
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from conftest import wait_for
from hostile import HEAVY, UTC_ZONE
from hypothesis import given
from hypothesis import strategies as st

from nanoclaw.memory import MARKER
from nanoclaw.models import Group
from nanoclaw.schedule.claudemd import PROMPT_CAP, next_run, parse_tasks
from nanoclaw.schedule.taskfile import TaskFile
from nanoclaw.store.messages import Store

GOOD_CRONS = ["* * * * *", "0 8 * * 1-5", "*/15 * * * *", "0 0 29 2 *", "0 0 L 2 *", "30 2 * * *"]
BAD_CRONS = [
    "",
    "0 0 30 2 *",
    "0 0 31 4,6 *",
    "61 * * * *",
    "* * * *",
    "* * * * * *",
    "*/0 * * * *",
    "@daily",
    "H * * * *",
    "0 0 1 1 1#5",
    "\u0660 * * * *",
    "x" * 300,
]
GOOD_ZONES = ["UTC", "Asia/Kolkata", "America/New_York", "Etc/GMT+5"]
BAD_ZONES = [
    "",
    "Mars/Base",
    "America",
    "Etc",
    "posix",
    "../../etc/passwd",
    "/etc/localtime",
    "zone.tab",
    "a" * 300,
    "Europe/\x00Berlin",
    "UTC\u2028",
]
HEADINGS = [
    "## Scheduled Tasks",
    "## scheduled tasks  ",
    "## Notes",
    "##",
    "### Sub",
    "#",
    "## Scheduled Tasks!",
    "##Scheduled Tasks",
]
LINE_TEXT = st.text(st.characters(exclude_characters="\n", exclude_categories=["Cs"]), max_size=30)
LINES = st.one_of(
    st.sampled_from(HEADINGS).map(lambda h: ("heading", h)),
    st.sampled_from(GOOD_CRONS).map(lambda c: ("good cron", f"# Cron: {c}")),
    st.sampled_from(BAD_CRONS).map(lambda c: ("bad cron", f"# Cron: {c}")),
    LINE_TEXT.map(lambda c: ("cron?", f"#cron:{c}")),
    st.sampled_from(GOOD_ZONES).map(lambda z: ("good tz", f"# TZ: {z}")),
    st.sampled_from(BAD_ZONES).map(lambda z: ("bad tz", f"# TZ: {z}")),
    LINE_TEXT.map(lambda z: ("tz?", f"# tz:{z}")),
    LINE_TEXT.map(lambda t: ("text", t)),
    LINE_TEXT.map(lambda t: ("text", t)),
    st.sampled_from(["\f", "\x85", "\u2028", "\u2029", "\x1c", "\v", "a\rb"]).map(
        lambda t: ("text", f"x{t}y")
    ),
    st.just(("text", "")),
    st.just(("marker", MARKER)),
)
SECTION_RE = re.compile(r"##\s+Scheduled Tasks\s*", re.IGNORECASE)


def expected_problems(lines: list[tuple[str, str]]) -> set[tuple[int, str]]:
    """Lines the spec says must be reported: a bad "# Cron:" in the section, and a bad
    "# TZ:" right below a "# Cron:" there (the line numbers an editor shows)."""
    found: set[tuple[int, str]] = set()
    in_section, after_cron = False, False
    for number, (kind, text) in enumerate(lines, start=1):
        if kind == "marker":
            break
        if kind == "heading" and (text.startswith("## ") or text == "##"):
            in_section, after_cron = bool(SECTION_RE.fullmatch(text)), False
        elif in_section and kind in ("good cron", "bad cron"):
            after_cron = True
            if kind == "bad cron":
                found.add((number, "cron"))
        elif in_section and after_cron and kind == "bad tz":
            found.add((number, "timezone"))
        elif kind not in ("good tz",) and text.strip():
            after_cron = False
    return found


@given(st.lists(LINES, max_size=30), st.sampled_from(["\n", "\r\n"]))
def test_task_sections_report_bad_lines_where_they_are(
    lines: list[tuple[str, str]], eol: str
) -> None:
    text = eol.join(t for _, t in lines)
    tasks, problems = parse_tasks(text)
    count = len(lines)
    assert all(1 <= p.line <= max(count, 1) for p in problems), problems
    reported = {(p.line, "cron" if "cron" in p.message else "timezone") for p in problems}
    assert expected_problems(lines) <= reported, (expected_problems(lines), problems)
    now = datetime.now(UTC)
    for task in tasks:
        kind, line = lines[task.line - 1]
        assert kind == "good cron" and line.endswith(task.cron), (task, line)
        assert task.tz is None or task.tz in GOOD_ZONES
        assert 0 < len(task.prompt) <= PROMPT_CAP
        next_run(task.cron, ZoneInfo(task.tz or "UTC"), now)  # every task can be scheduled


@given(st.text())
def test_any_text_parses_to_tasks_and_problems(text: str) -> None:
    for doc in (text, f"## Scheduled Tasks\n{text}", f"## Scheduled Tasks\n# Cron: {text}\nx"):
        tasks, problems = parse_tasks(doc)
        lines = doc.count("\n") + 1
        assert all(1 <= t.line <= lines for t in tasks)
        assert all(1 <= p.line <= lines and "\n" not in p.message for p in problems)


async def sync_claude_md(text: str) -> list[tuple[int, str]]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        store = await Store.open(root / "nanoclaw.db")
        try:
            await store.save_group(Group(folder="alpha", name="alpha", chats=("tg:-1",)))
            (root / "groups" / "alpha").mkdir(parents=True)
            (root / "groups" / "alpha" / "CLAUDE.md").write_text(text, encoding="utf-8")
            taskfile = TaskFile(store, root / "groups", UTC_ZONE, lambda folder: None)
            problems = await taskfile.sync("alpha")
            tasks = await store.tasks("alpha")
        finally:
            await store.close()
    assert all(t.next_run_ms is not None for t in tasks)
    return problems


@HEAVY
@given(st.lists(LINES, max_size=20))
def test_the_daemon_syncs_any_claude_md(lines: list[tuple[str, str]]) -> None:
    problems = asyncio.run(sync_claude_md("## Scheduled Tasks\n" + "\n".join(t for _, t in lines)))
    assert all(line >= 0 and "\n" not in message for line, message in problems)


def test_a_cron_naming_no_time_is_reported_not_fatal() -> None:
    problems = asyncio.run(
        sync_claude_md(
            "## Scheduled Tasks\n# Cron: 0 0 30 2 *\nhi\n# Cron: * * * * *\n# TZ: America\nhi\n"
        )
    )
    assert [line for line, _ in problems] == [2, 5]
    assert "names no time" in problems[0][1] and "unknown timezone 'America'" in problems[1][1]


async def test_claude_md_watch_survives_a_file_name_that_is_not_utf8(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "nanoclaw.db")
    await store.save_group(Group(folder="alpha", name="alpha", chats=("tg:-1",)))
    workspace = tmp_path / "groups" / "alpha"
    workspace.mkdir(parents=True)
    taskfile = TaskFile(store, tmp_path / "groups", UTC_ZONE, lambda folder: None)
    task = asyncio.create_task(taskfile.run())
    memory = workspace / "CLAUDE.md"

    async def synced(prompt: str) -> bool:
        return task.done() or [t.prompt for t in await store.tasks("alpha")] == [prompt]

    try:
        await asyncio.wait_for(taskfile.ready.wait(), 10)
        memory.write_text("## Scheduled Tasks\n# Cron: * * * * *\nfirst\n")
        await wait_for(lambda: synced("first"), 10)  # the watch is live
        Path(os.fsdecode(os.fsencode(workspace) + b"/\xff")).write_text("x")
        memory.write_text("## Scheduled Tasks\n# Cron: * * * * *\nsecond\n")
        await wait_for(lambda: synced("second"), 10)  # seen with the odd name, or after it
        assert not task.done()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await store.close()
