"""Settings (SPEC section 4): defaults, aliases, lists, and one clear line for a bad value.

In-process tests set the environment with monkeypatch and pass env_file=None; the last
tests run the real CLI in a subprocess to check the exit code and the single stderr line.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zoneinfo
from pathlib import Path

import pytest
from pydantic import AliasChoices

from nanoclaw.config import (
    DEFAULT_MODEL,
    Settings,
    half_configured,
    load_settings,
    require_credential,
    unknown_keys,
)
from nanoclaw.errors import ConfigError


def setting_names() -> set[str]:
    names = {"ALLOWED_JIDS"}
    for info in Settings.model_fields.values():
        if isinstance(info.alias, str):
            names.add(info.alias)
        if isinstance(info.validation_alias, AliasChoices):
            names.update(c for c in info.validation_alias.choices if isinstance(c, str))
    return names


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """An environment with no nanoclaw setting in it, run from an empty directory."""
    for name in setting_names():
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return monkeypatch


def clean_environ(tmp_path: Path, **extra: str) -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if k not in setting_names()}
    out.update({"NANOCLAW_HOME": str(tmp_path), **extra})
    return out


def test_setting_names_cover_the_spec() -> None:
    assert {"ASSISTANT_NAME", "ALLOWED_SENDERS", "ALLOWED_JIDS", "TZ", "NANOCLAW_HOME"} <= (
        setting_names()
    )


def test_defaults(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    s = load_settings(env_file=None)
    assert s.assistant_name == "Andy"
    assert s.trigger == "@Andy"
    assert s.allowed_senders == []
    assert s.nanoclaw_home == tmp_path
    assert s.layout.db == tmp_path / "store" / "nanoclaw.db"
    assert s.layout.groups == tmp_path / "groups"
    assert s.anthropic_api_key is None
    assert s.anthropic_base_url == "https://api.anthropic.com"
    assert s.nanoclaw_model == DEFAULT_MODEL
    assert s.max_concurrent_agents == 5
    assert s.poll_interval_ms == 250
    assert s.agent_idle_timeout_s == 600
    assert s.agent_timeout_s == 1800
    assert s.log_level == "info"
    assert s.xmpp_tls == "required"
    assert s.telegram_api_url == "https://api.telegram.org"
    assert s.telegram_bot_token is None
    assert s.zone.key == s.tz  # the host's zone, whatever it is, is a valid one


def test_trigger_follows_name_unless_set(env: pytest.MonkeyPatch) -> None:
    env.setenv("ASSISTANT_NAME", "Bob")
    assert load_settings(env_file=None).trigger == "@Bob"
    env.setenv("TRIGGER_WORD", "hey bob")
    assert load_settings(env_file=None).trigger == "hey bob"


def test_values_from_environment(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env.setenv("MAX_CONCURRENT_AGENTS", "2")
    env.setenv("POLL_INTERVAL_MS", "100")
    env.setenv("TZ", "Asia/Kolkata")
    env.setenv("LOG_LEVEL", "DEBUG")
    env.setenv("NANOCLAW_HOME", str(tmp_path / "home"))
    env.setenv("ANTHROPIC_BASE_URL", "http://127.0.0.1:9999/")
    env.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
    s = load_settings(env_file=None)
    assert (s.max_concurrent_agents, s.poll_interval_ms) == (2, 100)
    assert s.zone.key == "Asia/Kolkata"
    assert s.log_level == "debug"
    assert s.layout.store == tmp_path / "home" / "store"
    assert s.anthropic_base_url == "http://127.0.0.1:9999"
    assert s.anthropic_api_key is not None
    assert s.anthropic_api_key.get_secret_value() == "sk-ant-test"
    assert "sk-ant-test" not in repr(s)


def test_allowed_jids_alias(env: pytest.MonkeyPatch) -> None:
    env.setenv("ALLOWED_JIDS", "xmpp:alice@example.org, xmpp:bob@example.org")
    s = load_settings(env_file=None)
    assert s.allowed_senders == ["xmpp:alice@example.org", "xmpp:bob@example.org"]


def test_comma_lists(env: pytest.MonkeyPatch) -> None:
    env.setenv("ALLOWED_SENDERS", " tg:1 ,, xmpp:alice@example.org,mx:@a:example.org,term:local, ")
    env.setenv("TELEGRAM_ALLOWED_CHAT_IDS", "-1001,-1002")
    env.setenv("XMPP_ROOMS", "team@conference.example.org")
    s = load_settings(env_file=None)
    assert s.allowed_senders == [
        "tg:1",
        "xmpp:alice@example.org",
        "mx:@a:example.org",
        "term:local",
    ]
    assert s.telegram_allowed_chat_ids == ["-1001", "-1002"]
    assert s.xmpp_rooms == ["team@conference.example.org"]


def test_env_file_is_read(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    dotenv = tmp_path / "custom.env"
    dotenv.write_text("ASSISTANT_NAME=Zed\nMAX_CONCURRENT_AGENTS=3\n")
    s = load_settings(env_file=dotenv)
    assert (s.trigger, s.max_concurrent_agents) == ("@Zed", 3)
    env.setenv("MAX_CONCURRENT_AGENTS", "4")  # the environment wins over the file
    assert load_settings(env_file=dotenv).max_concurrent_agents == 4


def test_env_file_none_ignores_dot_env(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("MAX_CONCURRENT_AGENTS=abc\n")
    assert load_settings(env_file=None).max_concurrent_agents == 5
    with pytest.raises(ConfigError, match="MAX_CONCURRENT_AGENTS"):
        load_settings()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("MAX_CONCURRENT_AGENTS", "abc"),
        ("MAX_CONCURRENT_AGENTS", "0"),
        ("POLL_INTERVAL_MS", "1"),
        ("TZ", "Mars/Base"),
        ("ALLOWED_SENDERS", "bob"),
        ("ALLOWED_SENDERS", "tg:1,bob"),
        ("LOG_LEVEL", "loud"),
        ("XMPP_TLS", "maybe"),
        ("ANTHROPIC_BASE_URL", "ftp://example.org"),
        ("ASSISTANT_NAME", ""),
        ("TELEGRAM_ALLOWED_CHAT_IDS", "abc"),
        ("TELEGRAM_ALLOWED_CHAT_IDS", "-1001,tg:@chan"),
        ("MATRIX_USER_ID", "andy"),
        ("MATRIX_USER_ID", "@andy"),
        ("MATRIX_HOMESERVER", "matrix.example.org"),
    ],
)
def test_bad_value_is_one_line_naming_the_setting(
    env: pytest.MonkeyPatch, name: str, value: str
) -> None:
    env.setenv(name, value)
    with pytest.raises(ConfigError) as info:
        load_settings(env_file=None)
    line = str(info.value)
    assert "\n" not in line
    assert line.startswith(f"setting {name}: ")
    assert len(line) < 300


def test_bad_value_messages_say_what_is_wrong(env: pytest.MonkeyPatch) -> None:
    env.setenv("TZ", "Mars/Base")
    with pytest.raises(ConfigError, match=r"unknown timezone 'Mars/Base'.*IANA"):
        load_settings(env_file=None)
    env.delenv("TZ")
    env.setenv("ALLOWED_SENDERS", "tg:1,bob")
    with pytest.raises(ConfigError, match="'bob' is not a sender id"):
        load_settings(env_file=None)


def test_alias_error_names_a_setting(env: pytest.MonkeyPatch) -> None:
    env.setenv("ALLOWED_JIDS", "bob")
    with pytest.raises(ConfigError, match=r"^setting ALLOWED_(SENDERS|JIDS): 'bob'"):
        load_settings(env_file=None)


def test_tz_leading_colon_accepted(env: pytest.MonkeyPatch) -> None:
    env.setenv("TZ", ":Europe/Berlin")
    assert load_settings(env_file=None).zone.key == "Europe/Berlin"


@pytest.mark.parametrize("tz", [None, ":/etc/localtime", "/etc/localtime", ":"])
def test_tz_unset_or_localtime_is_the_host_zone(env: pytest.MonkeyPatch, tz: str | None) -> None:
    """The setting names the zone whose rules /etc/localtime holds (the same tzdata file),
    so a task's cron runs at the host's local hours; no /etc/localtime means UTC."""
    if tz is not None:
        env.setenv("TZ", tz)
    zone = load_settings(env_file=None).tz
    localtime = Path("/etc/localtime")
    if not localtime.exists():
        assert zone == "UTC"
        return
    assert zone and not zone.startswith((":", "/"))
    files = [Path(d, zone) for d in zoneinfo.TZPATH if Path(d, zone).is_file()]
    assert files, f"{zone} is not a tzdata file"
    assert files[0].read_bytes() == localtime.read_bytes()


def test_require_credential(env: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match=r"^setting ANTHROPIC_API_KEY"):
        require_credential(load_settings(env_file=None))
    env.setenv("ANTHROPIC_API_KEY", "")
    with pytest.raises(ConfigError):
        require_credential(load_settings(env_file=None))
    env.setenv("ANTHROPIC_API_KEY", "sk-ant-x")
    require_credential(load_settings(env_file=None))


def test_overrides(env: pytest.MonkeyPatch) -> None:
    assert load_settings(env_file=None, MAX_CONCURRENT_AGENTS=7).max_concurrent_agents == 7


# through the real command line


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("MAX_CONCURRENT_AGENTS", "abc"),
        ("TZ", "Mars/Base"),
        ("ALLOWED_SENDERS", "bob"),
        ("LOG_LEVEL", "loud"),
    ],
)
def test_cli_bad_setting_exits_2_with_one_line(tmp_path: Path, name: str, value: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "nanoclaw.cli.main", "groups", "list"],
        env=clean_environ(tmp_path, **{name: value}),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert name in lines[0]
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""
    assert not (tmp_path / "store").exists()  # nothing was started


def test_cli_bad_setting_in_dot_env(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("LOG_LEVEL=loud\n")
    proc = subprocess.run(
        [sys.executable, "-m", "nanoclaw.cli.main", "groups", "list"],
        env=clean_environ(tmp_path),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "LOG_LEVEL" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_env_example_documents_every_setting() -> None:
    from pathlib import Path

    from nanoclaw.config import Settings

    doc = (Path(__file__).resolve().parents[1] / ".env.example").read_text()
    missing = [
        (f.alias or name.upper())
        for name, f in Settings.model_fields.items()
        if (f.alias or name.upper()) not in doc
    ]
    assert missing == []


def test_telegram_chat_ids_take_the_prefix(env: pytest.MonkeyPatch) -> None:
    env.setenv("TELEGRAM_ALLOWED_CHAT_IDS", "tg:-1001, 42")
    assert load_settings(env_file=None).telegram_allowed_chat_ids == ["tg:-1001", "42"]


def test_unknown_keys_are_named_with_a_guess() -> None:
    keys = ["TELEGRAM_TOKEN", "ALLOWED_JIDS", "telegram_bot_token", "ANTHROPIC_API_KEY", "ZZZ"]
    assert unknown_keys(keys, Path("/x/.env")) == [
        "/x/.env: unknown setting TELEGRAM_TOKEN is ignored (did you mean TELEGRAM_BOT_TOKEN?)",
        "/x/.env: unknown setting ZZZ is ignored",
    ]


@pytest.mark.parametrize(
    ("values", "warning"),
    [
        ({"XMPP_JID": "a@b.org"}, "XMPP_JID is set but XMPP_PASSWORD is not: XMPP stays off"),
        ({"XMPP_PASSWORD": "pw"}, "XMPP_PASSWORD is set but XMPP_JID is not"),
        ({"XMPP_ROOMS": "r@muc.b.org"}, "XMPP_ROOMS is set but XMPP_JID is not"),
        ({"MATRIX_USER_ID": "@a:b.org"}, "MATRIX_USER_ID is set but MATRIX_HOMESERVER is not"),
        ({"MATRIX_HOMESERVER": "https://b.org"}, "MATRIX_HOMESERVER is set but MATRIX_USER_ID"),
        (
            {"MATRIX_HOMESERVER": "https://b.org", "MATRIX_USER_ID": "@a:b.org"},
            "Matrix has neither MATRIX_PASSWORD nor MATRIX_ACCESS_TOKEN",
        ),
        ({"TELEGRAM_ALLOWED_CHAT_IDS": "-100"}, "but TELEGRAM_BOT_TOKEN is not"),
        ({"XMPP_JID": "a@b.org", "XMPP_PASSWORD": "pw", "TELEGRAM_BOT_TOKEN": "1:x"}, None),
    ],
)
def test_half_configured_channels(
    env: pytest.MonkeyPatch, values: dict[str, str], warning: str | None
) -> None:
    warnings = half_configured(load_settings(env_file=None, **values))
    if warning is None:
        assert warnings == []
    else:
        assert len(warnings) == 1 and warning in warnings[0]


def run_cli(cwd: Path, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nanoclaw.cli.main", *args],
        env=clean_environ(cwd, **extra),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_cli_warns_once_per_line_about_typos_and_a_new_home(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("TELEGRAM_TOKEN=123:abc\nXMPP_JID=andy@example.org\n")
    home = tmp_path / "new-home"
    proc = run_cli(tmp_path, "chats", NANOCLAW_HOME=str(home))
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.splitlines() == [
        "nanoclaw: warning: .env: unknown setting TELEGRAM_TOKEN is ignored "
        "(did you mean TELEGRAM_BOT_TOKEN?)",
        "nanoclaw: warning: XMPP_JID is set but XMPP_PASSWORD is not: XMPP stays off",
        f"nanoclaw: warning: NANOCLAW_HOME {home} has no store or groups yet: "
        "creating a new one there",
    ]
    again = run_cli(tmp_path, "chats", NANOCLAW_HOME=str(home))  # the store exists now
    assert "NANOCLAW_HOME" not in again.stderr
    assert "123:abc" not in proc.stderr + again.stderr


def test_cli_named_env_file_must_exist(tmp_path: Path) -> None:
    proc = run_cli(tmp_path, "--env-file", "prod.env", "chats")
    assert proc.returncode == 2
    assert proc.stderr == "nanoclaw: --env-file prod.env: no such file\n"
    assert not (tmp_path / "store").exists()
    (tmp_path / "prod.env").write_text("LOG_LEVEL=loud\n")  # and it is the file read
    proc = run_cli(tmp_path, "--env-file", "prod.env", "chats")
    assert proc.returncode == 2 and "LOG_LEVEL" in proc.stderr


def test_nixpkgs_defaults_to_the_flake_pin_else_the_lookup_path(
    env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    env.delenv("NANOCLAW_FLAKE_NIXPKGS", raising=False)
    assert load_settings(env_file=None).nanoclaw_nixpkgs == "<nixpkgs>"
    env.setenv("NANOCLAW_FLAKE_NIXPKGS", "/nix/store/0123456789abcdfghijklmnpqrsvwxyz-source")
    pinned = load_settings(env_file=None).nanoclaw_nixpkgs
    assert pinned == "/nix/store/0123456789abcdfghijklmnpqrsvwxyz-source"
    # the pin is only a default: .env (and the environment) choose another nixpkgs
    (tmp_path / ".env").write_text("NANOCLAW_NIXPKGS=/srv/nixpkgs/\n")
    assert load_settings(env_file=tmp_path / ".env").nanoclaw_nixpkgs == "/srv/nixpkgs"
    env.setenv("NANOCLAW_NIXPKGS", "<nixos-unstable>")
    assert load_settings(env_file=tmp_path / ".env").nanoclaw_nixpkgs == "<nixos-unstable>"
    env.setenv("NANOCLAW_NIXPKGS", "~/nixpkgs")
    assert load_settings(env_file=None).nanoclaw_nixpkgs == str(Path.home() / "nixpkgs")


@pytest.mark.parametrize("value", ["nixpkgs", "./nixpkgs", "<nix pkgs>", "<>", "<a>b"])
def test_nixpkgs_must_be_absolute_or_a_lookup_path(env: pytest.MonkeyPatch, value: str) -> None:
    env.setenv("NANOCLAW_NIXPKGS", value)
    with pytest.raises(ConfigError) as info:
        load_settings(env_file=None)
    assert str(info.value).startswith("setting NANOCLAW_NIXPKGS: ")
    assert "use an absolute path to a nixpkgs" in str(info.value)
