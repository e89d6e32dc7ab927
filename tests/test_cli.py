"""The `nanoclaw` command as a real subprocess on a store in tmp_path, and its pure setter.

More of `groups` (chats held by another group, show, remove) is in test_groupcmd.py.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from conftest import cli_env

from nanoclaw.cli.groups import HEADER, apply_setting
from nanoclaw.cli.main import CHATS_HEADER, SIGPIPE_EXIT, parser
from nanoclaw.models import Group
from nanoclaw.store.messages import Store

SETTINGS = (
    "ASSISTANT_NAME",
    "TRIGGER_WORD",
    "ALLOWED_SENDERS",
    "ALLOWED_JIDS",
    "NANOCLAW_HOME",
    "ANTHROPIC_API_KEY",
    "MAX_CONCURRENT_AGENTS",
    "POLL_INTERVAL_MS",
    "TZ",
    "LOG_LEVEL",
    "TELEGRAM_BOT_TOKEN",
    "XMPP_JID",
    "XMPP_PASSWORD",
    "MATRIX_HOMESERVER",
    "MATRIX_USER_ID",
)


def settled(home: Path) -> Path:
    """`home` as an installation that exists (a new one earns a warning line on stderr)."""
    (home / "groups").mkdir(exist_ok=True)
    return home


def nanoclaw(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    settled(home)
    env = {k: v for k, v in os.environ.items() if k not in SETTINGS}
    env.update(NANOCLAW_HOME=str(home), TZ="UTC")
    return subprocess.run(
        [sys.executable, "-m", "nanoclaw.cli.main", *args],
        env=env,
        cwd=home,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def ok(home: Path, *args: str) -> str:
    proc = nanoclaw(home, *args)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def listing(home: Path) -> dict[str, str]:
    header, *lines = ok(home, "groups", "list").splitlines()
    assert header == HEADER and header.split() == ["group", "trigger", "network", "chats"]
    return {line.split()[0]: line for line in lines}


async def stored_group(home: Path, folder: str) -> Group | None:
    store = await Store.open(home / "store" / "nanoclaw.db")
    try:
        return await store.group(folder)
    finally:
        await store.close()


def test_groups_list_shows_main_bound_to_terminal(tmp_path: Path) -> None:
    groups = listing(tmp_path)
    assert list(groups) == ["main"]
    assert groups["main"].split() == ["main", "(not", "needed)", "off", "term:main"]
    assert (tmp_path / "store" / "nanoclaw.db").is_file()


async def test_groups_add_set_list_remove(tmp_path: Path) -> None:
    out = ok(tmp_path, "groups", "add", "work", "--chat", "tg:-100123", "--set", "trigger=@bot")
    assert out.splitlines()[0] == HEADER and out.splitlines()[1].split() == [
        "work",
        "@bot",
        "off",
        "tg:-100123",
    ]
    assert listing(tmp_path)["work"].split() == ["work", "@bot", "off", "tg:-100123"]
    assert (tmp_path / "groups" / "work").is_dir()

    ok(tmp_path, "groups", "set", "work", "network=full", "requires_trigger=false")
    assert listing(tmp_path)["work"].split() == ["work", "(not", "needed)", "full", "tg:-100123"]
    group = await stored_group(tmp_path, "work")
    assert group is not None
    assert (group.trigger, group.requires_trigger, group.network) == ("@bot", False, "full")
    assert group.chats == ("tg:-100123",)

    ok(tmp_path, "groups", "set", "work", "allowed_senders=tg:1,tg:2", "chat=xmpp:a@example.org")
    group = await stored_group(tmp_path, "work")
    assert group is not None
    assert group.allowed_senders == ("tg:1", "tg:2")
    assert set(group.chats) == {"tg:-100123", "xmpp:a@example.org"}

    out = ok(tmp_path, "groups", "remove", "work")
    assert out.startswith("removed group work; its chats are no longer answered: tg:-100123, ")
    assert "it had no tasks" in out
    assert list(listing(tmp_path)) == ["main"]
    assert await stored_group(tmp_path, "work") is None
    gone = nanoclaw(tmp_path, "groups", "remove", "work")
    assert gone.returncode == 1 and gone.stderr == "no group work\n"


@pytest.mark.parametrize("folder", ["Work", "global", "_x", "a b", "../etc", "x" * 65])
def test_invalid_folder_exits_2(tmp_path: Path, folder: str) -> None:
    proc = nanoclaw(tmp_path, "groups", "add", folder, "--chat", "tg:-1")
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1
    assert "a-z, 0-9" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "groups" / folder).exists()


@pytest.mark.parametrize(
    ("pair", "says"),
    [
        ("network=wide", "network is off, allowlist or full"),
        ("requires_trigger=maybe", "requires_trigger is true or false"),
        ("colour=blue", "unknown key 'colour'"),
        ("chat=irc:#x", "is not a chat id"),
        ("network", "write key=value"),
    ],
)
async def test_invalid_setting_exits_2_and_changes_nothing(
    tmp_path: Path, pair: str, says: str
) -> None:
    ok(tmp_path, "groups", "add", "work", "--chat", "tg:-1")
    proc = nanoclaw(tmp_path, "groups", "set", "work", "requires_trigger=false", pair)
    assert proc.returncode == 2
    assert says in proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    group = await stored_group(tmp_path, "work")
    assert group is not None and group.requires_trigger is True and group.network == "off"


def test_set_on_unknown_group_fails(tmp_path: Path) -> None:
    proc = nanoclaw(tmp_path, "groups", "set", "nope", "network=full")
    assert proc.returncode == 1
    assert "no group nope" in proc.stderr
    assert "nope" not in listing(tmp_path)


async def test_chats_lists_seen_chats(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "store" / "nanoclaw.db")
    try:
        await store.record_chat("tg:-100999", "Family", True, 1_700_000_000_000)
        await store.record_chat("term:main", "terminal", False, 1_700_000_060_000)
        # a stranger names the group; `chats` lists it before anyone registered it
        await store.record_chat("tg:-100666", "Evil\x1b]52;c;aGk=\x07\nTitle", True, 0)
    finally:
        await store.close()
    header, *lines = ok(tmp_path, "chats").splitlines()
    assert header == CHATS_HEADER and header.split() == ["chat", "group", "last", "seen", "name"]
    by_chat = {line.split()[0]: line for line in lines}
    assert set(by_chat) == {"tg:-100999", "term:main", "tg:-100666"}
    assert by_chat["tg:-100666"].endswith("Evil Title")  # no OSC 52 clipboard write, one line
    assert "(not registered)" in by_chat["tg:-100999"]
    assert by_chat["tg:-100999"].endswith("Family")
    assert "2023-11-14 22:13" in by_chat["tg:-100999"]  # last seen, in TZ=UTC
    ok(tmp_path, "groups", "list")  # creates main, bound to term:main
    ok(tmp_path, "groups", "add", "fam", "--chat", "tg:-100999")
    by_chat = {line.split()[0]: line for line in ok(tmp_path, "chats").splitlines()[1:]}
    assert by_chat["tg:-100999"].split()[1] == "fam"
    assert by_chat["term:main"].split()[1] == "main"


def test_version_and_a_help_line_for_every_command(tmp_path: Path) -> None:
    assert ok(tmp_path, "--version") == f"nanoclaw {metadata.version('nanoclaw')}\n"
    helped: list[str] = []

    def walk(p: argparse.ArgumentParser, path: str) -> None:
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                helps = {a.dest: a.help for a in action._choices_actions}
                for name, sub in action.choices.items():
                    assert helps.get(name), f"`{path} {name}` has no help line"
                    helped.append(f"{path} {name}")
                    walk(sub, f"{path} {name}")

    walk(parser(), "nanoclaw")
    assert {"nanoclaw groups show", "nanoclaw tasks cancel", "nanoclaw usage"} <= set(helped)
    top = ok(tmp_path, "--help")
    for command in (c.split()[1] for c in helped if c.count(" ") == 1):
        assert re.search(rf"^ +{command} +\w", top, re.MULTILINE), f"{command} in --help"
    assert re.search(r"^ +show +every setting", ok(tmp_path, "groups", "--help"), re.MULTILINE)


@pytest.mark.parametrize(
    ("args", "code"),
    [
        *(
            (args, SIGPIPE_EXIT)
            for args in (
                ["groups", "list"],
                ["groups", "show", "main"],
                ["chats"],
                ["tasks", "list"],
                ["tasks", "runs"],
                ["usage"],
                ["doctor"],
            )
        ),
        (["--version"], 0),
        (["--help"], 0),  # argparse drops what it cannot write, and exits
    ],
)
def test_a_closed_stdout_ends_any_command_quietly(
    tmp_path: Path, args: list[str], code: int
) -> None:
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first line: `| head -0`
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "nanoclaw.cli.main", *args],
            env=cli_env(settled(tmp_path)),
            cwd=tmp_path,
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        os.close(write)
    assert proc.stderr == ""  # no BrokenPipeError traceback, no "Exception ignored"
    assert proc.returncode == code


async def test_output_cut_short_by_head_ends_quietly(tmp_path: Path) -> None:
    store = await Store.open(settled(tmp_path) / "store" / "nanoclaw.db")
    try:
        for n in range(2000):  # far more than a pipe holds: the write fails mid-stream
            await store.record_chat(f"tg:-{100_000 + n}", f"chat {n}", True, 1_700_000_000_000)
    finally:
        await store.close()
    proc = subprocess.Popen(
        [sys.executable, "-m", "nanoclaw.cli.main", "chats"],
        env=cli_env(tmp_path),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.readline() == CHATS_HEADER + "\n"  # `| head -1`
    proc.stdout.close()
    assert proc.wait(timeout=60) == SIGPIPE_EXIT
    assert proc.stderr.read() == ""
    proc.stderr.close()


# the pure setter

BASE = Group(folder="work", name="work", chats=("tg:-1",))


@pytest.mark.parametrize(
    ("key", "value", "field", "expected"),
    [
        ("requires_trigger", "false", "requires_trigger", False),
        ("requires_trigger", "No", "requires_trigger", False),
        ("requires_trigger", "0", "requires_trigger", False),
        ("requires_trigger", "TRUE", "requires_trigger", True),
        ("requires_trigger", "yes", "requires_trigger", True),
        ("network", "allowlist", "network", "allowlist"),
        ("network", "full", "network", "full"),
        ("allowed_senders", "tg:1,tg:2", "allowed_senders", ("tg:1", "tg:2")),
        ("allowed_senders", "", "allowed_senders", ()),
        ("chat", "term:work", "chats", ("tg:-1", "term:work")),
        ("name", "Work team", "name", "Work team"),
        ("name", "", "name", "work"),
        ("trigger", "@bot", "trigger", "@bot"),
        ("trigger", "", "trigger", None),
        ("model", "claude-x", "model", "claude-x"),
        ("model", "", "model", None),
        ("model", " gpt-5.1 ", "model", "gpt-5.1"),
        ("model", "openrouter/z-ai/glm-4.6", "model", "openrouter/z-ai/glm-4.6"),
        ("provider", "openai-compatible", "provider", "openai-compatible"),
        ("provider", "", "provider", None),
        (
            "fallback_models",
            "claude-haiku-4-5, gpt-5-mini",
            "fallback_models",
            ("claude-haiku-4-5", "gpt-5-mini"),
        ),
        ("fallback_models", "", "fallback_models", ()),
        ("daily_cost", "2.50", "daily_cost", 2.5),
        ("daily_cost", "0", "daily_cost", 0.0),
        ("daily_cost", "", "daily_cost", None),
        ("daily_requests", "40", "daily_requests", 40),
        ("daily_tokens", "0", "daily_tokens", 0),
        ("daily_tokens", "", "daily_tokens", None),
        ("vision", "off", "vision", False),
        ("vision", "ON", "vision", True),
        ("progress", "on", "progress", True),
    ],
)
def test_apply_setting(key: str, value: str, field: str, expected: object) -> None:
    out = apply_setting(BASE, key, value)
    assert getattr(out, field) == expected
    assert BASE.chats == ("tg:-1",) and BASE.network == "off"  # the input is not changed


@pytest.mark.parametrize(
    ("key", "value", "says"),
    [
        ("network", "Full", "network is off, allowlist or full"),
        ("requires_trigger", "maybe", "true or false"),
        ("chat", "tg:", "not a chat id"),
        ("chat", "TG:-1", "not a chat id"),
        ("folder", "x", "unknown key"),
        ("provider", "OpenAI", "provider is one of"),
        ("model", "a b", "not a model name"),
        ("model", "a,b", "model is one name"),
        ("model", "-rm", "not a model name"),
        ("fallback_models", "ok,bad name", "not a model name"),
        ("daily_cost", "-1", "0 or more"),
        ("daily_cost", "nan", "0 or more"),
        ("daily_cost", "inf", "0 or more"),
        ("daily_cost", "two", "is a number"),
        ("daily_tokens", "1.5", "is a number"),
        ("daily_requests", "-2", "0 or more"),
        ("vision", "maybe", "vision is on or off"),
    ],
)
def test_apply_setting_rejects(key: str, value: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        apply_setting(BASE, key, value)


def test_apply_setting_allowed_senders_drops_blank_entries() -> None:
    assert apply_setting(BASE, "allowed_senders", "tg:1, , tg:2, ").allowed_senders == (
        "tg:1",
        "tg:2",
    )


def test_apply_setting_rejects_bad_sender_id() -> None:
    with pytest.raises(ValueError, match="bob"):
        apply_setting(BASE, "allowed_senders", "tg:1,bob")
