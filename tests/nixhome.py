"""What the Nix environment tests share: the stub nixpkgs (tests/nixpkgs, built offline from
the host's static busybox) and the settings that build from it without asking a cache.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import pytest

STUB = Path(__file__).resolve().parent / "nixpkgs"
# Nothing is substituted from a binary cache: the stub builds locally, and asking
# cache.nixos.org from a machine without network costs seconds of retries per build.
OFFLINE = "substituters ="


def need_nix() -> None:
    if shutil.which("nix-build") is None or not Path("/bin/busybox").exists():
        pytest.skip("needs nix-bin and busybox-static (./install.sh --test installs them)")


def nix_settings(**extra: str) -> dict[str, str]:
    """Settings for a `nanoclaw` subprocess that builds from the stub."""
    return {"NANOCLAW_NIXPKGS": str(STUB), "NIX_CONFIG": OFFLINE, **extra}


def nix_environ(**extra: str) -> dict[str, str]:
    """The environment `Environments` runs Nix with, in-process."""
    return {**os.environ, "NIX_CONFIG": OFFLINE, **extra}


def fresh_folder(prefix: str) -> str:
    """A group folder never used before: its env derivation is new to the Nix store, so Nix
    really builds it (and says so) instead of finding it from an earlier session."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"
