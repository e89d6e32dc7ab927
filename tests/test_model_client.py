"""The runner's stdlib model client against the fake Messages API: which answers it retries,
how long it waits (the waits are recorded, never slept), what its errors say, and how it
puts a streamed reply back together (text, tool input in chunks, thinking, error events,
a stream cut short)."""

from __future__ import annotations

from pathlib import Path

import pytest
from fake_anthropic import FakeAnthropic, Reply, error_reply, text_reply, tool_reply
from fake_stream import message_events

from nanoclaw.agent.__main__ import describe_error
from nanoclaw.agent.model import Assembler, ModelClient, ModelError

OK = text_reply("fine")
MSG = {"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "q"}]}


@pytest.mark.parametrize(
    ("replies", "requests", "waits", "status"),
    [
        ([OK], 1, [], None),
        ([error_reply(529, "overloaded_error"), OK], 2, [(0.375, 0.5)], None),
        ([error_reply(429, headers={"retry-after": "2"}), OK], 2, [(2.0, 2.0)], None),
        ([error_reply(503, headers={"retry-after": "3600"}), OK], 2, [(0.375, 0.5)], None),
        ([error_reply(500, headers={"x-should-retry": "false"})], 1, [], 500),
        ([error_reply(400, headers={"x-should-retry": "true"}), OK], 2, [(0.375, 0.5)], None),
        ([error_reply(400, "invalid_request_error")], 1, [], 400),
        ([error_reply(401, "authentication_error")], 1, [], 401),
        ([error_reply(500)] * 3, 3, [(0.375, 0.5), (0.75, 1.0)], 500),
    ],
)
def test_retries_follow_the_answer(
    fake: FakeAnthropic,
    replies: list[Reply],
    requests: int,
    waits: list[tuple[float, float]],
    status: int | None,
) -> None:
    slept: list[float] = []
    client = ModelClient(fake.base_url, max_retries=2, sleep=slept.append)
    fake.script(*replies)
    if status is None:
        reply = client.create(**MSG)
        assert reply["content"] == [{"type": "text", "text": "fine"}]
        assert reply["stop_reason"] == "end_turn" and reply["usage"]["output_tokens"] > 0
    else:
        with pytest.raises(ModelError) as info:
            client.create(**MSG)
        assert info.value.status == status and "\n" not in describe_error(info.value)
    assert len(fake.requests) == requests
    assert len(slept) == len(waits)
    assert all(low <= s <= high for s, (low, high) in zip(slept, waits, strict=True))
    first = fake.requests[0]
    assert first.headers["anthropic-version"] == "2023-06-01"
    assert first.body == {**MSG, "stream": True}
    assert first.api_key is None  # the sandbox has no key: the host's proxy adds it


def test_an_unreachable_proxy_or_a_slow_one_is_a_connection_error(
    tmp_path: Path, fake: FakeAnthropic
) -> None:
    slept: list[float] = []
    missing = ModelClient(tmp_path / "llm.sock", max_retries=1, sleep=slept.append)
    with pytest.raises(ModelError) as info:
        missing.create(**MSG)
    assert info.value.status is None and len(slept) == 1
    assert describe_error(info.value) == "model: cannot reach the model proxy (FileNotFoundError)"
    fake.script(Reply(delay=5.0))
    slow = ModelClient(fake.base_url, max_retries=0, timeout=0.2)
    with pytest.raises(ModelError) as info:
        slow.create(**MSG)
    assert info.value.status is None and "cannot reach the model proxy" in describe_error(
        info.value
    )


THINKING = {"type": "thinking", "thinking": "Let me think. " * 20, "signature": "c2lnbmF0dXJl"}
LONG_TOOL = tool_reply("bash", {"command": "echo " + "x" * 200, "n": [1, 2, {"k": None}]})


@pytest.mark.parametrize(
    "reply",
    [
        text_reply("a streamed answer, " * 30),
        LONG_TOOL,
        Reply((THINKING, {"type": "text", "text": "so: yes"})),
    ],
    ids=["text", "tool_use", "thinking"],
)
def test_a_streamed_reply_is_the_message_whole(fake: FakeAnthropic, reply: Reply) -> None:
    fake.script(reply)
    got = ModelClient(fake.base_url, max_retries=0).create(**MSG)
    assert got["content"] == list(reply.content)
    assert got["stop_reason"] == reply.stop_reason and got["role"] == "assistant"
    assert got["usage"] == fake.usages[-1]  # input from message_start, output from message_delta
    assert fake.requests[0].headers["accept"] == "text/event-stream"


@pytest.mark.parametrize(
    ("first", "requests", "status"),
    [
        (Reply(error_event="overloaded_error"), 2, None),
        (Reply(error_event="api_error"), 2, None),
        (Reply(error_event="invalid_request_error"), 1, 400),
        (Reply(text_reply("cut").content, cut_after=4), 2, None),  # mid-text
        (Reply(LONG_TOOL.content, cut_after=8), 2, None),  # before message_stop
    ],
    ids=["overloaded", "api_error", "invalid", "cut-mid-text", "cut-at-the-end"],
)
def test_an_error_event_or_a_cut_stream_is_retried_when_worth_it(
    fake: FakeAnthropic, first: Reply, requests: int, status: int | None
) -> None:
    slept: list[float] = []
    client = ModelClient(fake.base_url, max_retries=2, sleep=slept.append)
    fake.script(first, OK)
    if status is None:
        assert client.create(**MSG)["content"] == [{"type": "text", "text": "fine"}]
    else:
        with pytest.raises(ModelError) as info:
            client.create(**MSG)
        assert info.value.status == status and not info.value.retryable
    assert len(fake.requests) == requests and len(slept) == requests - 1


def test_assembly_of_events_and_a_stream_without_its_end() -> None:
    message = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "m",
        "content": [THINKING, LONG_TOOL.content[0], {"type": "text", "text": ""}],
        "stop_reason": "tool_use",
        "stop_sequence": None,
        "usage": {"input_tokens": 7, "output_tokens": 9, "cache_read_input_tokens": 3},
    }
    events = message_events(message)
    whole = Assembler()
    for name, data in events:
        whole.feed(name, {"type": name, **data})
    assert whole.reply() == message
    cited = Assembler()
    cite = {"type": "char_location", "cited_text": "x"}
    citation = {"type": "citations_delta", "citation": cite}
    for name, data in [
        *events[:2],
        ("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}),
        ("content_block_delta", {"index": 0, "delta": citation}),
        ("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": "x"}}),
        ("content_block_stop", {"index": 0}),
        *events[-2:],
    ]:
        cited.feed(name, {"type": name, **data})
    assert cited.reply()["content"] == [{"type": "text", "text": "x", "citations": [cite]}]
    cut = Assembler()
    for name, data in events[:-1]:  # no message_stop
        cut.feed(name, {"type": name, **data})
    with pytest.raises(ModelError) as info:
        cut.reply()
    assert info.value.retryable and info.value.kind == "incomplete_reply"
