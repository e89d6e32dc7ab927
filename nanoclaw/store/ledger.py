"""The store's ledger: agent runs with token usage, IPC names already acted on, and the outbox.

These tables are what make the guarantees of SPEC section 10 hold across crashes: an IPC
name and its reply are committed together, and outbox rows are leased while being sent.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from nanoclaw.models import OutboxItem, Reply, RunRecord, Usage
from nanoclaw.store.calls import CallBook
from nanoclaw.store.db import now_ms

RUN_COLS = (
    "id, folder, status, started_ms, ended_ms, error, requests, input_tokens, output_tokens, "
    "cache_read_tokens, cache_write_tokens"
)


def _run(r: Sequence[Any]) -> RunRecord:
    return RunRecord(r[0], r[1], r[2], r[3], r[4], r[5], Usage(*r[6:11]))


class Ledger(CallBook):
    """Runs, IPC names and outbox rows (and, from `CallBook`, model calls)."""

    async def start_run(
        self,
        folder: str,
        kind: str,
        first_id: int | None,
        last_id: int | None,
        *,
        tainted: bool = False,
    ) -> int:
        """A new run; `tainted` when its prompt holds messages from untrusted senders."""
        async with self._lock:
            cur = await self._db.execute(
                "INSERT INTO runs (folder, kind, first_message_id, last_message_id, started_ms, "
                "tainted) VALUES (?, ?, ?, ?, ?, ?)",
                (folder, kind, first_id, last_id, now_ms(), int(tainted)),
            )
            return int(cur.lastrowid or 0)

    async def taint_run(self, run_id: int) -> None:
        """A follow-up brought untrusted senders' messages into a live run: for good."""
        await self._write("UPDATE runs SET tainted = 1 WHERE id = ?", (run_id,))

    async def writer_tainted(self, folder: str, run_id: int | None) -> bool:
        """Whether what the group's sandbox writes now may carry untrusted senders' words.

        The writer is the live run, else (files drained after it ended, or left by a crash)
        the group's last run; and while a tainted task runs in the group, its gate script
        (before any run exists) and its agent are tainted too.
        """
        row = await self._one(
            "SELECT coalesce((SELECT tainted FROM runs WHERE id = coalesce(?, "
            "(SELECT max(id) FROM runs WHERE folder = ?))), 0) OR EXISTS (SELECT 1 FROM "
            "task_runs r JOIN tasks t ON t.id = r.task_id WHERE r.folder = ? "
            "AND r.status = 'running' AND t.tainted)",
            (run_id, folder, folder),
        )
        return bool(row[0])

    async def finish_run(self, run_id: int, status: str, error: str = "") -> None:
        await self._write(
            "UPDATE runs SET status = ?, error = ?, ended_ms = ? WHERE id = ?",
            (status, error[:2000], now_ms(), run_id),
        )

    async def add_usage(self, run_id: int, usage: Usage) -> None:
        await self._write(
            "UPDATE runs SET requests = requests + ?, input_tokens = input_tokens + ?, "
            "output_tokens = output_tokens + ?, cache_read_tokens = cache_read_tokens + ?, "
            "cache_write_tokens = cache_write_tokens + ? WHERE id = ?",
            (
                usage.requests,
                usage.input_tokens,
                usage.output_tokens,
                usage.cache_read_tokens,
                usage.cache_write_tokens,
                run_id,
            ),
        )

    async def interrupt_stale_runs(self) -> int:
        """Runs left 'running' by a crashed daemon are marked interrupted at start-up."""
        return await self._write(
            "UPDATE runs SET status = 'interrupted', ended_ms = ? WHERE status = 'running'",
            (now_ms(),),
        )

    async def runs(self, folder: str | None = None, limit: int = 20) -> list[RunRecord]:
        rows = await self._all(
            f"SELECT {RUN_COLS} FROM runs WHERE ? IS NULL OR folder = ? ORDER BY id DESC LIMIT ?",
            (folder, folder, limit),
        )
        return [_run(r) for r in rows]

    async def runs_since(self, since_ms: int, folder: str | None = None) -> list[RunRecord]:
        """Runs started at or after `since_ms`, oldest first (for `nanoclaw usage`)."""
        rows = await self._all(
            f"SELECT {RUN_COLS} FROM runs WHERE started_ms >= ? AND (? IS NULL OR folder = ?) "
            "ORDER BY started_ms, id",
            (since_ms, folder, folder),
        )
        return [_run(r) for r in rows]

    async def group_usage(
        self, folder: str, since_ms: int, exclude_run: int | None = None
    ) -> Usage:
        """The group's usage summed over its runs started at or after `since_ms`."""
        row = await self._one(
            "SELECT coalesce(sum(requests), 0), coalesce(sum(input_tokens), 0), "
            "coalesce(sum(output_tokens), 0), coalesce(sum(cache_read_tokens), 0), "
            "coalesce(sum(cache_write_tokens), 0) FROM runs "
            "WHERE folder = ? AND started_ms >= ? AND id IS NOT ?",
            (folder, since_ms, exclude_run),
        )
        return Usage(*(int(v) for v in row))

    async def runs_by_group_since(
        self, folders: Sequence[str], since_ms: int
    ) -> list[tuple[str, str, int, Usage]]:
        """(folder, status, runs, usage) of these groups' runs started at or after `since_ms`:
        one index range per group (runs_folder_started), so a scrape stays cheap."""
        marks = ", ".join("?" for _ in folders) or "NULL"
        rows = await self._all(
            "SELECT folder, status, count(*), sum(requests), sum(input_tokens), "
            "sum(output_tokens), sum(cache_read_tokens), sum(cache_write_tokens) FROM runs "
            f"WHERE folder IN ({marks}) AND started_ms >= ? GROUP BY folder, status",
            (*folders, since_ms),
        )
        return [(str(r[0]), str(r[1]), int(r[2]), Usage(*(int(v) for v in r[3:8]))) for r in rows]

    async def outbox_backlog(self) -> int:
        """Rows not yet sent (due or waiting for a retry), over the outbox_pending index."""
        row = await self._one("SELECT count(*) FROM outbox WHERE status = 'pending'")
        return int(row[0])

    async def texts_sent_by_unfinished_runs(self, folder: str, after_id: int) -> list[str]:
        """Replies already produced by cut-short runs that covered messages past `after_id`."""
        rows = await self._all(
            "SELECT o.text FROM outbox o JOIN runs r ON r.id = o.run_id WHERE r.folder = ? "
            "AND r.status != 'ok' AND r.last_message_id > ? ORDER BY o.id",
            (folder, after_id),
        )
        return [str(r[0]) for r in rows]

    async def texts_sent_by_run(self, run_id: int) -> list[str]:
        rows = await self._all(
            "SELECT coalesce(file_name, text) FROM outbox WHERE run_id = ? ORDER BY id", (run_id,)
        )
        return [str(r[0]) for r in rows]

    async def ipc_done(self, folder: str, name: str) -> bool:
        row = await self._one(
            "SELECT 1 FROM ipc_done WHERE folder = ? AND name = ?", (folder, name)
        )
        return row is not None

    async def record_ipc(
        self, folder: str, name: str, outcome: str, reply: Reply | None = None
    ) -> bool:
        """Record an IPC name as acted on, with its reply in the same commit.

        Returns False when the name was already recorded: the caller must not act again.
        """
        async with self.transaction():
            cur = await self._db.execute(
                "INSERT OR IGNORE INTO ipc_done (folder, name, outcome, done_ms) "
                "VALUES (?, ?, ?, ?)",
                (folder, name, outcome, now_ms()),
            )
            if cur.rowcount == 0:
                return False
            if reply is not None:
                await self._db.execute(
                    "INSERT INTO outbox (folder, chat_id, text, run_id, ipc_name, created_ms, "
                    "file_path, file_name) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        folder,
                        reply.chat_id,
                        reply.text,
                        reply.run_id,
                        name,
                        now_ms(),
                        reply.file_path,
                        reply.file_name,
                    ),
                )
        return True

    async def enqueue_reply(
        self, folder: str, chat_id: str, text: str, run_id: int | None = None
    ) -> None:
        await self._write(
            "INSERT INTO outbox (folder, chat_id, text, run_id, created_ms) VALUES (?, ?, ?, ?, ?)",
            (folder, chat_id, text, run_id, now_ms()),
        )

    async def claim_outbox(
        self, prefixes: Sequence[str], lease_ms: int = 60_000, limit: int = 20
    ) -> list[OutboxItem]:
        """Take due rows for these channels; a lease stops a second process sending them too."""
        if not prefixes:
            return []
        now = now_ms()
        marks = " OR ".join("chat_id LIKE ?" for _ in prefixes)
        async with self.transaction():
            rows = await self._all(
                "SELECT id, folder, chat_id, text, attempts, chunks_sent, run_id, file_path, "
                "file_name, created_ms FROM outbox "
                f"WHERE status = 'pending' AND next_attempt_ms <= ? AND claimed_until_ms <= ? "
                f"AND ({marks}) ORDER BY id LIMIT ?",
                (now, now, *(f"{p}:%" for p in prefixes), limit),
            )
            for row in rows:
                await self._db.execute(
                    "UPDATE outbox SET claimed_until_ms = ? WHERE id = ?", (now + lease_ms, row[0])
                )
        return [OutboxItem(*r) for r in rows]

    async def next_outbox_due_ms(self, prefixes: Sequence[str]) -> int | None:
        marks = " OR ".join("chat_id LIKE ?" for _ in prefixes) or "0"
        row = await self._one(
            "SELECT min(max(next_attempt_ms, claimed_until_ms)) FROM outbox "
            f"WHERE status = 'pending' AND ({marks})",
            tuple(f"{p}:%" for p in prefixes),
        )
        return int(row[0]) if row and row[0] is not None else None

    async def outbox_progress(self, item_id: int, chunks_sent: int) -> None:
        await self._write("UPDATE outbox SET chunks_sent = ? WHERE id = ?", (chunks_sent, item_id))

    async def outbox_sent(self, item_id: int) -> None:
        await self._write(
            "UPDATE outbox SET status = 'sent', sent_ms = ?, claimed_until_ms = 0 WHERE id = ?",
            (now_ms(), item_id),
        )

    async def outbox_retry(self, item_id: int, delay_ms: int, error: str) -> None:
        await self._write(
            "UPDATE outbox SET attempts = attempts + 1, next_attempt_ms = ?, claimed_until_ms = 0, "
            "error = ? WHERE id = ?",
            (now_ms() + delay_ms, error[:500], item_id),
        )

    async def outbox_failed(self, item_id: int, error: str) -> None:
        await self._write(
            "UPDATE outbox SET status = 'failed', error = ?, claimed_until_ms = 0 WHERE id = ?",
            (error[:500], item_id),
        )

    async def outbox_origin(self, item_id: int) -> tuple[str, int] | None:
        """The kind of run that wrote an outbox row ('message', 'task'; '' for none), and when."""
        row = await self._one(
            "SELECT coalesce(r.kind, ''), o.created_ms FROM outbox o "
            "LEFT JOIN runs r ON r.id = o.run_id WHERE o.id = ?",
            (item_id,),
        )
        return (str(row[0]), int(row[1])) if row else None

    async def pending_outbox(self, chat_id: str) -> int:
        row = await self._one(
            "SELECT count(*) FROM outbox WHERE chat_id = ? AND status = 'pending'", (chat_id,)
        )
        return int(row[0])
