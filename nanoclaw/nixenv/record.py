"""What is known of a group's built environment, kept beside its GC root, and its cache key.

store/envs/<folder> is the `nix-build --out-link` (a GC root: `nix-collect-garbage` keeps a
live environment); store/envs/<folder>.json records it, so `cached()` and `env show` are instant.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from nanoclaw.layout import Layout
from nanoclaw.memory import write_atomic

RECORD_VERSION = 1


@dataclass(frozen=True)
class BuiltEnv:
    path: str  # the env's store path (/nix/store/...-nanoclaw-env-<folder>)
    closure: tuple[str, ...]  # every store path it needs (nix-store -qR), path included
    packages: tuple[str, ...]  # attribute names, resolved (profile + packages + bash, coreutils)
    built_ms: int  # when it was built (unix ms)
    closure_bytes: int = 0  # the closure's NAR size
    key: str = ""  # cache_key() it was built for
    nixpkgs: str = ""  # the nixpkgs identity it was built from


def envs_dir(layout: Layout) -> Path:
    return layout.store / "envs"


def root_of(layout: Layout, folder: str) -> Path:
    """The group's GC root: a symlink into /nix/store that nix-build registers."""
    return envs_dir(layout) / folder


def record_of(layout: Layout, folder: str) -> Path:
    return envs_dir(layout) / f"{folder}.json"


def cache_key(identity: str, packages: tuple[str, ...], expression: str) -> str:
    """Pure: the same nixpkgs, the same sorted names and the same build expression give the
    same environment; anything else is a rebuild (Nix itself reuses the unchanged parts)."""
    spec = {
        "v": RECORD_VERSION,
        "nixpkgs": identity,
        "packages": sorted(packages),
        "expr": hashlib.sha256(expression.encode()).hexdigest(),
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:32]


def read_record(layout: Layout, folder: str) -> BuiltEnv | None:
    """The recorded environment, whatever it was built for; None if there is none, it is
    unreadable, or its store path is gone (collected while the root was missing)."""
    try:
        data = json.loads(record_of(layout, folder).read_text(encoding="utf-8"))
        env = BuiltEnv(
            path=str(data["path"]),
            closure=tuple(str(p) for p in data["closure"]),
            packages=tuple(str(p) for p in data["packages"]),
            built_ms=int(data["built_ms"]),
            closure_bytes=int(data.get("closure_bytes", 0)),
            key=str(data.get("key", "")),
            nixpkgs=str(data.get("nixpkgs", "")),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return env if os.path.exists(env.path) else None


def is_rooted(layout: Layout, env: BuiltEnv, folder: str) -> bool:
    """The group's GC root still points at the recorded path."""
    try:
        return os.readlink(root_of(layout, folder)) == env.path
    except OSError:
        return False


def write_record(layout: Layout, folder: str, env: BuiltEnv) -> None:
    data = asdict(env)
    write_atomic(record_of(layout, folder), json.dumps(data, indent=1) + "\n")
