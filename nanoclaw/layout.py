"""Where everything lives under NANOCLAW_HOME (SPEC section 2), in one place.

groups/<folder>/      the group's workspace and CLAUDE.md; groups/global/ shared
skills/               mounted read-only into every sandbox
store/                nanoclaw.db, daemon.lock, logs/, ipc/<folder>/, files/, received/,
                      sandbox/etc/, sockets/<folder>/ (served sockets, never mounted)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Layout:
    home: Path

    @property
    def groups(self) -> Path:
        return self.home / "groups"

    @property
    def skills(self) -> Path:
        return self.home / "skills"

    @property
    def store(self) -> Path:
        return self.home / "store"

    @property
    def db(self) -> Path:
        return self.store / "nanoclaw.db"

    @property
    def lock(self) -> Path:
        return self.store / "daemon.lock"

    @property
    def ipc(self) -> Path:
        return self.store / "ipc"

    @property
    def sockets(self) -> Path:
        """The sockets served to each group's sandbox (sockets/<folder>/), bound into /ipc."""
        return self.store / "sockets"

    @property
    def logs(self) -> Path:
        return self.store / "logs"

    @property
    def files(self) -> Path:
        """Copies of files the agent sent, kept until the router has delivered them."""
        return self.store / "files"

    @property
    def received(self) -> Path:
        """Files the agent sent to the terminal chat, kept for the user."""
        return self.store / "received"

    @property
    def sandbox_etc(self) -> Path:
        return self.store / "sandbox" / "etc"
