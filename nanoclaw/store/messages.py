"""The SQLite store: chats seen, normalised messages, registered groups and their cursors.

`Store` extends the `Ledger` (runs, IPC names, outbox), the task book, the pairing book
and the tape over one aiosqlite connection, so a component that takes a `Store` can commit
a message, a cursor and a reply alike.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from aiosqlite import Connection

from nanoclaw.errors import StoreError
from nanoclaw.models import ChatInfo, Group, InboundMessage, Message, channel_of
from nanoclaw.store.committer import GroupCommit, returned_ids, value_rows
from nanoclaw.store.db import now_ms
from nanoclaw.store.ledger import Ledger
from nanoclaw.store.pairbook import PairBook
from nanoclaw.store.tape import Tape
from nanoclaw.store.taskbook import TaskBook

MSG_COLS = (
    "id, chat_id, platform_id, sender_id, sender_name, text, ts_ms, mentions_bot, "
    "reply_to_bot, reply_to_sender, reply_to_text, media"
)
GROUP_COLS = (
    "folder, name, trigger, requires_trigger, network, allowed_senders, mounts, exports, model, "
    "domains, packages, profile, progress, provider, fallback_models, daily_requests, "
    "daily_tokens, daily_cost, vision"
)
INSERT_COLS = 11
INSERT_HEAD = (
    "INSERT INTO messages (chat_id, platform_id, sender_id, sender_name, text, ts_ms, "
    "mentions_bot, reply_to_bot, reply_to_sender, reply_to_text, media) VALUES "
)
INSERT_MESSAGE = f"{INSERT_HEAD}{value_rows(1, INSERT_COLS)} ON CONFLICT DO NOTHING RETURNING id"
# Concurrent add_message calls share one multi-row statement (its own transaction), up to
# this many rows: 2,816 bound values, far below SQLite's limit of 32,766.
GROUP_LIMIT = 256


def _values(msg: InboundMessage) -> tuple[object, ...]:
    return (
        msg.chat_id,
        msg.platform_id,
        msg.sender_id,
        msg.sender_name,
        msg.text,
        msg.ts_ms,
        int(msg.mentions_bot),
        int(msg.reply_to_bot),
        msg.reply_to_sender,
        msg.reply_to_text,
        json.dumps(list(msg.media)),
    )


def _message(row: Sequence[Any]) -> Message:
    return Message(
        id=row[0],
        chat_id=row[1],
        platform_id=row[2],
        sender_id=row[3],
        sender_name=row[4],
        text=row[5],
        ts_ms=row[6],
        mentions_bot=bool(row[7]),
        reply_to_bot=bool(row[8]),
        reply_to_sender=row[9],
        reply_to_text=row[10],
        media=_media(row[11]),
    )


def _media(value: object) -> tuple[str, ...]:
    try:
        paths = json.loads(value) if isinstance(value, str) else []
    except ValueError:
        return ()
    return tuple(p for p in paths if isinstance(p, str)) if isinstance(paths, list) else ()


class Store(Ledger, TaskBook, PairBook, Tape):
    """Everything the orchestrator, channels and CLI read and write."""

    def __init__(self, db: Connection) -> None:
        super().__init__(db)
        self._chats_seen: dict[str, int] = {}
        self._inserts = GroupCommit(self._insert_group, GROUP_LIMIT)

    async def record_chat(self, chat_id: str, name: str, is_group: bool, ts_ms: int) -> None:
        await self._write(
            "INSERT INTO chats (chat_id, channel, name, is_group, first_seen_ms, last_seen_ms) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (chat_id) DO UPDATE SET "
            "name = CASE WHEN excluded.name != '' THEN excluded.name ELSE name END, "
            "last_seen_ms = max(last_seen_ms, excluded.last_seen_ms)",
            (chat_id, channel_of(chat_id), name, int(is_group), ts_ms, ts_ms),
        )
        self._chats_seen[chat_id] = ts_ms

    async def add_message(self, msg: InboundMessage) -> int | None:
        """Store one message; returns its id, or None when the platform re-delivered it.

        It returns once the row is committed. Calls made while the connection is busy are
        committed together (channels deliver side by side), in the order they were made."""
        await self._seen(msg)
        return await self._inserts.submit(msg)

    async def _insert_group(self, msgs: list[InboundMessage]) -> list[int | Exception | None]:
        """One statement for the group, which is its own transaction: one round trip and
        one commit. If a row breaks it, each row is tried alone: a bad row fails only itself."""
        async with self._lock:
            if len(msgs) > 1:
                together = await self._insert_together(msgs)
                if together is not None:
                    return list(together)
            outcomes: list[int | Exception | None] = []
            for msg in msgs:
                try:
                    rows = await self._db.execute_fetchall(INSERT_MESSAGE, _values(msg))
                except Exception as exc:  # this caller's own failure, raised to it alone
                    outcomes.append(exc)
                else:
                    outcomes.append(int(next(iter(rows))[0]) if rows else None)
            return outcomes

    async def _insert_together(self, msgs: list[InboundMessage]) -> list[int | None] | None:
        """The group's ids from one multi-row INSERT; None when some row broke it."""
        sql = (
            f"{INSERT_HEAD}{value_rows(len(msgs), INSERT_COLS)} "
            "ON CONFLICT DO NOTHING RETURNING id, chat_id, platform_id"
        )
        try:
            rows = await self._db.execute_fetchall(sql, [v for m in msgs for v in _values(m)])
        except sqlite3.OperationalError:  # locked, full, I/O: each row alone would fare no
            raise  # better, only wait as long again; every caller of the group hears it
        except Exception:  # a value that does not bind, a constraint: nothing was stored
            return None
        return returned_ids([(m.chat_id, m.platform_id) for m in msgs], rows)

    async def close(self) -> None:
        await self._inserts.idle()
        await super().close()

    async def add_messages(self, msgs: Sequence[InboundMessage]) -> list[int | None]:
        """Store a burst in one transaction; ids as for `add_message`."""
        for msg in msgs:
            await self._seen(msg)
        ids: list[int | None] = []
        async with self.transaction():
            for msg in msgs:
                rows = await self._db.execute_fetchall(INSERT_MESSAGE, _values(msg))
                ids.append(int(next(iter(rows))[0]) if rows else None)
        return ids

    async def _seen(self, msg: InboundMessage) -> None:
        if msg.ts_ms - self._chats_seen.get(msg.chat_id, -(10**12)) > 60_000:
            await self.record_chat(msg.chat_id, msg.chat_name, msg.is_group_chat, msg.ts_ms)

    async def max_message_id(self) -> int:
        row = await self._one("SELECT coalesce(max(id), 0) FROM messages")
        return int(row[0])

    async def folders_with_messages_after(self, after_id: int) -> dict[str, int]:
        """Registered folders that received messages past `after_id`, with their newest id."""
        rows = await self._all(
            "SELECT gc.folder, max(m.id) FROM messages m JOIN group_chats gc "
            "ON gc.chat_id = m.chat_id WHERE m.id > ? GROUP BY gc.folder",
            (after_id,),
        )
        return {str(r[0]): int(r[1]) for r in rows}

    async def messages_for_folder(
        self, folder: str, after_id: int, limit: int = 500
    ) -> list[Message]:
        """The newest `limit` messages of the folder's chats past `after_id`, oldest first."""
        rows = await self._all(
            f"SELECT {MSG_COLS} FROM messages WHERE id > ? AND chat_id IN "
            "(SELECT chat_id FROM group_chats WHERE folder = ?) ORDER BY id DESC LIMIT ?",
            (after_id, folder, limit),
        )
        return [_message(r) for r in reversed(rows)]

    async def count_messages_for_folder(self, folder: str, after_id: int) -> int:
        row = await self._one(
            "SELECT count(*) FROM messages WHERE id > ? AND chat_id IN "
            "(SELECT chat_id FROM group_chats WHERE folder = ?)",
            (after_id, folder),
        )
        return int(row[0])

    async def transcript(self, chat_id: str, limit: int) -> list[tuple[str, str]]:
        """The chat's last messages and replies sent to it, oldest first: (sender, text).

        A reply's sender is '' (the assistant)."""
        rows = await self._all(
            "SELECT ts_ms AS t, sender_name, text FROM messages WHERE chat_id = ? "
            "UNION ALL SELECT created_ms, '', text FROM outbox "
            "WHERE chat_id = ? AND status = 'sent' ORDER BY t DESC LIMIT ?",
            (chat_id, chat_id, limit),
        )
        return [(str(r[1]), str(r[2])) for r in reversed(rows)]

    async def chats(self) -> list[ChatInfo]:
        rows = await self._all(
            "SELECT c.chat_id, c.name, c.is_group, c.last_seen_ms, gc.folder FROM chats c "
            "LEFT JOIN group_chats gc ON gc.chat_id = c.chat_id ORDER BY c.last_seen_ms DESC"
        )
        return [ChatInfo(r[0], r[1], bool(r[2]), r[3], r[4]) for r in rows]

    # groups and cursors

    async def groups(self) -> list[Group]:
        rows = await self._all(f"SELECT {GROUP_COLS} FROM groups ORDER BY folder")
        chats = await self._all("SELECT chat_id, folder FROM group_chats ORDER BY chat_id")
        by_folder: dict[str, list[str]] = {}
        for chat_id, folder in chats:
            by_folder.setdefault(folder, []).append(chat_id)
        return [self._group(r, by_folder.get(r[0], [])) for r in rows]

    @staticmethod
    def _group(row: Sequence[Any], chats: list[str]) -> Group:
        return Group(
            folder=row[0],
            name=row[1],
            trigger=row[2],
            requires_trigger=bool(row[3]),
            network=row[4],
            allowed_senders=tuple(json.loads(row[5])),
            mounts=tuple(json.loads(row[6])),
            exports=tuple(json.loads(row[7])),
            model=row[8],
            domains=tuple(json.loads(row[9])),
            packages=tuple(json.loads(row[10])),
            profile=row[11],
            progress=bool(row[12]),
            provider=row[13],
            fallback_models=tuple(json.loads(row[14])),
            daily_requests=row[15],
            daily_tokens=row[16],
            daily_cost=row[17],
            vision=bool(row[18]),
            chats=tuple(chats),
        )

    async def group(self, folder: str) -> Group | None:
        row = await self._one(f"SELECT {GROUP_COLS} FROM groups WHERE folder = ?", (folder,))
        if row is None:
            return None
        chats = await self._all("SELECT chat_id FROM group_chats WHERE folder = ?", (folder,))
        return self._group(row, [c[0] for c in chats])

    async def has_message(self, chat_id: str, platform_id: str) -> bool:
        """Whether this platform message is stored already (a channel delivering it again)."""
        row = await self._one(
            "SELECT 1 FROM messages WHERE chat_id = ? AND platform_id = ?", (chat_id, platform_id)
        )
        return row is not None

    async def folder_of_chat(self, chat_id: str) -> str | None:
        row = await self._one("SELECT folder FROM group_chats WHERE chat_id = ?", (chat_id,))
        return str(row[0]) if row else None

    async def save_group(self, group: Group) -> None:
        """Create or update a group and bind its chats; a new group starts at the newest message."""
        async with self.transaction():
            await self._db.execute(
                "INSERT INTO groups (folder, name, trigger, requires_trigger, network, "
                "allowed_senders, mounts, exports, model, domains, packages, profile, progress, "
                "provider, fallback_models, daily_requests, daily_tokens, daily_cost, vision, "
                f"created_ms) VALUES ({', '.join('?' * 20)}) "
                "ON CONFLICT (folder) DO UPDATE SET "
                "name=excluded.name, trigger=excluded.trigger, "
                "requires_trigger=excluded.requires_trigger, network=excluded.network, "
                "allowed_senders=excluded.allowed_senders, mounts=excluded.mounts, "
                "exports=excluded.exports, model=excluded.model, domains=excluded.domains, "
                "packages=excluded.packages, profile=excluded.profile, progress=excluded.progress, "
                "provider=excluded.provider, fallback_models=excluded.fallback_models, "
                "daily_requests=excluded.daily_requests, daily_tokens=excluded.daily_tokens, "
                "daily_cost=excluded.daily_cost, vision=excluded.vision",
                (
                    group.folder,
                    group.name,
                    group.trigger,
                    int(group.requires_trigger),
                    group.network,
                    json.dumps(list(group.allowed_senders)),
                    json.dumps(list(group.mounts)),
                    json.dumps(list(group.exports)),
                    group.model,
                    json.dumps(list(group.domains)),
                    json.dumps(list(group.packages)),
                    group.profile,
                    int(group.progress),
                    group.provider,
                    json.dumps(list(group.fallback_models)),
                    group.daily_requests,
                    group.daily_tokens,
                    group.daily_cost,
                    int(group.vision),
                    now_ms(),
                ),
            )
            for chat_id in group.chats:
                await self._db.execute(
                    "INSERT INTO group_chats (chat_id, folder) VALUES (?, ?) "
                    "ON CONFLICT (chat_id) DO UPDATE SET folder = excluded.folder",
                    (chat_id, group.folder),
                )
            await self._db.execute(
                "INSERT OR IGNORE INTO cursors (folder, message_id) "
                "SELECT ?, coalesce(max(id), 0) FROM messages",
                (group.folder,),
            )

    async def bind_chat(self, folder: str, chat_id: str) -> Group:
        group = await self.group(folder)
        if group is None:
            raise StoreError(f"no group {folder!r}")
        if chat_id not in group.chats:
            group = replace(group, chats=(*group.chats, chat_id))
            await self.save_group(group)
        return group

    async def default_chat(self, folder: str) -> str | None:
        """Where a plain reply goes: the group's chat that spoke last, else its first chat."""
        row = await self._one(
            "SELECT m.chat_id FROM messages m JOIN group_chats gc ON gc.chat_id = m.chat_id "
            "WHERE gc.folder = ? ORDER BY m.id DESC LIMIT 1",
            (folder,),
        )
        if row is None:
            row = await self._one(
                "SELECT chat_id FROM group_chats WHERE folder = ? ORDER BY rowid LIMIT 1",
                (folder,),
            )
        return str(row[0]) if row else None

    async def remove_group(self, folder: str) -> bool:
        return await self._write("DELETE FROM groups WHERE folder = ?", (folder,)) > 0

    async def cursor(self, folder: str) -> int:
        row = await self._one("SELECT message_id FROM cursors WHERE folder = ?", (folder,))
        return int(row[0]) if row else 0

    async def min_cursor(self) -> int:
        row = await self._one("SELECT coalesce(min(message_id), 0) FROM cursors")
        return int(row[0])

    async def advance_cursor(self, folder: str, message_id: int) -> None:
        """Move the cursor forward only; a late or repeated call never moves it back."""
        await self._write(
            "UPDATE cursors SET message_id = max(message_id, ?) WHERE folder = ?",
            (message_id, folder),
        )
