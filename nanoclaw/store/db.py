"""The SQLite connection under the store: WAL mode, migrations, one write lock, small helpers.

One connection per process; every write goes through one lock so a transaction opened by
one task never swallows another task's statements. Several processes may share the file.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from nanoclaw.errors import StoreError
from nanoclaw.store import schema

D = TypeVar("D", bound="Database")


def now_ms() -> int:
    return int(time.time() * 1000)


class Database:
    """Async access to the database file; open with `await Cls.open(path)`."""

    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db
        self._lock = asyncio.Lock()
        self._writer: asyncio.Task[Any] | None = None  # the task whose transaction is open

    @classmethod
    async def open(cls: type[D], path: Path) -> D:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            db = await aiosqlite.connect(path, isolation_level=None)
            await db.execute("PRAGMA journal_mode=WAL")
            await db.execute("PRAGMA synchronous=NORMAL")
            await db.execute("PRAGMA busy_timeout=10000")
            await db.execute("PRAGMA foreign_keys=ON")
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open store {path}: {exc}") from exc
        store = cls(db)
        try:
            await store._migrate()
        except BaseException:
            await db.close()
            raise
        return store

    async def close(self) -> None:
        await self._db.close()

    async def _migrate(self) -> None:
        async with self.transaction():
            row = await self._one("PRAGMA user_version")
            version = int(row[0]) if row else 0
            if version > len(schema.MIGRATIONS):
                raise StoreError(f"store schema v{version} is newer than this nanoclaw")
            for index in range(version, len(schema.MIGRATIONS)):
                for statement in schema.statements(schema.MIGRATIONS[index]):
                    await self._db.execute(statement)
                await self._db.execute(f"PRAGMA user_version={index + 1}")

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        async with self._lock:
            await self._db.execute("BEGIN IMMEDIATE")
            self._writer = asyncio.current_task()
            try:
                yield
            except BaseException:
                await self._db.execute("ROLLBACK")
                raise
            finally:
                self._writer = None
            await self._db.execute("COMMIT")

    async def _settled(self) -> None:
        """A read waits for another task's open transaction to end: every task shares one
        connection, which would show it the transaction half done (a sync of CLAUDE.md's
        tasks read between its DELETE and its INSERT: no problems at all)."""
        if self._writer is not None and self._writer is not asyncio.current_task():
            async with self._lock:
                pass

    # One trip to the connection's thread per read (a cursor's execute, fetch and close
    # would be three): the idle daemon's polls are mostly these.
    async def _one(self, sql: str, args: Iterable[Any] = ()) -> Any:
        await self._settled()
        rows = await self._db.execute_fetchall(sql, tuple(args))
        return next(iter(rows), None)

    async def _all(self, sql: str, args: Iterable[Any] = ()) -> list[Any]:
        await self._settled()
        return list(await self._db.execute_fetchall(sql, tuple(args)))

    async def _write(self, sql: str, args: Iterable[Any] = ()) -> int:
        async with self._lock:
            cur = await self._db.execute(sql, tuple(args))
            return cur.rowcount
