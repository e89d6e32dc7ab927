"""What every command does to NANOCLAW_HOME before its own work: open the store, make
sure the main group exists, take the daemon lock. Kept apart from `app` so that the
store-only commands (groups, chats, tasks, usage, pair) never import the daemon's pieces.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO

from nanoclaw.config import Settings
from nanoclaw.models import MAIN, Group
from nanoclaw.store.messages import Store


def try_lock(path: Path) -> IO[str] | None:
    """Take the daemon lock without waiting; None when another process holds it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fh = open(path, "a+")  # noqa: SIM115 (held for the process lifetime)
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.close()
        return None
    fh.seek(0)
    fh.truncate()
    fh.write(str(os.getpid()))
    fh.flush()
    return fh


async def ensure_main(store: Store) -> None:
    """The admin group exists from the first start, bound to the terminal chat."""
    if await store.group(MAIN) is None:
        await store.save_group(
            Group(folder=MAIN, name="main", chats=("term:main",), requires_trigger=False)
        )


@contextlib.asynccontextmanager
async def open_store(settings: Settings) -> AsyncIterator[Store]:
    store = await Store.open(settings.layout.db)
    try:
        yield store
    finally:
        await store.close()
