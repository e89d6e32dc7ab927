"""Cache churn: whether a group's cacheable prefix keeps changing between its model calls,
judged over its latest calls (cache writes outweighing cache reads), and the note that
says so in the proxy's log and in `nanoclaw usage`.
"""

from __future__ import annotations

from collections.abc import Sequence

from nanoclaw.models import Usage

CHURN_WINDOW = 20  # the group's latest calls judged
# Fewer calls tell nothing: a new conversation writes its prefix once before reading it.
CHURN_MIN_CALLS = 5


def cache_churn(calls: Sequence[Usage], min_calls: int = CHURN_MIN_CALLS) -> bool:
    """Pure: at least `min_calls` calls, and more tokens written to the cache than read from
    it. A stable prefix is written once and read at every later step, so reads dominate."""
    written = sum(c.cache_write_tokens for c in calls)
    read = sum(c.cache_read_tokens for c in calls)
    return len(calls) >= min_calls and written > read


def churn_note(folder: str, calls: Sequence[Usage]) -> str:
    written = sum(c.cache_write_tokens for c in calls)
    read = sum(c.cache_read_tokens for c in calls)
    return (
        f"group {folder}: cache writes dominate over its last {len(calls)} model calls "
        f"({written} tokens written, {read} read): its cacheable prefix keeps changing "
        "(memory, tools or the system prompt change between calls)"
    )
