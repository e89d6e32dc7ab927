"""The store's tape: every event of every group, appended, searchable (FTS5) and pruned.

Messages, replies, runs and IPC actions reach it through triggers (migration 8), in their
cause's commit; tool calls, chat commands, refusals and errors come through `tape_event`.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from nanoclaw.errors import StoreError
from nanoclaw.store.db import Database, now_ms

TapeKind = Literal[
    "message", "reply", "run_start", "run_end", "tool", "ipc", "refusal", "error", "command"
]
TAPE_COLS = "t.id, t.ts_ms, t.folder, t.kind, t.text, t.run_id, t.chat_id, t.untrusted, t.detail"
TEXT_MAX = 4000  # a tool's command or an error is kept whole up to this, then cut
PRUNE_BATCH = 2000  # rows per transaction: a large prune never holds the write lock long
# What SQLite says of a MATCH query it cannot parse (as opposed to a locked or broken file).
QUERY_ERRORS = ("fts5:", "no such column", "unknown special query", "unterminated string")
# Run outcomes that are no error: the agent finished, or the owner stopped it.
CLEAN_ENDS = ("ok", "stopped")


class TapeQueryError(StoreError):
    """A search query is not valid FTS5 syntax; the message says where."""


@dataclass(frozen=True)
class TapeEvent:
    id: int
    ts_ms: int
    folder: str
    kind: TapeKind
    text: str
    run_id: int | None = None
    chat_id: str = ""
    untrusted: bool = False
    detail: dict[str, Any] | None = None


@dataclass(frozen=True)
class TapeStats:
    """One group's figures over the tape; reply times in ms, None with no reply measured."""

    folder: str
    messages: int = 0
    runs: int = 0
    tools: int = 0
    errors: int = 0
    tokens: int = 0
    p50_ms: int | None = None
    p95_ms: int | None = None


