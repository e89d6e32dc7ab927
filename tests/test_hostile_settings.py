"""Hostile settings (SPEC section 4): any value from the environment or from Python loads,
or is one line naming the setting.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from zoneinfo import available_timezones

import pytest
from hostile import JSON, one_of_values
from hypothesis import assume, given
from hypothesis import strategies as st
from pydantic import AliasChoices

from nanoclaw.config import Settings, load_settings
from nanoclaw.errors import ConfigError


def setting_names() -> list[str]:
    names = []
    for info in Settings.model_fields.values():
        if isinstance(info.validation_alias, AliasChoices):
            names += [c for c in info.validation_alias.choices if isinstance(c, str)]
        elif isinstance(info.alias, str):
            names.append(info.alias)
    return sorted(names)


NAMES_OF_SETTINGS = setting_names()
SENDER_ALIASES = ("ALLOWED_SENDERS", "ALLOWED_JIDS")
# Names under the zone database that are directories, and names too long for a path: both are
# test_tz_naming_a_directory_or_too_long's.
ZONE_DIRS = {z.rsplit("/", i)[0] for z in available_timezones() for i in (1, 2) if "/" in z}


def known_tz_bug(name: str, value: object) -> bool:
    if name != "TZ" or not isinstance(value, str):
        return False
    zone = value.lstrip(":")
    return zone in ZONE_DIRS or any(len(part.encode()) > 200 for part in zone.split("/"))


def loads_or_names_the_setting(name: str, load: Callable[[], Settings]) -> None:
    try:
        load()
    except ConfigError as exc:
        line = str(exc)
        assert "\n" not in line and "\r" not in line, line
        names = SENDER_ALIASES if name in SENDER_ALIASES else (name,)
        assert line.startswith(tuple(f"setting {n}: " for n in names)), (name, line)


ENV_VALUES = st.one_of(
    st.text(st.characters(exclude_characters="\x00", exclude_categories=["Cs"]), max_size=60),
    one_of_values(
        "",
        " ",
        "0",
        "-1",
        "1e999",
        "inf",
        "-inf",
        "nan",
        "true",
        "[1, 2]",
        '{"a": 1}',
        "9" * 5000,
        "tg:1,,bob",
        "xmpp:a@b/c",
        ":",
        "http://",
        "https://x y",
        "\u202e",
        "Europe/Berlin",
        ":/etc/localtime",
        "x" * 10_000,
    ),
)


@given(st.sampled_from(NAMES_OF_SETTINGS), ENV_VALUES)
def test_any_environment_value_loads_or_is_one_line(name: str, value: str) -> None:
    assume(not known_tz_bug(name, value))
    with pytest.MonkeyPatch.context() as env:
        for other in NAMES_OF_SETTINGS:
            env.delenv(other, raising=False)
        env.setenv(name, value)
        loads_or_names_the_setting(name, lambda: load_settings(None))


@given(
    st.sampled_from(NAMES_OF_SETTINGS),
    st.one_of(
        JSON,
        st.floats(),
        st.binary(max_size=8),
        st.lists(st.integers(), max_size=3),
        st.just(10**400),
        st.just(object()),
    ),
)
def test_any_python_value_loads_or_is_one_line(name: str, value: object) -> None:
    assume(not known_tz_bug(name, value))
    with pytest.MonkeyPatch.context() as env:
        for other in NAMES_OF_SETTINGS:
            env.delenv(other, raising=False)
        loads_or_names_the_setting(name, lambda: load_settings(None, **{name: value}))


@pytest.mark.parametrize("value", ["America", "Etc", ":America", "a" * 300])
def test_tz_naming_a_directory_or_too_long(value: str) -> None:
    with pytest.raises(ConfigError, match=r"^setting TZ: unknown timezone"):
        load_settings(None, TZ=value)


def test_dot_env_that_is_not_utf8(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_bytes(b"ASSISTANT_NAME=Andy\nTRIGGER_WORD=\xff\xfe\n")
    with pytest.raises(ConfigError, match=r"\.env"):
        load_settings(dotenv)


@pytest.mark.parametrize("name", ["AGENT_TIMEOUT_S", "AGENT_IDLE_TIMEOUT_S"])
@pytest.mark.parametrize("value", ["inf", "1e999"])
def test_timeouts_must_be_finite(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=f"^setting {name}: "):
        load_settings(None, **{name: value})
