"""The in-sandbox agent runner's pure parts, run on the host: context, IPC files, tools.

These modules import only the standard library, so they are tested directly with real
files in tmp_path, a real writer thread and real bash subprocesses.
"""

from __future__ import annotations

import json
import os
import re
import threading
from pathlib import Path
from typing import Any

import pytest

from nanoclaw.agent.conversation import (
    MEMORY_CAP,
    History,
    skills_index,
    strip_internal,
    system_prompt,
    trim_history,
)
from nanoclaw.agent.ipcfiles import Inbox, write_json
from nanoclaw.agent.protocol import CLOSE, RunConfig, ipc_name
from nanoclaw.agent.tools import OUTPUT_CAP, TOOL_SPECS, Toolbox, cap

IPC_NAME = re.compile(r"^\d{13}-[0-9a-f]{12}\.json$")

# conversation: internal text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Hello", "Hello"),
        ("<internal>thinking</internal>Hello", "Hello"),
        ("Hi <internal>a</internal>there <INTERNAL>b</Internal>!", "Hi there !"),
        ("<internal>line 1\nline 2</internal>\n\nAnswer", "Answer"),
        ("<internal>only notes</internal>", ""),
        ("  <internal>x</internal>  ", ""),
        ("Answer<internal>never closed\nsecret plan", "Answer"),
        ("<internal>a</internal>kept<internal>unclosed", "kept"),
    ],
)
def test_strip_internal(text: str, expected: str) -> None:
    assert strip_internal(text) == expected


# conversation: history


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


def assistant(text: str) -> dict[str, Any]:
    return {"role": "assistant", "content": [{"type": "text", "text": text}]}


def tool_use(i: int) -> dict[str, Any]:
    return {
        "role": "assistant",
        "content": [
            {"type": "tool_use", "id": f"t{i}", "name": "bash", "input": {"command": "ls"}}
        ],
    }


def tool_result(i: int, size: int = 10) -> dict[str, Any]:
    block = {"type": "tool_result", "tool_use_id": f"t{i}", "content": "x" * size}
    return {"role": "user", "content": [block]}


def exchange(i: int, size: int = 10) -> list[dict[str, Any]]:
    return [user(f"q{i}"), tool_use(i), tool_result(i, size), assistant(f"a{i}")]


def test_trim_history_keeps_everything_within_budget() -> None:
    msgs = exchange(1) + exchange(2)
    assert trim_history(msgs, 10_000) == msgs


def test_trim_history_drops_whole_oldest_exchanges() -> None:
    msgs = exchange(1, 500) + exchange(2, 500) + exchange(3, 10)
    budget = len(json.dumps(exchange(2, 500) + exchange(3, 10)))
    out = trim_history(msgs, budget)
    assert out == exchange(2, 500) + exchange(3, 10)
    out = trim_history(msgs, budget - 1)
    assert out == exchange(3, 10)


@pytest.mark.parametrize("budget", [0, 50, 300, 700, 1500, 100_000])
def test_trim_history_never_starts_with_a_tool_result(budget: int) -> None:
    msgs = [tool_result(0), assistant("orphan"), *exchange(1, 300), *exchange(2, 300)]
    out = trim_history(msgs, budget)
    assert out, "the newest exchange is always kept"
    assert out[0]["role"] == "user" and isinstance(out[0]["content"], str)
    assert out == msgs[len(msgs) - len(out) :]  # a suffix: nothing reordered or cut inside
    assert len(json.dumps(out)) <= budget or out == exchange(2, 300)


def test_trim_history_without_any_user_text_is_empty() -> None:
    assert trim_history([tool_result(1), assistant("a")], 10_000) == []
    assert trim_history([], 10_000) == []


def test_history_round_trip_and_corrupt_file(tmp_path: Path) -> None:
    path = tmp_path / ".nanoclaw" / "conversation.json"
    history = History(path, 100_000)
    assert history.load() == []
    msgs = exchange(1) + exchange(2)
    history.save(msgs)
    assert history.load() == msgs
    assert sorted(p.name for p in path.parent.iterdir()) == ["conversation.json"]
    path.write_text("{not json")
    assert history.load() == []
    path.write_text('{"role": "user"}')
    assert history.load() == []