def percentile(values: Sequence[int], q: float) -> int | None:
    """The nearest-rank `q` percentile (0 < q <= 100) of `values`; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))  # ceil without floats' rounding surprises
    return ordered[int(rank) - 1]


def _event(row: Sequence[Any]) -> TapeEvent:
    try:
        detail = json.loads(row[8]) if row[8] else None
    except ValueError:
        detail = None
    return TapeEvent(
        id=row[0],
        ts_ms=row[1],
        folder=row[2],
        kind=row[3],
        text=row[4],
        run_id=row[5],
        chat_id=row[6],
        untrusted=bool(row[7]),
        detail=detail if isinstance(detail, dict) else None,
    )


def _query_error(exc: sqlite3.OperationalError, query: str) -> StoreError:
    message = str(exc)
    if message.startswith(QUERY_ERRORS):
        return TapeQueryError(f"not a valid search query {query!r}: {message}")
    return StoreError(f"tape search failed: {message}")


class TapeWriter(Protocol):
    """What a component that only appends to the tape needs (`Store` is one)."""

    async def tape_event(
        self,
        folder: str,
        kind: TapeKind,
        text: str,
        *,
        run_id: int | None = None,
        untrusted: bool = False,
        detail: dict[str, Any] | None = None,
    ) -> None: ...


class Tape(Database):
    """Append, read, search, count and prune the tape."""

    async def tape_event(
        self,
        folder: str,
        kind: TapeKind,
        text: str,
        *,
        run_id: int | None = None,
        untrusted: bool = False,
        detail: dict[str, Any] | None = None,
    ) -> None:
        """Append one event now; `untrusted` when `text` may hold words of untrusted senders
        (a tainted run's tool command, a message from a sender not allowed)."""
        await self._write(
            "INSERT INTO tape (ts_ms, folder, kind, text, run_id, untrusted, detail) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                now_ms(),
                folder,
                kind,
                text[:TEXT_MAX],
                run_id,
                int(untrusted),
                json.dumps(detail or {}, default=str),
            ),
        )

    async def trust_senders(self, sender_ids: Iterable[str]) -> None:
        """The senders allowed in every group (ALLOWED_SENDERS): their messages are trusted."""
        async with self.transaction():
            await self._db.execute("DELETE FROM tape_trusted")
            await self._db.executemany(
                "INSERT OR IGNORE INTO tape_trusted (sender_id) VALUES (?)",
                [(s,) for s in sender_ids],
            )

    async def tape_recent(
        self, since_ms: int, folder: str | None = None, limit: int = 1000
    ) -> list[TapeEvent]:
        """The newest `limit` events at or after `since_ms`, oldest first."""
        rows = await self._all(
            f"SELECT {TAPE_COLS} FROM tape t WHERE t.ts_ms >= ? AND (? IS NULL OR t.folder = ?) "
            "ORDER BY t.id DESC LIMIT ?",
            (since_ms, folder, folder, limit),
        )
        return [_event(r) for r in reversed(rows)]

    async def tape_search(
        self, query: str, folder: str | None = None, limit: int = 100
    ) -> list[TapeEvent]:
        """The newest `limit` events whose text matches the FTS5 `query`, oldest first."""
        try:
            rows = await self._all(
                f"SELECT {TAPE_COLS} FROM tape_fts JOIN tape t ON t.id = tape_fts.rowid "
                "WHERE tape_fts MATCH ? AND (? IS NULL OR t.folder = ?) ORDER BY t.id DESC LIMIT ?",
                (query, folder, folder, limit),
            )
        except sqlite3.OperationalError as exc:
            raise _query_error(exc, query) from exc
        return [_event(r) for r in reversed(rows)]

    async def tape_stats(self, since_ms: int = 0) -> list[TapeStats]:
        """Per group, over the events at or after `since_ms`: counts, tokens of the runs that
        started then (input + cache writes + output, as the budget counts them), and the
        time from the message that started a run to the run's first reply in its chat."""
        counts = await self._all(
            "SELECT folder, sum(kind = 'message'), sum(kind = 'run_start'), sum(kind = 'tool'), "
            "sum(kind = 'error' OR (kind = 'run_end' AND "
            f"json_extract(detail, '$.status') NOT IN {CLEAN_ENDS!r})) "
            "FROM tape WHERE ts_ms >= ? GROUP BY folder",
            (since_ms,),
        )
        tokens = await self._all(
            "SELECT t.folder, sum(r.input_tokens + r.cache_write_tokens + r.output_tokens) "
            "FROM tape t JOIN runs r ON r.id = t.run_id "
            "WHERE t.kind = 'run_start' AND t.ts_ms >= ? GROUP BY t.folder",
            (since_ms,),
        )
        waits = await self._all(
            "SELECT s.folder, (SELECT min(r.ts_ms) FROM tape r WHERE r.run_id = s.run_id "
            "AND r.kind = 'reply' AND r.chat_id = m.chat_id) - m.ts_ms AS wait "
            "FROM tape s JOIN tape m ON m.kind = 'message' "
            "AND m.ref = json_extract(s.detail, '$.last') "
            "WHERE s.kind = 'run_start' AND s.ts_ms >= ? AND wait IS NOT NULL",
            (since_ms,),
        )
        return tape_stats(counts, tokens, waits)

    async def prune_tape(self, before_ms: int) -> int:
        """Delete events older than `before_ms`, a batch per transaction; how many went."""
        total = 0
        while True:
            gone = await self._write(
                "DELETE FROM tape WHERE id IN "
                "(SELECT id FROM tape WHERE ts_ms < ? ORDER BY ts_ms LIMIT ?)",
                (before_ms, PRUNE_BATCH),
            )
            total += gone
            if gone < PRUNE_BATCH:
                return total


def tape_stats(
    counts: Iterable[Sequence[Any]], tokens: Iterable[Sequence[Any]], waits: Iterable[Sequence[Any]]
) -> list[TapeStats]:
    """Rows of the three stats queries folded into one `TapeStats` per group, by name."""
    spent = {str(f): int(n or 0) for f, n in tokens}
    times: dict[str, list[int]] = {}
    for folder, wait in waits:
        times.setdefault(str(folder), []).append(max(0, int(wait)))
    stats = []
    for folder, messages, runs, tools, errors in counts:
        waited = times.get(folder, [])
        stats.append(
            TapeStats(
                folder=folder,
                messages=int(messages or 0),
                runs=int(runs or 0),
                tools=int(tools or 0),
                errors=int(errors or 0),
                tokens=spent.get(folder, 0),
                p50_ms=percentile(waited, 50),
                p95_ms=percentile(waited, 95),
            )
        )
    return sorted(stats, key=lambda s: s.folder)
