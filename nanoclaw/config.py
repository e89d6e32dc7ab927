"""Settings (SPEC section 4), read once by the CLI from the environment and `.env`.

Nothing here runs at import time: `load_settings()` builds a `Settings` and turns
pydantic's errors into one `ConfigError` line that names the setting and the fix;
`startup_warnings()` says what is legal but likely a mistake (a typo in .env, half a channel).
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, Literal, TextIO
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from nanoclaw.display import printable
from nanoclaw.envfile import env_keys
from nanoclaw.errors import ConfigError
from nanoclaw.layout import Layout
from nanoclaw.settingvalues import (
    MATRIX_USER_RE,
    SENDER_RE,
    TELEGRAM_CHAT_RE,
    default_nixpkgs,
    host_tz,
    http_url,
    split_csv,
    split_listen,
)

DEFAULT_MODEL = "claude-sonnet-4-6"

FIXES = {
    "ALLOWED_SENDERS": "use comma-separated ids like tg:123,xmpp:alice@example.org",
    "XMPP_SERVER": "use host:port",
    "TZ": "use an IANA zone name such as Europe/Berlin",
    "XMPP_TLS": "use required, direct or off",
    "LOG_LEVEL": "use debug, info, warning or error",
    "GROUP_DAILY_REQUESTS": "use a whole number of requests per group and day, 0 for no limit",
    "GROUP_DAILY_TOKENS": "use a whole number of tokens per group and day, 0 for no limit",
    "TELEGRAM_ALLOWED_CHAT_IDS": "use numeric chat ids like -1001234567890, comma-separated",
    "MATRIX_USER_ID": "use the bot's full id, like @andy:example.org",
    "MATRIX_HOMESERVER": "use the homeserver's URL, like https://matrix.example.org",
    "TAPE_RETENTION_DAYS": "use a whole number of days, 1 or more",
    "NANOCLAW_NIXPKGS": "use an absolute path to a nixpkgs (checkout or store path) or <nixpkgs>",
    "METRICS_LISTEN": "use host:port like 127.0.0.1:9464, or off",
    "GROUP_DAILY_COST": "use an amount of money per group and day, like 2.50",
    "LLM_PROVIDER": "use anthropic, openai or openai-compatible",
    "LLM_BASE_URL": "use the endpoint's URL, like https://api.openai.com/v1",
    "MEDIA_MAX_MB": "use a size in megabytes per file, like 20",
    "TRANSCRIBE_URL": "use the full URL of an /audio/transcriptions endpoint",
}


# A setting that does nothing without its partner: (set, needs, what happens without it).
PARTNERS = (
    ("XMPP_JID", "XMPP_PASSWORD", "XMPP stays off"),
    ("XMPP_PASSWORD", "XMPP_JID", "XMPP stays off"),
    ("XMPP_ROOMS", "XMPP_JID", "no room is joined"),
    ("MATRIX_HOMESERVER", "MATRIX_USER_ID", "Matrix stays off"),
    ("MATRIX_USER_ID", "MATRIX_HOMESERVER", "Matrix stays off"),
    ("TELEGRAM_ALLOWED_CHAT_IDS", "TELEGRAM_BOT_TOKEN", "Telegram stays off"),
)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", populate_by_name=True
    )

    assistant_name: str = Field("Andy", min_length=1, max_length=64, alias="ASSISTANT_NAME")
    trigger_word: str = Field("", max_length=64, alias="TRIGGER_WORD")
    allowed_senders: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        validation_alias=AliasChoices("ALLOWED_SENDERS", "ALLOWED_JIDS"),
    )
    nanoclaw_home: Path = Field(default_factory=Path.cwd, alias="NANOCLAW_HOME")
    anthropic_api_key: SecretStr | None = Field(None, alias="ANTHROPIC_API_KEY")
    anthropic_base_url: str = Field("https://api.anthropic.com", alias="ANTHROPIC_BASE_URL")
    nanoclaw_model: str = Field(DEFAULT_MODEL, min_length=1, alias="NANOCLAW_MODEL")
    max_concurrent_agents: int = Field(5, ge=1, le=256, alias="MAX_CONCURRENT_AGENTS")
    poll_interval_ms: int = Field(250, ge=10, le=60_000, alias="POLL_INTERVAL_MS")
    agent_idle_timeout_s: float = Field(
        600, gt=0, allow_inf_nan=False, alias="AGENT_IDLE_TIMEOUT_S"
    )
    agent_timeout_s: float = Field(1800, gt=0, allow_inf_nan=False, alias="AGENT_TIMEOUT_S")
    # Per group and calendar day in TZ; 0 is unlimited. Tokens: input + cache writes + output.
    group_daily_requests: int = Field(500, ge=0, alias="GROUP_DAILY_REQUESTS")
    group_daily_tokens: int = Field(2_000_000, ge=0, alias="GROUP_DAILY_TOKENS")
    # Money per group and calendar day in TZ, in the price table's currency (USD); None: none.
    group_daily_cost: float | None = Field(
        None, ge=0, allow_inf_nan=False, alias="GROUP_DAILY_COST"
    )
    llm_provider: Literal["anthropic", "openai", "openai-compatible"] = Field(
        "anthropic", alias="LLM_PROVIDER"
    )
    llm_base_url: str | None = Field(None, alias="LLM_BASE_URL")
    openai_api_key: SecretStr | None = Field(None, alias="OPENAI_API_KEY")
    nanoclaw_fallback_models: Annotated[list[str], NoDecode] = Field(
        default_factory=list, alias="NANOCLAW_FALLBACK_MODELS"
    )
    nanoclaw_prices: Path | None = Field(None, alias="NANOCLAW_PRICES")  # price table override
    media_max_mb: float = Field(20, gt=0, le=2048, allow_inf_nan=False, alias="MEDIA_MAX_MB")
    transcribe_url: str | None = Field(None, alias="TRANSCRIBE_URL")
    transcribe_api_key: SecretStr | None = Field(None, alias="TRANSCRIBE_API_KEY")
    tape_retention_days: int = Field(30, ge=1, le=36_500, alias="TAPE_RETENTION_DAYS")
    nanoclaw_nixpkgs: str = Field(default_factory=default_nixpkgs, alias="NANOCLAW_NIXPKGS")
    tz: str = Field(default_factory=host_tz, alias="TZ")
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", alias="LOG_LEVEL")
    metrics_listen: str | None = Field(None, alias="METRICS_LISTEN")  # host:port, None: off

    telegram_bot_token: SecretStr | None = Field(None, alias="TELEGRAM_BOT_TOKEN")
    telegram_api_url: str = Field("https://api.telegram.org", alias="TELEGRAM_API_URL")
    telegram_allowed_chat_ids: Annotated[list[str], NoDecode] = Field(
        default_factory=list, alias="TELEGRAM_ALLOWED_CHAT_IDS"
    )
    telegram_webhook_url: str | None = Field(None, alias="TELEGRAM_WEBHOOK_URL")
    telegram_webhook_listen: str = Field(
        "127.0.0.1:8443", pattern=r"^[^\s:]*:\d{1,5}$", alias="TELEGRAM_WEBHOOK_LISTEN"
    )
    xmpp_jid: str | None = Field(None, alias="XMPP_JID")
    xmpp_password: SecretStr | None = Field(None, alias="XMPP_PASSWORD")
    xmpp_server: str | None = Field(None, pattern=r"^[^\s:/]+:\d{1,5}$", alias="XMPP_SERVER")
    xmpp_rooms: Annotated[list[str], NoDecode] = Field(default_factory=list, alias="XMPP_ROOMS")
    xmpp_tls: Literal["required", "direct", "off"] = Field("required", alias="XMPP_TLS")
    xmpp_ca_file: Path | None = Field(None, alias="XMPP_CA_FILE")
    matrix_homeserver: str | None = Field(None, alias="MATRIX_HOMESERVER")
    matrix_user_id: str | None = Field(None, alias="MATRIX_USER_ID")
    matrix_password: SecretStr | None = Field(None, alias="MATRIX_PASSWORD")
    matrix_access_token: SecretStr | None = Field(None, alias="MATRIX_ACCESS_TOKEN")

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    @field_validator(
        "allowed_senders",
        "telegram_allowed_chat_ids",
        "xmpp_rooms",
        "nanoclaw_fallback_models",
        mode="before",
    )
    @classmethod
    def _csv(cls, value: Any) -> Any:
        return split_csv(value)

    @field_validator("allowed_senders")
    @classmethod
    def _senders(cls, value: list[str]) -> list[str]:
        bad = [v for v in value if not SENDER_RE.match(v)]
        if bad:
            raise ValueError(f"{bad[0]!r} is not a sender id")
        nicks = [v for v in value if v.startswith("xmpp:") and "/" in v]
        if nicks:
            raise ValueError(
                f"{nicks[0]!r}: XMPP senders are bare JIDs (a room nick is not trusted)"
            )
        return value

    @field_validator("telegram_allowed_chat_ids")
    @classmethod
    def _chat_ids(cls, value: list[str]) -> list[str]:
        bad = [v for v in value if not TELEGRAM_CHAT_RE.match(v)]
        if bad:
            raise ValueError(f"{bad[0][:64]!r} is not a Telegram chat id")
        return value

    @field_validator("matrix_user_id")
    @classmethod
    def _matrix_user(cls, value: str | None) -> str | None:
        if value and not MATRIX_USER_RE.match(value):
            raise ValueError(f"{value[:64]!r} has no server part")
        return value

    @field_validator("matrix_homeserver")
    @classmethod
    def _homeserver(cls, value: str | None) -> str | None:
        return http_url(value) if value else value

    @field_validator("tz")
    @classmethod
    def _zone(cls, value: str) -> str:
        value = value.lstrip(":")
        if not value or value == "/etc/localtime":
            value = host_tz()
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError, OSError) as exc:  # OSError: a tzdata dir
            raise ValueError(f"unknown timezone {value[:64]!r}") from exc
        return value

    @field_validator("metrics_listen")
    @classmethod
    def _listen(cls, value: str | None) -> str | None:
        if value is None or value.strip().lower() in ("", "off"):
            return None
        host, port = split_listen(value.strip())
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    @field_validator("nanoclaw_nixpkgs")
    @classmethod
    def _nixpkgs(cls, value: str) -> str:
        """A lookup path (<nixpkgs>, resolved through NIX_PATH) or an absolute path; whether
        it exists is for `doctor` and the build to say (Nix may not be installed yet)."""
        value = value.strip()
        if re.match(r"^<[A-Za-z0-9._+-]+(/[A-Za-z0-9._+-]+)*>$", value):
            return value
        path = os.path.expanduser(value)
        if not os.path.isabs(path) or "\n" in path:
            raise ValueError(f"{value[:64]!r} is neither an absolute path nor <nixpkgs>")
        return os.path.normpath(path)

    @field_validator("anthropic_base_url", "telegram_api_url")
    @classmethod
    def _url(cls, value: str) -> str:
        return http_url(value)

    @field_validator("llm_base_url", "transcribe_url")
    @classmethod
    def _optional_url(cls, value: str | None) -> str | None:
        return http_url(value) if value and value.strip() else None

    @property
    def trigger(self) -> str:
        return self.trigger_word or f"@{self.assistant_name}"

    @property
    def layout(self) -> Layout:
        return Layout(self.nanoclaw_home)

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.tz)


def _alias(field: str) -> str:
    info = Settings.model_fields.get(field)
    if info is not None and isinstance(info.alias, str):
        return info.alias
    return field.upper()


def describe(exc: ValidationError) -> str:
    """One line naming the first bad setting, what is wrong and how to fix it."""
    err = exc.errors()[0]
    loc = err["loc"][0] if err["loc"] else "?"
    name = _alias(str(loc)) if str(loc).islower() else str(loc)
    msg = str(err["msg"]).removeprefix("Value error, ")
    fix = FIXES.get(name, "fix it in the environment or .env (see .env.example)")
    return f"setting {name}: {msg}; {fix}"


def load_settings(env_file: Path | None = Path(".env"), **overrides: Any) -> Settings:
    """Build the settings once; raise ConfigError with a one-line reason."""
    try:
        return Settings(_env_file=env_file, **overrides)  # type: ignore[call-arg]
    except ValidationError as exc:
        raise ConfigError(describe(exc)) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{env_file}: not UTF-8 (byte {exc.start}); save it as UTF-8") from exc
    except OSError as exc:
        raise ConfigError(f"{env_file}: cannot be read: {exc.strerror}") from exc


def setting_names() -> frozenset[str]:
    """Every name Settings reads, aliases included (ALLOWED_JIDS)."""
    names: set[str] = set()
    for info in Settings.model_fields.values():
        if isinstance(info.alias, str):
            names.add(info.alias)
        choices = getattr(info.validation_alias, "choices", ())
        names.update(c for c in choices if isinstance(c, str))
    return frozenset(names)


def unknown_keys(keys: Iterable[str], env_file: Path) -> list[str]:
    """Pure: a warning per key Settings does not read (a typo is otherwise silently ignored)."""
    known = setting_names()
    out = []
    for key in keys:
        if key.upper() in known:
            continue
        close = difflib.get_close_matches(key.upper(), sorted(known), n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]}?)" if close else ""
        out.append(f"{env_file}: unknown setting {key[:64]} is ignored{hint}")
    return out


def half_configured(settings: Settings) -> list[str]:
    """Pure: a warning per channel that is only partly configured, so stays off or fails."""
    value = {_alias(name): getattr(settings, name) for name in Settings.model_fields}
    out = [
        f"{have} is set but {need} is not: {effect}"
        for have, need, effect in PARTNERS
        if value[have] and not value[need]
    ]
    login = value["MATRIX_PASSWORD"] or value["MATRIX_ACCESS_TOKEN"]
    if value["MATRIX_HOMESERVER"] and value["MATRIX_USER_ID"] and not login:
        out.append("Matrix has neither MATRIX_PASSWORD nor MATRIX_ACCESS_TOKEN: its login fails")
    return out


def is_new_home(home: Path) -> bool:
    """No store and no groups yet: this run starts a new installation there."""
    return not (home / "store" / "nanoclaw.db").exists() and not (home / "groups").is_dir()


def startup_warnings(settings: Settings, env_file: Path | None) -> list[str]:
    out = unknown_keys(env_keys(env_file), env_file) if env_file is not None else []
    out += half_configured(settings)
    if is_new_home(settings.nanoclaw_home):
        home = settings.nanoclaw_home
        out.append(f"NANOCLAW_HOME {home} has no store or groups yet: creating a new one there")
    return out


def startup_settings(env_arg: Path | None, stream: TextIO) -> Settings:
    """The command line's settings. An --env-file that was named must exist (a typo would
    otherwise run on defaults); without one, ./.env is read if present. Each warning is one
    line on `stream`, once."""
    if env_arg is not None and not env_arg.is_file():
        raise ConfigError(f"--env-file {env_arg}: no such file")
    env_file = env_arg or (Path(".env") if Path(".env").is_file() else None)
    settings = load_settings(env_file)
    for line in startup_warnings(settings, env_file):
        print(printable(f"nanoclaw: warning: {line}"), file=stream)
    return settings


def require_credential(settings: Settings) -> None:
    """The daemon cannot reach a model without its provider's key (an OpenAI-compatible
    endpoint: its URL, the key optional): say so before starting."""
    if settings.llm_provider == "openai":
        if settings.openai_api_key is None or not settings.openai_api_key.get_secret_value():
            raise ConfigError(
                "setting OPENAI_API_KEY: missing; LLM_PROVIDER=openai needs your OpenAI key "
                "in .env (OPENAI_API_KEY=sk-...)"
            )
        return
    if settings.llm_provider == "openai-compatible":
        if not settings.llm_base_url:
            raise ConfigError(
                "setting LLM_BASE_URL: missing; LLM_PROVIDER=openai-compatible needs the "
                "endpoint's URL in .env (LLM_BASE_URL=http://host:port/v1)"
            )
        return
    if settings.anthropic_api_key is None or not settings.anthropic_api_key.get_secret_value():
        raise ConfigError(
            "setting ANTHROPIC_API_KEY: missing; put your Anthropic key in .env "
            "(ANTHROPIC_API_KEY=sk-ant-...)"
        )