def test_history_save_trims_to_budget(tmp_path: Path) -> None:
    path = tmp_path / "conversation.json"
    msgs = exchange(1, 2000) + exchange(2, 10)
    History(path, 1000).save(msgs)
    assert json.loads(path.read_text()) == exchange(2, 10)


# conversation: skills and system prompt


def write_skill(root: Path, folder: str, text: str) -> None:
    (root / folder).mkdir(parents=True)
    (root / folder / "SKILL.md").write_text(text)


def test_skills_index_from_front_matter(tmp_path: Path) -> None:
    skills = tmp_path / "skills"
    write_skill(
        skills,
        "b-tables",
        '---\nname: data-wrangling\ndescription: "Clean CSV: dedupe, sort"\n---\n# Body\n',
    )
    write_skill(skills, "a-plain", "# No front matter\nname: not-this\n")
    write_skill(skills, "c-partial", "---\ndescription: 'only a description'\n---\n")
    (skills / "d-empty-dir").mkdir()
    assert skills_index(skills) == [
        ("a-plain", ""),
        ("data-wrangling", "Clean CSV: dedupe, sort"),
        ("c-partial", "only a description"),
    ]


def test_skills_index_missing_dir(tmp_path: Path) -> None:
    assert skills_index(tmp_path / "nope") == []


def test_system_prompt_includes_memories_and_skills(tmp_path: Path) -> None:
    workspace, global_dir, skills = tmp_path / "ws", tmp_path / "global", tmp_path / "skills"
    workspace.mkdir()
    global_dir.mkdir()
    (workspace / "CLAUDE.md").write_text("Group rule: answer in German.")
    (global_dir / "CLAUDE.md").write_text("Global rule: the owner is Sam.")
    write_skill(skills, "wx", "---\nname: weather\ndescription: forecasts\n---\n")
    prompt = system_prompt(RunConfig("m", assistant_name="Bob"), workspace, global_dir, skills)
    assert prompt.startswith("You are Bob,")
    assert "Group rule: answer in German." in prompt
    assert "Global rule: the owner is Sam." in prompt
    assert prompt.index("Group rule") < prompt.index("Global rule")
    assert "- weather: forecasts (read /skills/weather/SKILL.md)" in prompt
    assert "main (admin) group" not in prompt
    main = system_prompt(RunConfig("m", is_main=True), workspace, global_dir, skills)
    assert main.startswith("You are Andy,") and "main (admin) group" in main


def test_system_prompt_reads_memory_fresh_and_caps_it(tmp_path: Path) -> None:
    (tmp_path / "CLAUDE.md").write_text("first version")
    cfg = RunConfig("m")
    assert "first version" in system_prompt(cfg, tmp_path, tmp_path / "g", tmp_path / "s")
    (tmp_path / "CLAUDE.md").write_text("m" * (MEMORY_CAP + 5000))
    prompt = system_prompt(cfg, tmp_path, tmp_path / "g", tmp_path / "s")
    assert "first version" not in prompt
    assert prompt.count("m" * 100) <= MEMORY_CAP // 100 + 1
    assert "[... memory cut ...]" in prompt
    assert "## Global memory" not in prompt and "## Skills" not in prompt


# ipcfiles


def test_ipc_name_form() -> None:
    names = {ipc_name() for _ in range(50)}
    assert len(names) == 50
    assert all(IPC_NAME.match(n) for n in names)


def test_write_json_is_atomic_and_named(tmp_path: Path) -> None:
    name = write_json(tmp_path, {"type": "send_message", "text": "héllo ✓"})
    assert IPC_NAME.match(name)
    assert [p.name for p in tmp_path.iterdir()] == [name]  # no temporary file left behind
    raw = (tmp_path / name).read_text(encoding="utf-8")
    assert json.loads(raw) == {"type": "send_message", "text": "héllo ✓"}
    assert "héllo ✓" in raw
    second = write_json(tmp_path, {"type": "x"})
    assert second != name and len(list(tmp_path.iterdir())) == 2


