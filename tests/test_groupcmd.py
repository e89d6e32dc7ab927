"""`nanoclaw groups`: one group per chat, chat ids each channel can have, show, main kept.

The command runs as a real subprocess on a store in tmp_path; the chat id rule is pure and
is also what an agent's register_group request meets, through the real IPC handler.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from conftest import run_cli

from nanoclaw.ipc import files as ipcfs
from nanoclaw.ipc.handler import IpcHandler
from nanoclaw.models import Group, chat_id_problem, chat_problem
from nanoclaw.store.messages import Store


def cli(home: Path, *args: str, **settings: str) -> subprocess.CompletedProcess[str]:
    (home / "groups").mkdir(exist_ok=True)  # an installation: a new one earns a warning line
    return run_cli(home, *args, **settings)


def ok(home: Path, *args: str, **settings: str) -> str:
    proc = cli(home, *args, **settings)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def refused(home: Path, *args: str) -> str:
    """The one-line error of a refused command; it must have changed nothing it printed."""
    proc = cli(home, *args)
    assert proc.returncode == 2, proc.stdout
    assert proc.stdout == "" and proc.stderr.count("\n") == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    return proc.stderr


async def chats_of(home: Path) -> dict[str, tuple[str, ...]]:
    store = await Store.open(home / "store" / "nanoclaw.db")
    try:
        return {g.folder: g.chats for g in await store.groups()}
    finally:
        await store.close()


async def test_a_chat_held_by_another_group_needs_move(tmp_path: Path) -> None:
    ok(tmp_path, "groups", "add", "work", "--chat", "tg:-100", "--chat", "tg:-200")
    before = await chats_of(tmp_path)
    assert before == {"main": ("term:main",), "work": ("tg:-100", "tg:-200")}

    says = refused(tmp_path, "groups", "add", "dup", "--chat", "tg:-100")
    assert says == "nanoclaw: tg:-100 is held by group work; use --move to take it\n"
    says = refused(tmp_path, "groups", "add", "x", "--chat", "term:main")
    assert "term:main is held by group main; use --move" in says
    says = refused(tmp_path, "groups", "set", "main", "chat=tg:-200")
    assert "tg:-200 is held by group work" in says
    assert await chats_of(tmp_path) == before  # nothing moved, no group created
    assert not (tmp_path / "groups" / "dup").exists()

    ok(tmp_path, "groups", "add", "work", "--chat", "tg:-100")  # its own chat: no question
    out = ok(tmp_path, "groups", "add", "dup", "--chat", "tg:-100", "--move")
    assert out.splitlines()[-1] == "moved tg:-100 from group work"
    out = ok(tmp_path, "groups", "set", "dup", "chat=tg:-200", "--move")
    assert out.splitlines()[-1] == "moved tg:-200 from group work (none left)"
    assert await chats_of(tmp_path) == {
        "dup": ("tg:-100", "tg:-200"),
        "main": ("term:main",),
        "work": (),
    }


@pytest.mark.parametrize(
    ("chat_id", "problem"),
    [
        ("tg:-1001234567890", None),
        ("tg:42", None),
        ("xmpp:alice@example.org", None),
        ("xmpp:example.org", None),
        ("xmpp:team@conference.example.org/bob", None),  # a private chat through a room
        ("mx:!abcdef:example.org", None),
        ("term:main", None),
        ("tg:abc", "tg: takes an integer"),
        ("tg:-100x", "tg: takes an integer"),
        ("tg:007", "tg: takes an integer"),  # stored as tg:7: it would never match
        ("tg:", "tg: takes an integer"),
        ("xmpp:alice", None),  # a domain-only JID is a JID
        ("xmpp:a@b@c", "xmpp: takes a JID"),
        ("xmpp:@example.org", "xmpp: takes a JID"),
        ("xmpp:a@example..org", "xmpp: takes a JID"),
        ("xmpp:Alice@Example.org", "write the JID in lower case"),
        ("mx:#team:example.org", "is a room alias: use the room id"),
        ("mx:abcdef:example.org", "mx: takes a room id"),
        ("term:Work", "term: takes a group name"),
        ("irc:#x", "tg:, xmpp:, mx: or term:"),
        ("TG:-1", "tg:, xmpp:, mx: or term:"),
        ("tg:-1 x", "tg: takes an integer"),
    ],
)
def test_chat_ids_per_channel(chat_id: str, problem: str | None) -> None:
    found = chat_id_problem(chat_id)
    assert found is None if problem is None else problem in (found or ""), found


def test_chat_problem_names_the_holder() -> None:
    assert chat_problem("tg:-1", "work", None) is None
    assert chat_problem("tg:-1", "work", "work") is None
    assert chat_problem("tg:-1", "dup", "work") == "tg:-1 is held by group work"
    assert "integer" in (chat_problem("tg:x", "dup", None) or "")


@pytest.mark.parametrize("chat_id", ["tg:abc", "mx:#team:example.org", "xmpp:A@x.org"])
def test_groups_add_refuses_a_bad_chat_id(tmp_path: Path, chat_id: str) -> None:
    says = refused(tmp_path, "groups", "add", "work", "--chat", chat_id)
    assert says.startswith(f"nanoclaw: group work: {chat_id!r}")
    assert not (tmp_path / "groups" / "work").exists()


async def test_main_cannot_be_removed(tmp_path: Path) -> None:
    says = refused(tmp_path, "groups", "remove", "main")
    assert "main is the admin group and cannot be removed" in says
    assert await chats_of(tmp_path) == {"main": ("term:main",)}


def test_show_prints_every_setting(tmp_path: Path) -> None:
    ok(tmp_path, "groups", "add", "work", "--chat", "tg:-100", "--set", "trigger=@bot")
    ok(
        tmp_path,
        "groups",
        "set",
        "work",
        "allowed_senders=tg:1,tg:2",
        "model=claude-x",
        "network=allowlist",
        "domains=example.org,api.github.com",
        f"exports=reports={tmp_path / 'reports'}",
        "name=Work\x1b[2Jteam",
        "provider=openai-compatible",
        "fallback_models=glm-4.6,openai:gpt-5-mini",
        "vision=off",
    )
    out = ok(tmp_path, "groups", "show", "work", ALLOWED_SENDERS="tg:9", GROUP_DAILY_TOKENS="0")
    shown = dict(line.split(":", 1) for line in out.splitlines())
    shown = {key: value.strip() for key, value in shown.items()}
    assert shown["group"] == "work" and shown["name"] == "Workteam"  # no escape reaches a tty
    assert shown["chats"] == "tg:-100" and shown["trigger"] == "@bot"
    assert shown["allowed senders"] == "tg:1, tg:2; also ALLOWED_SENDERS: tg:9"
    assert shown["model"] == "claude-x" and shown["provider"] == "openai-compatible"
    assert shown["fallbacks"] == "glm-4.6, openai:gpt-5-mini"
    assert shown["vision"].startswith("off: the model gets the saved pictures' paths")
    assert shown["network"] == "allowlist (domains: example.org, api.github.com)"
    assert shown["domains"] == "example.org, api.github.com"
    assert shown["exports"] == f"reports={tmp_path / 'reports'}"
    assert shown["mounts"] == "none"
    assert shown["budget"].startswith("500 requests a day, no tokens limit")
    assert shown["tasks"] == "0 active, 0 paused"
    assert shown["workspace"] == f"{tmp_path / 'groups' / 'work'} (no CLAUDE.md)"

    main = ok(tmp_path, "groups", "show", "main", TRIGGER_WORD="@Bob")
    assert "trigger:         not needed" in main and "(default, NANOCLAW_MODEL)" in main
    assert "provider:        anthropic (default, LLM_PROVIDER)" in main
    assert "fallbacks:       none (NANOCLAW_FALLBACK_MODELS)" in main
    assert "vision:          on: pictures reach the model as images" in main
    ok(tmp_path, "groups", "set", "main", "requires_trigger=true")
    assert "trigger:         @Bob (default, TRIGGER_WORD)" in ok(
        tmp_path, "groups", "show", "main", TRIGGER_WORD="@Bob"
    )
    proc = cli(tmp_path, "groups", "show", "nope")
    assert (proc.returncode, proc.stderr) == (1, "no group nope\n")


async def test_an_agent_cannot_register_a_held_or_impossible_chat(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "store" / "nanoclaw.db")
    try:
        for folder, chat in {"main": "term:main", "work": "tg:-100"}.items():
            await store.save_group(Group(folder=folder, name=folder, chats=(chat,)))
            ipcfs.ensure_dirs(tmp_path / "ipc", folder)
        handler = IpcHandler(store, tmp_path / "ipc", tmp_path / "groups", ZoneInfo("UTC"))
        cases = {
            "tg:-100": "tg:-100 is held by group work; only the user can move it",
            "term:main": "term:main is held by group main; only the user can move it",
            "tg:abc": "tg: takes an integer",
        }
        for n, (chat, says) in enumerate(cases.items()):
            name = f"{1_700_000_000_000 + n}-{os.urandom(4).hex()}.json"
            request = {"type": "register_group", "chat": chat, "folder": "grab"}
            (tmp_path / "ipc" / "main" / "outbound" / name).write_text(json.dumps(request))
            assert (await handler.handle_file("main", name)).status == "rejected"
            [reason] = (tmp_path / "ipc" / "main" / "errors").glob(f"*{name}.reason.txt")
            assert says in reason.read_text()
        assert {g.folder: g.chats for g in await store.groups()} == {
            "main": ("term:main",),
            "work": ("tg:-100",),
        }
        assert not (tmp_path / "groups" / "grab").exists()
    finally:
        await store.close()


def test_packages_and_profile_are_set_checked_and_shown(tmp_path: Path) -> None:
    ok(tmp_path, "groups", "add", "work", "--chat", "tg:-100")
    said = ok(tmp_path, "groups", "set", "work", "packages=jq, ripgrep,python312", "profile=strict")
    assert "nanoclaw env build work" in said or "Nix is not installed" in said
    shown = ok(tmp_path, "groups", "show", "work")
    assert "profile:         strict\n" in shown
    assert "packages:        jq, ripgrep, python312\n" in shown
    assert (
        "environment:     Nix: bash, cacert, coreutils, jq, python312, ripgrep "
        "(nanoclaw env show work)\n"
    ) in shown
    # refused before any Nix is asked: nothing changes
    assert "'jq;rm' is not a nixpkgs attribute name" in refused(
        tmp_path, "groups", "set", "work", "packages=jq;rm"
    )
    assert "unknown profile 'strct' (did you mean strict?)" in refused(
        tmp_path, "groups", "set", "work", "profile=strct"
    )
    assert ok(tmp_path, "groups", "show", "work") == shown
    # a profile sets packages only: network stays off, with a hint
    said = ok(tmp_path, "groups", "set", "work", "profile=build-install")
    assert "hint: profile build-install expects network=full" in said
    assert "network:         off\n" in ok(tmp_path, "groups", "show", "work")
    ok(tmp_path, "groups", "set", "work", "packages=", "profile=")
    cleared = ok(tmp_path, "groups", "show", "work")
    assert "environment:     the host runtime (no packages or profile)" in cleared


def test_without_nix_the_wish_is_recorded_and_the_fate_said(tmp_path: Path) -> None:
    ok(tmp_path, "groups", "add", "work")
    empty = tmp_path / "no-nix"
    empty.mkdir()
    said = ok(tmp_path, "groups", "set", "work", "packages=jq", PATH=str(empty))
    assert "Nix is not installed here: runs of group work fail until it is" in said
    assert "packages:        jq\n" in ok(tmp_path, "groups", "show", "work")
