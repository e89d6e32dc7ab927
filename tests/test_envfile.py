"""The .env writer: what it writes, the settings loader reads back unchanged; other lines stay;
the file is replaced atomically with mode 0600."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from nanoclaw.config import load_settings
from nanoclaw.envfile import env_keys, quote, with_values, write_private

TRICKY = [
    "sk-ant-api03-AbC_d-9",
    "a|b",  # broke install.sh's sed
    "p@ss word",
    "it's",
    '"quoted"',
    "back\\slash\\",
    "#not-a-comment",
    "x #y",
    "$HOME",
    "é-ünïcode",
    "'",
    "\\'",
    " padded ",
]


@pytest.mark.parametrize("value", TRICKY)
def test_a_written_value_reads_back_unchanged(tmp_path: Path, value: str) -> None:
    env = tmp_path / ".env"
    write_private(env, with_values("", {"XMPP_PASSWORD": value}))
    s = load_settings(env)
    assert s.xmpp_password is not None and s.xmpp_password.get_secret_value() == value


@pytest.mark.parametrize("value", ["two\nlines", "${HOME}", "nul\0"])
def test_what_a_line_cannot_hold_is_refused(value: str) -> None:
    with pytest.raises(ValueError, match=r"in \.env"):
        quote(value)


def test_values_are_set_in_place_and_other_lines_stay() -> None:
    text = (
        "# header\n"
        "FOO=keep me\n"
        "ANTHROPIC_API_KEY=old\n"
        "# --- Telegram\n"
        "#TELEGRAM_BOT_TOKEN=123456:ABC...\n"
        "#TELEGRAM_API_URL=https://api.telegram.org\n"
        "export ANTHROPIC_API_KEY=older\n"
    )
    new = {"ANTHROPIC_API_KEY": "sk-new", "TELEGRAM_BOT_TOKEN": "1:tok", "XMPP_JID": "a@b.org"}
    assert with_values(text, new) == (
        "# header\n"
        "FOO=keep me\n"
        "ANTHROPIC_API_KEY=sk-new\n"
        "# --- Telegram\n"
        "#TELEGRAM_BOT_TOKEN=123456:ABC...\n"
        "TELEGRAM_BOT_TOKEN=1:tok\n"
        "#TELEGRAM_API_URL=https://api.telegram.org\n"
        "XMPP_JID=a@b.org\n"
    )


def test_write_private_replaces_with_mode_0600(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text("OLD=1\n")
    env.chmod(0o644)
    write_private(env, "NEW=2\n")
    assert env.read_text() == "NEW=2\n"
    assert stat.S_IMODE(env.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == [".env"]
    assert env_keys(env) == ["NEW"]