def put_input(directory: Path, name: str, payload: dict[str, Any]) -> None:
    """As the host does: a hidden temporary name, then a rename."""
    tmp = directory / f".{name}.tmp"
    tmp.write_text(json.dumps(payload))
    os.replace(tmp, directory / name)


def test_inbox_take_consumes_messages_in_order(tmp_path: Path) -> None:
    inbox = Inbox(tmp_path)
    put_input(tmp_path, "1700000000002-b.json", {"type": "messages", "prompt": "second"})
    put_input(tmp_path, "1700000000001-a.json", {"type": "messages", "prompt": "first"})
    put_input(tmp_path, "1700000000003-c.json", {"type": "other", "prompt": "dropped"})
    (tmp_path / "1700000000004-d.json").write_text("{broken")
    (tmp_path / ".1700000000005-e.json.tmp").write_text('{"type": "messages"}')
    (tmp_path / "notes.txt").write_text("not ipc")
    items, close = inbox.take()
    assert items == [("1700000000001-a.json", "first"), ("1700000000002-b.json", "second")]
    assert close is False
    # consumed files are gone; a half-written temporary and foreign files are left alone
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".1700000000005-e.json.tmp",
        "notes.txt",
    ]
    assert inbox.take() == ([], False)


def test_inbox_close_file(tmp_path: Path) -> None:
    inbox = Inbox(tmp_path)
    put_input(tmp_path, "1700000000001-a.json", {"type": "messages", "prompt": "last words"})
    (tmp_path / CLOSE).write_text("")
    items, close = inbox.take()
    assert items == [("1700000000001-a.json", "last words")]
    assert close is True
    assert list(tmp_path.iterdir()) == []


def test_inbox_wait_times_out_as_close(tmp_path: Path) -> None:
    assert Inbox(tmp_path).wait(0.05) == ([], True)


def test_inbox_wait_returns_what_is_already_there(tmp_path: Path) -> None:
    put_input(tmp_path, "1700000000001-a.json", {"type": "messages", "prompt": "ready"})
    assert Inbox(tmp_path).wait(30) == ([("1700000000001-a.json", "ready")], False)


def test_inbox_wait_sees_a_file_written_by_another_thread(tmp_path: Path) -> None:
    inbox = Inbox(tmp_path)
    waiting = threading.Event()

    def writer() -> None:
        waiting.wait(10)
        put_input(tmp_path, "1700000000009-f.json", {"type": "messages", "prompt": "follow-up"})

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        waiting.set()
        # the timeout is a ceiling, not a measurement: returning at it would say "close"
        items, close = inbox.wait(30)
    finally:
        thread.join(10)
    assert (items, close) == ([("1700000000009-f.json", "follow-up")], False)


def test_inbox_wait_sees_close_from_another_thread(tmp_path: Path) -> None:
    inbox = Inbox(tmp_path)
    timer = threading.Timer(0.05, lambda: (tmp_path / CLOSE).write_text(""))
    timer.start()
    try:
        items, close = inbox.wait(30)
    finally:
        timer.join(10)
    assert (items, close) == ([], True)
    assert not (tmp_path / CLOSE).exists()  # consumed, so it was seen rather than timed out


# tools


@pytest.fixture
def sent() -> list[dict[str, Any]]:
    return []


@pytest.fixture
def box(tmp_path: Path, sent: list[dict[str, Any]]) -> Toolbox:
    def send(payload: dict[str, Any]) -> str:
        sent.append(payload)
        return "1700000000000-abc.json"

    workspace = tmp_path / "workspace"
    workspace.mkdir()
    return Toolbox(workspace, send, bash_timeout_s=30)


def test_tool_specs_match_handlers(box: Toolbox) -> None:
    names = [spec["name"] for spec in TOOL_SPECS]
    assert len(names) == len(set(names))
    for spec in TOOL_SPECS:
        assert callable(getattr(box, f"tool_{spec['name']}"))
        assert set(spec["input_schema"]["required"]) <= set(spec["input_schema"]["properties"])


