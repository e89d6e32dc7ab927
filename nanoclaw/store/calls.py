"""The store's model calls: one `model_calls` row per answered Messages request (who answered
and its tokens), what the money budget sums and `nanoclaw usage` prices, and the messages
each run handled (the cost per message).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from nanoclaw.models import ModelCall, Usage
from nanoclaw.store.db import Database, now_ms

TOKENS = "input_tokens, output_tokens, cache_read_tokens, cache_write_tokens"
SUMS = (
    "coalesce(sum(c.input_tokens), 0), coalesce(sum(c.output_tokens), 0), "
    "coalesce(sum(c.cache_read_tokens), 0), coalesce(sum(c.cache_write_tokens), 0)"
)


def _usage(requests: Any, tokens: Sequence[Any]) -> Usage:
    return Usage(int(requests), *(int(v) for v in tokens))


class CallBook(Database):
    """Model calls, read per group and day, per run, and as a group's latest."""

    async def add_model_call(
        self, folder: str, run_id: int | None, call: ModelCall, usage: Usage
    ) -> None:
        await self._write(
            f"INSERT INTO model_calls (ts_ms, folder, run_id, provider, model, {TOKENS}, "
            "fallback) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                now_ms(),
                folder,
                run_id,
                call.provider,
                call.model,
                usage.input_tokens,
                usage.output_tokens,
                usage.cache_read_tokens,
                usage.cache_write_tokens,
                int(call.fallback),
            ),
        )

    async def calls_since(
        self, folder: str, since_ms: int, exclude_run: int | None = None
    ) -> list[tuple[str, Usage]]:
        """The group's calls made at or after `since_ms` (by runs other than `exclude_run`),
        summed per model: what the money budget prices (over the model_calls_day index)."""
        rows = await self._all(
            f"SELECT model, count(*), {SUMS} FROM model_calls c WHERE folder = ? AND ts_ms >= ? "
            "AND (? IS NULL OR run_id IS NOT ?) GROUP BY model",
            (folder, since_ms, exclude_run, exclude_run),
        )
        return [(str(r[0]), _usage(r[1], r[2:6])) for r in rows]

    async def recent_calls(self, folder: str, limit: int) -> list[Usage]:
        """The group's latest `limit` calls, newest first (the cache churn check)."""
        rows = await self._all(
            f"SELECT {TOKENS} FROM model_calls WHERE folder = ? ORDER BY ts_ms DESC, id DESC "
            "LIMIT ?",
            (folder, limit),
        )
        return [_usage(1, r) for r in rows]

    async def run_calls_since(
        self, since_ms: int, folder: str | None = None
    ) -> dict[int, list[tuple[str, Usage]]]:
        """Per run started at or after `since_ms`: its calls summed per model."""
        rows = await self._all(
            f"SELECT c.run_id, c.model, count(*), {SUMS} FROM model_calls c "
            "JOIN runs r ON r.id = c.run_id WHERE r.started_ms >= ? AND (? IS NULL OR "
            "r.folder = ?) GROUP BY c.run_id, c.model ORDER BY c.run_id, c.model",
            (since_ms, folder, folder),
        )
        found: dict[int, list[tuple[str, Usage]]] = {}
        for r in rows:
            found.setdefault(int(r[0]), []).append((str(r[1]), _usage(r[2], r[3:7])))
        return found

    async def run_messages_since(self, since_ms: int, folder: str | None = None) -> dict[int, int]:
        """Per run started at or after `since_ms`: the messages of its group's chats in its
        message range (the messages it handled; a task's run has none)."""
        rows = await self._all(
            "SELECT r.id, (SELECT count(*) FROM messages m JOIN group_chats gc "
            "ON gc.chat_id = m.chat_id AND gc.folder = r.folder "
            "WHERE m.id BETWEEN r.first_message_id AND r.last_message_id) "
            "FROM runs r WHERE r.started_ms >= ? AND (? IS NULL OR r.folder = ?) "
            "AND r.first_message_id IS NOT NULL",
            (since_ms, folder, folder),
        )
        return {int(r[0]): int(r[1]) for r in rows}
