"""Pure parsers and defaults for single setting values (URLs, host:port, lists, zones).

Shared by `config.Settings` validators and the commands that check a value before writing it.
"""

from __future__ import annotations

import os
import re
from typing import Any

SENDER_RE = re.compile(r"^(tg|xmpp|mx|term):\S+$")
TELEGRAM_CHAT_RE = re.compile(r"^(tg:)?-?\d{1,20}$")
MATRIX_USER_RE = re.compile(r"^@[^:\s]+:\S+$")
OPENAI_URL = "https://api.openai.com/v1"  # the openai provider's endpoint without LLM_BASE_URL


def split_csv(value: Any) -> Any:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


def http_url(value: str) -> str:
    if not re.match(r"^https?://[^\s/]+", value):
        raise ValueError(f"{value[:64]!r} is not an http(s) URL")
    return value.rstrip("/")


def split_listen(value: str) -> tuple[str, int]:
    """Pure: `host:port` (`[::1]:9464` for IPv6) as (host, port); ValueError otherwise."""
    host, sep, port = value.rpartition(":")
    host = host.removeprefix("[").removesuffix("]") if host.startswith("[") else host
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{value[:64]!r} is not host:port")
    if re.search(r"[\s/\[\]]", host) or (":" in host and not value.startswith("[")):
        raise ValueError(f"{value[:64]!r} is not host:port")
    return host, int(port)


def host_tz() -> str:
    try:
        link = os.readlink("/etc/localtime")
    except OSError:
        return "UTC"
    marker = "zoneinfo/"
    return link.split(marker, 1)[1] if marker in link else "UTC"


def default_nixpkgs() -> str:
    """The flake's wrapper names its pinned nixpkgs in NANOCLAW_FLAKE_NIXPKGS, a default and
    not the setting itself: an environment variable would outrank NANOCLAW_NIXPKGS in .env."""
    return os.environ.get("NANOCLAW_FLAKE_NIXPKGS") or "<nixpkgs>"
