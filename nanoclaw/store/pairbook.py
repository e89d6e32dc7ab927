"""The store's pairing book: one-time codes, attempts per chat, and notices given once.

`nanoclaw pair` (one process) writes a code's hash; the daemon (another) redeems it: the
code is consumed, the chat bound and the sender allowed in one transaction, so a code
pairs exactly one chat even when two arrive at once.
"""

from __future__ import annotations

import hmac
import json
from dataclasses import dataclass
from typing import Literal

from nanoclaw.errors import StoreError
from nanoclaw.pairing import HOUR_MS, MAX_LIVE, TTL_MS, code_hash, new_code, pairable_sender
from nanoclaw.store.db import Database

Outcome = Literal["paired", "wrong", "held", "nobody"]
NoticeKind = Literal["hint", "wrong_code"]
KEEP_USED_MS = 7 * 24 * HOUR_MS  # used codes stay a week: who paired which chat, and when


@dataclass(frozen=True)
class Redemption:
    """`paired`: the chat is in `folder` now; `held`: group `folder` has the chat, the code
    is unused; `nobody`: the sender cannot be allowed (a room nick), the code is unused."""

    outcome: Outcome
    folder: str = ""


@dataclass(frozen=True)
class NewCode:
    code: str
    folder: str
    expires_ms: int


class PairBook(Database):
    async def create_pair_code(self, folder: str, now: int, ttl_ms: int = TTL_MS) -> NewCode:
        """A fresh code for `folder`; StoreError when MAX_LIVE codes are live already."""
        async with self.transaction():
            await self._db.execute(
                "DELETE FROM pair_codes WHERE (used_ms IS NULL AND expires_ms <= ?) OR used_ms < ?",
                (now, now - KEEP_USED_MS),
            )
            live = await self._live(now)
            if len(live) >= MAX_LIVE:
                until = min(expires for _, _, expires in live)
                raise StoreError(
                    f"{MAX_LIVE} pairing codes are live already; use one, or wait until the "
                    f"first expires ({(until - now) // 60_000 + 1} min)"
                )
            if await self._one("SELECT 1 FROM groups WHERE folder = ?", (folder,)) is None:
                raise StoreError(f"no group {folder!r}")
            code = new_code()
            await self._db.execute(
                "INSERT INTO pair_codes (code_hash, folder, created_ms, expires_ms) "
                "VALUES (?, ?, ?, ?)",
                (code_hash(code.replace("-", "")), folder, now, now + ttl_ms),
            )
        return NewCode(code, folder, now + ttl_ms)

    async def _live(self, now: int) -> list[tuple[str, str, int]]:
        rows = await self._all(
            "SELECT code_hash, folder, expires_ms FROM pair_codes "
            "WHERE used_ms IS NULL AND expires_ms > ?",
            (now,),
        )
        return [(str(r[0]), str(r[1]), int(r[2])) for r in rows]

    async def pairing_open_until(self, now: int) -> int | None:
        """When the last live code expires, or None when none is live."""
        row = await self._one(
            "SELECT max(expires_ms) FROM pair_codes WHERE used_ms IS NULL AND expires_ms > ?",
            (now,),
        )
        return int(row[0]) if row and row[0] is not None else None

    async def pair_attempts(self, chat_id: str, now: int) -> int:
        """Codes this chat tried within the last hour."""
        row = await self._one(
            "SELECT count(*) FROM pair_attempts WHERE chat_id = ? AND ts_ms > ?",
            (chat_id, now - HOUR_MS),
        )
        return int(row[0])

    async def redeem_pair_code(
        self, code: str | None, chat_id: str, sender_id: str, now: int
    ) -> Redemption:
        """Count the attempt; on a live code bind the chat, allow the sender, use the code."""
        digest = code_hash(code) if code else ""
        async with self.transaction():
            await self._db.execute("DELETE FROM pair_attempts WHERE ts_ms <= ?", (now - HOUR_MS,))
            await self._db.execute(
                "INSERT INTO pair_attempts (chat_id, ts_ms) VALUES (?, ?)", (chat_id, now)
            )
            match = None
            for stored, folder, _ in await self._live(now):
                # every live code is compared, in constant time, match or not
                if hmac.compare_digest(stored, digest or "-" * len(stored)):
                    match = stored, folder
            if match is None:
                return Redemption("wrong")
            stored, folder = match
            row = await self._one("SELECT folder FROM group_chats WHERE chat_id = ?", (chat_id,))
            if row is not None and row[0] != folder:
                return Redemption("held", str(row[0]))
            if not pairable_sender(sender_id):
                return Redemption("nobody")
            await self._db.execute(
                "INSERT OR IGNORE INTO group_chats (chat_id, folder) VALUES (?, ?)",
                (chat_id, folder),
            )
            row = await self._one("SELECT allowed_senders FROM groups WHERE folder = ?", (folder,))
            senders = list(json.loads(row[0]))
            if sender_id not in senders:
                await self._db.execute(
                    "UPDATE groups SET allowed_senders = ? WHERE folder = ?",
                    (json.dumps([*senders, sender_id]), folder),
                )
            await self._db.execute(
                "UPDATE pair_codes SET used_ms = ?, used_chat = ?, used_by = ? WHERE code_hash = ?",
                (now, chat_id, sender_id, stored),
            )
        return Redemption("paired", folder)

    async def notice_due(self, target: str, kind: NoticeKind, now: int, every_ms: int) -> bool:
        """Claim one notice to `target` (a chat or a sender): True at most once per `every_ms`.

        Claimed before it is sent: two messages at once never make two notices."""
        written = await self._write(
            "INSERT INTO notices (target, kind, sent_ms) VALUES (?, ?, ?) "
            "ON CONFLICT (target, kind) DO UPDATE SET sent_ms = excluded.sent_ms "
            "WHERE sent_ms <= ?",
            (target, kind, now, now - every_ms),
        )
        return written > 0
