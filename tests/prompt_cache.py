"""Anthropic's prompt cache as the fake Messages API accounts it: the request's blocks in the
API's order (tools, system, messages), prefixes cached at `cache_control` breakpoints of at
least MIN_TOKENS, read back from up to LOOKBACK blocks before a breakpoint, living TTL_S."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

MIN_TOKENS = 1024  # the shortest cacheable prefix (Sonnet and Opus models)
TTL_S = 300.0  # the default "ephemeral" life, refreshed by each read
LOOKBACK = 20  # block boundaries checked for a hit before each breakpoint


@dataclass(frozen=True)
class Block:
    key: str  # the block as sent, without its cache_control, and where it stands
    tokens: int
    breakpoint: bool


@dataclass(frozen=True)
class CacheUsage:
    read: int  # cache_read_input_tokens
    write: int  # cache_creation_input_tokens


def _block(where: list[Any], item: Any) -> Block:
    """One block; a breakpoint changes nothing in what is hashed, as on Anthropic's side."""
    marked = isinstance(item, dict) and "cache_control" in item
    plain = {k: v for k, v in item.items() if k != "cache_control"} if marked else item
    text = json.dumps(plain)
    return Block(json.dumps([*where, text]), len(text) // 4, marked)


def blocks_of(body: dict[str, Any]) -> list[Block]:
    """The request's blocks in cache order. A string content is one block of its own (not
    the text block it means), so a prefix hits only if it is sent byte for byte again."""
    out = [_block(["tools", i], tool) for i, tool in enumerate(body.get("tools") or [])]
    system = body.get("system")
    for i, block in enumerate([system] if isinstance(system, str) else system or []):
        out.append(_block(["system", i], block))
    for i, message in enumerate(body.get("messages") or []):
        content = message.get("content")
        for j, block in enumerate([content] if isinstance(content, str) else content or []):
            out.append(_block(["messages", i, message.get("role"), j], block))
    return out


class PromptCache:
    """The cached prefixes of one API key, by the hash of the prefix; `clock` in seconds."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._expiry: dict[str, float] = {}

    def clear(self) -> None:
        self._expiry.clear()

    def account(self, body: dict[str, Any]) -> CacheUsage:
        """What this request reads from the cache and writes to it; updates the cache."""
        now = self.clock()
        self._expiry = {h: t for h, t in self._expiry.items() if t > now}
        blocks = blocks_of(body)
        hashes: list[str] = []
        totals: list[int] = []
        digest = hashlib.sha256()
        for block in blocks:
            digest.update(block.key.encode() + b"\0")
            hashes.append(digest.copy().hexdigest())
            totals.append((totals[-1] if totals else 0) + block.tokens)
        breakpoints = [i for i, b in enumerate(blocks) if b.breakpoint]
        hit = -1  # the last block of the longest prefix read
        for bp in breakpoints:
            for i in range(bp, max(bp - LOOKBACK, -1), -1):
                if hashes[i] in self._expiry:
                    hit = max(hit, i)
                    break
        if hit >= 0:
            self._expiry[hashes[hit]] = now + TTL_S
        read = totals[hit] if hit >= 0 else 0
        written = hit
        for bp in breakpoints:
            if bp > hit and totals[bp] >= MIN_TOKENS:
                self._expiry[hashes[bp]] = now + TTL_S
                written = bp
        return CacheUsage(read, totals[written] - read if written > hit else 0)
