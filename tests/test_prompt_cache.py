"""Prompt caching that pays: the real runner marks the end of the conversation at each
request, so the fake's emulation of Anthropic's prefix cache serves most input from the cache;
and the emulation itself (minimum length, lookback, life, byte-stable prefixes)."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fake_anthropic import FakeAnthropic
from prompt_cache import MIN_TOKENS, TTL_S, CacheUsage, PromptCache

from nanoclaw.agent.__main__ import Agent
from nanoclaw.agent.conversation import History, with_breakpoint
from nanoclaw.agent.model import ModelClient
from nanoclaw.agent.protocol import RunConfig
from nanoclaw.proxy.admission import Admitted, Policy, admit

EPHEMERAL = {"type": "ephemeral"}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def cached_share(usages: list[dict[str, int]]) -> float:
    """Cache reads over all input: read / (input + read + write), summed over requests."""
    read = sum(u["cache_read_input_tokens"] for u in usages)
    rest = sum(u["input_tokens"] + u["cache_creation_input_tokens"] for u in usages)
    return read / (read + rest)


def replayed(bodies: list[dict[str, Any]], clock: Clock) -> list[dict[str, int]]:
    """The usage the fake reports for these requests, sent in this order to a fresh cache."""
    cache, out = PromptCache(clock), []
    for body in bodies:
        cached = cache.account(body)
        rest = len(json.dumps(body)) // 4 - cached.read - cached.write
        out.append(
            {
                "input_tokens": rest,
                "cache_read_input_tokens": cached.read,
                "cache_creation_input_tokens": cached.write,
            }
        )
    return out


def without_conversation_breakpoints(body: dict[str, Any]) -> dict[str, Any]:
    plain: dict[str, Any] = json.loads(json.dumps(body))
    for message in plain["messages"]:
        for block in message["content"] if isinstance(message["content"], list) else []:
            block.pop("cache_control", None)
    return plain


def breakpoints(body: dict[str, Any]) -> int:
    return json.dumps(body).count('"cache_control"')


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def fake(clock: Clock) -> Iterator[FakeAnthropic]:
    with FakeAnthropic(clock) as server:
        yield server


def test_six_turns_with_a_tool_step_each_come_mostly_from_the_cache(
    tmp_path: Path, fake: FakeAnthropic, clock: Clock
) -> None:
    root = tmp_path / "root"
    (root / "workspace").mkdir(parents=True)
    (root / "ipc" / "outbound").mkdir(parents=True)
    client = ModelClient(fake.base_url, max_retries=0)
    agent = Agent(RunConfig("claude-test"), root, client)
    answers = []
    for turn in range(1, 7):
        answers.append(agent.turn(f"count [[bash: seq {turn}000 {turn}299]]"))
        clock.now += 60  # a minute between turns: well within the cache's life
    assert all(a.startswith("RESULT: ") and f"\n{t}299" in a for t, a in enumerate(answers, 1))
    bodies = [r.body for r in fake.requests]
    assert len(bodies) == 12
    # tools, system and the conversation (from the second request): at most Anthropic's four
    assert [breakpoints(b) for b in bodies] == [2] + [3] * 11
    policy = Policy(frozenset({"claude-test"}))
    assert all(isinstance(admit(json.dumps(b).encode(), "", policy), Admitted) for b in bodies)
    kept = (root / "workspace" / ".nanoclaw" / "conversation.json").read_text()
    assert "cache_control" not in kept and len(json.loads(kept)) == 24

    usages = fake.usages
    share = cached_share(usages)
    # the same requests with only tools and system marked, as the runner sent them before
    baseline = cached_share(replayed([without_conversation_breakpoints(b) for b in bodies], clock))
    print(f"cached share: {share:.1%} (tools and system only: {baseline:.1%})")
    assert share >= 0.80
    assert baseline < 0.50
    # each request reads all its predecessor wrote or read: the prefix stayed byte-stable
    for before, after in itertools.pairwise(usages):
        cached = before["cache_read_input_tokens"] + before["cache_creation_input_tokens"]
        assert after["cache_read_input_tokens"] == cached


def body(*blocks: str, marked: tuple[int, ...] = (-1,)) -> dict[str, Any]:
    """A request of one user message made of text blocks, `marked` ones with a breakpoint."""
    content: list[dict[str, Any]] = [{"type": "text", "text": t} for t in blocks]
    for i in marked:
        content[i] = {**content[i], "cache_control": EPHEMERAL}
    return {"model": "m", "messages": [{"role": "user", "content": content}]}


BIG = "x" * (4 * MIN_TOKENS)  # one block of just over the minimum (json quotes included)
SMALL = "y" * 400
B, S = (len(json.dumps({"type": "text", "text": t})) // 4 for t in (BIG, SMALL))


@pytest.mark.parametrize(
    ("first", "second", "later_s", "expected"),
    [
        # the first request writes the prefix, the same prefix plus a block reads it
        (body(BIG), body(BIG, SMALL), 60, CacheUsage(B, S)),
        # too short to cache: nothing written, nothing read
        (body(SMALL), body(SMALL, SMALL), 60, CacheUsage(0, 0)),
        # expired after five minutes
        (body(BIG), body(BIG, SMALL), TTL_S + 1, CacheUsage(0, B + S)),
        # a breakpoint is not part of the prefix: moving it keeps the hit
        (body(BIG, SMALL, marked=(0,)), body(BIG, SMALL, SMALL), 0, CacheUsage(B, 2 * S)),
        # a changed block before the breakpoint: a miss
        (body(BIG + "!"), body(BIG, SMALL), 0, CacheUsage(0, B + S)),
        # more than 20 blocks after the cached prefix: the hit is not found
        (body(BIG), body(BIG, *[SMALL] * 21), 0, CacheUsage(0, B + 21 * S)),
        # no breakpoint: no read and no write
        (body(BIG), body(BIG, SMALL, marked=()), 0, CacheUsage(0, 0)),
    ],
)
def test_the_emulated_prefix_cache(
    clock: Clock, first: dict[str, Any], second: dict[str, Any], later_s: float, expected: Any
) -> None:
    cache = PromptCache(clock)
    cache.account(first)
    clock.now += later_s
    assert cache.account(second) == expected


def marked(block: dict[str, Any]) -> dict[str, Any]:
    return {**block, "cache_control": EPHEMERAL}


Q = {"role": "user", "content": "q"}
NOW = {"role": "user", "content": "[now: Monday]\nnext"}
TEXT = {"type": "text", "text": "a"}
THINKING = {"type": "thinking", "thinking": "hm", "signature": "s"}
RESULT = {"type": "tool_result", "tool_use_id": "t1", "content": "x"}


@pytest.mark.parametrize(
    ("history", "expected"),
    [
        # a new prompt stays a string: the mark goes on the reply before it
        (
            [Q, {"role": "assistant", "content": [TEXT]}, NOW],
            [Q, {"role": "assistant", "content": [marked(TEXT)]}, NOW],
        ),
        # mid tool loop: on the last tool result
        (
            [Q, {"role": "user", "content": [RESULT, RESULT]}],
            [Q, {"role": "user", "content": [RESULT, marked(RESULT)]}],
        ),
        # neither on thinking nor on an empty text
        (
            [{"role": "assistant", "content": [TEXT, {"type": "text", "text": ""}, THINKING]}],
            [
                {
                    "role": "assistant",
                    "content": [marked(TEXT), {"type": "text", "text": ""}, THINKING],
                }
            ],
        ),
        # nothing to mark: only the prompt
        ([Q], [Q]),
        ([], []),
    ],
)
def test_with_breakpoint_marks_a_copy_of_the_last_block(
    history: list[dict[str, Any]], expected: list[dict[str, Any]]
) -> None:
    before = json.dumps(history)
    assert with_breakpoint(history) == expected
    assert json.dumps(history) == before  # the history itself is left as it is


def test_a_full_history_is_trimmed_with_room_to_grow(tmp_path: Path) -> None:
    """Cut one exchange a turn, the conversation would be other bytes from its start at every
    turn once full, and no turn would read it from the cache; cut with room, few turns do."""
    budget = 6000
    history = History(tmp_path / "conversation.json", budget)
    fronts = []
    for i in range(60):
        reply = {"role": "assistant", "content": [{"type": "text", "text": f"a{i} " + "y" * 150}]}
        history.save([*history.load(), {"role": "user", "content": f"q{i} " + "x" * 150}, reply])
        kept = history.load()
        assert len(json.dumps(kept)) <= budget and kept[-1] == reply
        fronts.append(kept[0]["content"])
    changed = sum(a != b for a, b in itertools.pairwise(fronts))
    assert 0 < changed <= 15  # a cut every four turns or so; one a turn made it 46