def test_bash_exit_code_and_output(box: Toolbox) -> None:
    out = box.run("bash", {"command": "echo hello; echo oops >&2; exit 3"})
    assert out == "exit code 3\nhello\n\n[stderr]\noops\n"
    assert box.run("bash", {"command": "true"}) == "exit code 0\n"


def test_bash_runs_in_workspace(box: Toolbox) -> None:
    assert box.run("bash", {"command": "pwd"}) == f"exit code 0\n{box.workspace}\n"
    box.run("bash", {"command": "echo made > made.txt"})
    assert (box.workspace / "made.txt").read_text() == "made\n"


def test_bash_output_capped(box: Toolbox) -> None:
    out = box.run("bash", {"command": "head -c 200000 /dev/zero | tr '\\0' a; echo; echo END"})
    assert len(out) < OUTPUT_CAP + 100
    assert out.startswith("exit code 0\naaa")
    assert out.rstrip().endswith("END")
    assert "characters cut" in out


def test_bash_timeout(tmp_path: Path) -> None:
    box = Toolbox(tmp_path, lambda p: "", bash_timeout_s=0.2)
    assert box.run("bash", {"command": "sleep 30"}).startswith("error: command timed out")


def test_cap() -> None:
    assert cap("short") == "short"
    out = cap("a" * 50 + "b" * 50, 20)
    assert out.startswith("a" * 10) and out.endswith("b" * 10)
    assert "[... 80 characters cut ...]" in out


def test_write_then_read_file(box: Toolbox) -> None:
    out = box.run("write_file", {"path": "notes/a.txt", "content": "one\ntwo\nthree\n"})
    assert out.startswith("wrote 14 characters")
    assert (box.workspace / "notes" / "a.txt").read_text() == "one\ntwo\nthree\n"
    assert (
        box.run("read_file", {"path": "notes/a.txt"}) == "     1\tone\n     2\ttwo\n     3\tthree"
    )
    assert box.run("read_file", {"path": "notes/a.txt", "offset": 2, "limit": 1}) == (
        "     2\ttwo\n[1 more lines]"
    )
    absolute = str(box.workspace / "notes" / "a.txt")
    assert box.run("read_file", {"path": absolute, "offset": 3}) == "     3\tthree"


def test_read_missing_file_is_an_error_text(box: Toolbox) -> None:
    out = box.run("read_file", {"path": "nope.txt"})
    assert out.startswith("error: No such file or directory")
    assert "nope.txt" in out


def test_edit_file(box: Toolbox) -> None:
    target = box.workspace / "f.txt"
    target.write_text("alpha beta alpha\ngamma\n")
    assert box.run("edit_file", {"path": "f.txt", "old_text": "gamma", "new_text": "delta"}) == (
        f"replaced 1 occurrence(s) in {target}"
    )
    assert target.read_text() == "alpha beta alpha\ndelta\n"

    ambiguous = box.run("edit_file", {"path": "f.txt", "old_text": "alpha", "new_text": "x"})
    assert ambiguous.startswith("error: old_text occurs 2 times")
    assert target.read_text() == "alpha beta alpha\ndelta\n"

    missing = box.run("edit_file", {"path": "f.txt", "old_text": "omega", "new_text": "x"})
    assert missing == "error: old_text not found"

    out = box.run(
        "edit_file", {"path": "f.txt", "old_text": "alpha", "new_text": "A", "replace_all": True}
    )
    assert out.startswith("replaced 2 occurrence(s)")
    assert target.read_text() == "A beta A\ndelta\n"


def test_send_message_and_update_memory_call_send(box: Toolbox, sent: list[dict[str, Any]]) -> None:
    assert box.run("send_message", {"text": "working on it"}) == "sent"
    assert box.run("update_memory", {"content": "likes tea"}) == "saved to memory"
    assert sent == [
        {"type": "send_message", "text": "working on it"},
        {"type": "update_memory", "content": "likes tea"},
    ]


def test_unknown_tool_and_bad_input_are_error_texts(
    box: Toolbox, sent: list[dict[str, Any]]
) -> None:
    assert box.run("rm_rf", {}) == "error: unknown tool 'rm_rf'"
    assert box.run("send_message", {"txt": "typo"}).startswith("error: bad input for send_message")
    assert sent == []
