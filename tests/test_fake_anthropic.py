"""Tests for the fake Anthropic Messages API, driven through the real `anthropic` SDK."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import anthropic
import pytest
from fake_anthropic import (
    FakeAnthropic,
    Reply,
    directive_reply,
    error_reply,
    text_reply,
    tool_reply,
    tools_reply,
)

MODEL = "claude-test-model"


@pytest.fixture
def fake() -> Iterator[FakeAnthropic]:
    with FakeAnthropic() as f:
        yield f


def client(fake: FakeAnthropic, key: str = "k") -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=fake.base_url, api_key=key, max_retries=0)


def ask(fake: FakeAnthropic, content: Any) -> anthropic.types.Message:
    msgs: list[anthropic.types.MessageParam] = [{"role": "user", "content": content}]
    with client(fake) as c:
        return c.messages.create(model=MODEL, max_tokens=100, messages=msgs)


def only_text(msg: anthropic.types.Message) -> str:
    assert len(msg.content) == 1
    block = msg.content[0]
    assert block.type == "text"
    return block.text


def test_plain_echo_of_last_xml_line(fake: FakeAnthropic) -> None:
    prompt = (
        '<messages>\n<message sender="a" time="t1">first</message>\n'
        '<message sender="b" time="t2">hello &amp; bye</message>\n</messages>\n'
    )
    msg = ask(fake, prompt)
    assert only_text(msg) == "echo: hello & bye"
    assert msg.stop_reason == "end_turn"
    assert msg.model == MODEL
    assert msg.role == "assistant"
    assert msg.id.startswith("msg_")
    assert msg.usage.input_tokens > 0 and msg.usage.output_tokens > 0


def test_bash_directive_yields_tool_use(fake: FakeAnthropic) -> None:
    msg = ask(fake, '<message sender="x">please [[bash: ls]]</message>')
    assert msg.stop_reason == "tool_use"
    [block] = msg.content
    assert block.type == "tool_use"
    assert block.name == "bash"
    assert block.input == {"command": "ls"}
    assert block.id.startswith("toolu_")


def test_multiple_directives_in_order(fake: FakeAnthropic) -> None:
    text = (
        "[[say: working]] [[bash: [[ -f x ]] &amp;&amp; echo y]] "
        '[[tool send_message {"text": "hi", "n": [[1]]}]]'
    )
    msg = ask(fake, [{"type": "text", "text": text}])
    assert msg.stop_reason == "tool_use"
    assert [b.type for b in msg.content] == ["text", "tool_use", "tool_use"]
    first, bash, tool = msg.content
    assert first.type == "text" and first.text == "working"
    assert bash.type == "tool_use" and bash.input == {"command": "[[ -f x ]] && echo y"}
    assert tool.type == "tool_use" and tool.name == "send_message"
    assert tool.input == {"text": "hi", "n": [[1]]}
    assert bash.id != tool.id


def test_say_directive(fake: FakeAnthropic) -> None:
    msg = ask(fake, "<message>[[say: Hello there!]]</message>")
    assert only_text(msg) == "Hello there!"
    assert msg.stop_reason == "end_turn"


def test_tool_result_round_trip(fake: FakeAnthropic) -> None:
    c = client(fake)
    first = c.messages.create(
        model=MODEL, max_tokens=100, messages=[{"role": "user", "content": "[[bash: ls]]"}]
    )
    tool_use = first.content[0]
    assert tool_use.type == "tool_use"
    second = c.messages.create(
        model=MODEL,
        max_tokens=100,
        messages=[
            {"role": "user", "content": "[[bash: ls]]"},
            {"role": "assistant", "content": first.content},
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": tool_use.id, "content": "a.txt"},
                    {
                        "type": "tool_result",
                        "tool_use_id": "toolu_x",
                        "content": [{"type": "text", "text": "b"}, {"type": "text", "text": "c"}],
                    },
                ],
            },
        ],
    )
    assert only_text(second) == "RESULT: a.txt\nbc"
    assert second.stop_reason == "end_turn"
    sent = fake.requests[1].body["messages"]
    assert sent[1]["content"][0]["id"] == tool_use.id  # SDK sent the tool_use back


def test_script_fifo_takes_priority(fake: FakeAnthropic) -> None:
    fake.script(text_reply("one", output_tokens=7), tool_reply("bash", {"command": "pwd"}))
    fake.responder = lambda body: text_reply("from responder")
    first = ask(fake, "[[say: ignored]]")
    assert only_text(first) == "one"
    assert first.usage.output_tokens == 7
    second = ask(fake, "[[say: ignored]]")
    assert second.content[0].type == "tool_use"
    assert second.content[0].input == {"command": "pwd"}
    assert only_text(ask(fake, "[[say: ignored]]")) == "from responder"  # script exhausted
    fake.responder = None
    assert only_text(ask(fake, "[[say: directive]]")) == "directive"


def test_responder_can_delegate_to_directives(fake: FakeAnthropic) -> None:
    seen: list[str] = []

    def responder(body: dict[str, Any]) -> Reply:
        seen.append(body["model"])
        return directive_reply(body)

    fake.responder = responder
    assert only_text(ask(fake, "hi")) == "echo: hi"
    assert seen == [MODEL]


def test_tools_reply_and_leading_text(fake: FakeAnthropic) -> None:
    fake.script(tools_reply([("a", {"x": 1}), ("b", {})]), tool_reply("c", {}, text="thinking"))
    multi = ask(fake, "x")
    assert [(b.type, getattr(b, "name", None)) for b in multi.content] == [
        ("tool_use", "a"),
        ("tool_use", "b"),
    ]
    lead = ask(fake, "x")
    assert [b.type for b in lead.content] == ["text", "tool_use"]
    assert lead.stop_reason == "tool_use"


@pytest.mark.parametrize(
    ("status", "exc"),
    [
        (500, anthropic.InternalServerError),
        (429, anthropic.RateLimitError),
        (529, anthropic.OverloadedError),  # subclass of InternalServerError
    ],
)
def test_fail_directive_raises_sdk_error(
    fake: FakeAnthropic, status: int, exc: type[anthropic.APIStatusError]
) -> None:
    with pytest.raises(exc) as info:
        ask(fake, f"[[fail: {status}]]")
    assert info.value.status_code == status
    assert isinstance(info.value.body, dict)
    assert info.value.body["type"] == "error"
    expected = {500: "api_error", 429: "rate_limit_error", 529: "overloaded_error"}[status]
    assert info.value.body["error"]["type"] == expected


def test_error_reply_headers_and_retry(fake: FakeAnthropic) -> None:
    fake.script(error_reply(529, "overloaded_error", "busy", headers={"retry-after": "0"}))
    c = anthropic.Anthropic(base_url=fake.base_url, api_key="k", max_retries=1)
    msg = c.messages.create(model=MODEL, max_tokens=10, messages=[{"role": "user", "content": "x"}])
    assert only_text(msg) == "echo: x"
    assert len(fake.requests) == 2  # the SDK retried after the scripted 529


def test_unknown_path_is_404_with_error_json(fake: FakeAnthropic) -> None:
    req = urllib.request.Request(fake.base_url + "/v1/complete", data=b"{}", method="POST")
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(req, timeout=5)
    assert info.value.code == 404
    err = json.loads(info.value.read())
    assert err["type"] == "error"
    assert err["error"]["type"] == "not_found_error"
    assert fake.requests[0].path == "/v1/complete"


def test_recorded_headers_and_body(fake: FakeAnthropic) -> None:
    before = time.time()
    client(fake, key="sk-real-key").messages.create(
        model=MODEL, max_tokens=5, system="sys", messages=[{"role": "user", "content": "q"}]
    )
    [rec] = fake.requests
    assert rec.path == "/v1/messages"
    # anthropic SDK 2.x sends the key as `authorization: Bearer`; older ones as `x-api-key`.
    assert rec.api_key == "sk-real-key"
    sent = (rec.headers.get("x-api-key", ""), rec.headers.get("authorization", ""))
    assert any("sk-real-key" in h for h in sent)
    assert "anthropic-version" in rec.headers
    assert rec.body["system"] == "sys"
    assert rec.body["messages"] == [{"role": "user", "content": "q"}]
    assert before <= rec.at <= time.time()


def test_sleep_directive_delays(fake: FakeAnthropic) -> None:
    start = time.monotonic()
    msg = ask(fake, "[[sleep: 0.3]][[say: late]]")
    assert time.monotonic() - start >= 0.3
    assert only_text(msg) == "late"


def test_reset_clears_everything(fake: FakeAnthropic) -> None:
    fake.script(text_reply("scripted"))
    fake.responder = lambda body: text_reply("r")
    fake.reset()
    assert fake.requests == []
    assert fake.responder is None
    assert only_text(ask(fake, "[[say: default]]")) == "default"


def test_recorded_api_key_from_x_api_key_header(fake: FakeAnthropic) -> None:
    c = anthropic.Anthropic(
        base_url=fake.base_url,
        api_key="ignored",
        max_retries=0,
        default_headers={"x-api-key": "sk-x"},
    )
    c.messages.create(model=MODEL, max_tokens=5, messages=[{"role": "user", "content": "q"}])
    assert fake.requests[0].headers["x-api-key"] == "sk-x"
    assert fake.requests[0].api_key == "sk-x"


def test_wait_for_requests_timeout(fake: FakeAnthropic) -> None:
    ask(fake, "x")
    assert len(fake.wait_for_requests(1, timeout=1)) == 1
    start = time.monotonic()
    with pytest.raises(TimeoutError, match="wanted >= 2 requests"):
        fake.wait_for_requests(2, timeout=0.2)
    assert time.monotonic() - start >= 0.2


def test_start_stop_without_context_manager() -> None:
    fake = FakeAnthropic().start()
    try:
        assert fake.base_url.startswith("http://127.0.0.1:")
        assert only_text(ask(fake, "ping")) == "echo: ping"
    finally:
        fake.stop()
    with pytest.raises(anthropic.APIConnectionError):
        ask(fake, "ping")


async def test_async_client(fake: FakeAnthropic) -> None:
    async with anthropic.AsyncAnthropic(base_url=fake.base_url, api_key="k", max_retries=0) as c:
        msg = await c.messages.create(
            model=MODEL, max_tokens=10, messages=[{"role": "user", "content": "[[bash: pwd]]"}]
        )
    assert msg.content[0].type == "tool_use"
    assert msg.content[0].input == {"command": "pwd"}
    recs = await fake.await_requests(1, timeout=1)
    assert recs[0].api_key == "k"
    with pytest.raises(TimeoutError):
        await fake.await_requests(2, timeout=0.1)


async def test_async_concurrent_sleeps_overlap(fake: FakeAnthropic) -> None:
    async with anthropic.AsyncAnthropic(base_url=fake.base_url, api_key="k", max_retries=0) as c:

        async def one(word: str) -> str:
            msg = await c.messages.create(
                model=MODEL,
                max_tokens=10,
                messages=[{"role": "user", "content": f"[[sleep: 0.4]] [[say: {word}]]"}],
            )
            block = msg.content[0]
            assert block.type == "text"
            return block.text

        start = time.monotonic()
        words = await asyncio.gather(one("a"), one("b"), one("c"))
        elapsed = time.monotonic() - start
    assert list(words) == ["a", "b", "c"]
    assert 0.4 <= elapsed < 1.0  # the server handles requests concurrently


@pytest.mark.parametrize(
    "reply",
    [
        text_reply("streamed " * 40),
        tool_reply("bash", {"command": "ls -la", "n": [1, {"k": None}]}, text="Let me look."),
        Reply(({"type": "thinking", "thinking": "hm " * 50, "signature": "c2ln"},)),
    ],
    ids=["text", "tool", "thinking"],
)
def test_a_streamed_answer_is_what_the_sdk_assembles(fake: FakeAnthropic, reply: Reply) -> None:
    """The SDK's own stream helper puts the fake's events back into the same message."""
    fake.script(reply)
    msgs: list[anthropic.types.MessageParam] = [{"role": "user", "content": "hi"}]
    with client(fake) as c, c.messages.stream(model=MODEL, max_tokens=100, messages=msgs) as s:
        kinds = {event.type for event in s}
        message = s.get_final_message()
    assert {"message_start", "content_block_delta", "message_delta", "message_stop"} <= kinds
    assert [block.model_dump(exclude_none=True) for block in message.content] == [
        {k: v for k, v in block.items() if v is not None} for block in reply.content
    ]
    assert message.stop_reason == reply.stop_reason
    usage = message.usage
    assert usage.input_tokens == fake.usages[-1]["input_tokens"] > 0
    assert usage.output_tokens == fake.usages[-1]["output_tokens"] > 0
    assert fake.requests[-1].body["stream"] is True
