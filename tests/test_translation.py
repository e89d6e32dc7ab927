"""Messages <-> Chat Completions, pure: a request's system, text, images, tool use and results,
tools and choice, parameters (and what is dropped); an answer whole and streamed (the stream,
assembled by the runner's own Assembler, is the whole answer), stop reasons and usage."""

from __future__ import annotations

import json
from typing import Any

import pytest

from nanoclaw.agent.model import Assembler
from nanoclaw.proxy.openai_request import chat_request
from nanoclaw.proxy.openai_stream import (
    StreamTranslator,
    error_json,
    message_json,
    messages_usage,
)

TOOL = {
    "name": "bash",
    "description": "Run a command",
    "input_schema": {"type": "object", "properties": {"command": {"type": "string"}}},
    "cache_control": {"type": "ephemeral"},
}
USAGE = {
    "prompt_tokens": 120,
    "completion_tokens": 30,
    "prompt_tokens_details": {"cached_tokens": 100},
}
PNG = {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}


def ask(**extra: Any) -> dict[str, Any]:
    return {"model": "m", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]} | (
        extra
    )


@pytest.mark.parametrize(
    "system",
    ["Be brief.", [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}]],
)
def test_the_system_prompt_is_a_system_message(system: object) -> None:
    request = chat_request(ask(system=system), "openai", "gpt-x")
    assert request["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hi"},
    ]
    assert request["model"] == "gpt-x"


@pytest.mark.parametrize(
    ("provider", "key"), [("openai", "max_completion_tokens"), ("openai-compatible", "max_tokens")]
)
def test_parameters_are_only_those_the_endpoint_documents(provider: Any, key: str) -> None:
    body = ask(
        temperature=0.2,
        top_p=0.9,
        top_k=5,
        stop_sequences=["END"],
        metadata={"user_id": "u"},
        thinking={"type": "enabled", "budget_tokens": 1024},
        stream=True,
    )
    request = chat_request(body, provider, "gpt-x")
    assert request == {
        "model": "gpt-x",
        "messages": [{"role": "user", "content": "hi"}],
        key: 100,
        "temperature": 0.2,
        "top_p": 0.9,
        "stop": ["END"],
        "stream": True,
        "stream_options": {"include_usage": True},
    }


def test_a_tool_round_trip_becomes_tool_calls_and_tool_messages() -> None:
    messages = [
        {"role": "user", "content": [{"type": "text", "text": "list files"}]},
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "hm", "signature": "s"},
                {"type": "text", "text": "Looking."},
                {"type": "tool_use", "id": "t1", "name": "bash", "input": {"command": "ls"}},
                {"type": "tool_use", "id": "t2", "name": "bash", "input": {"command": "pwd"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "t1", "content": "a\nb"},
                {
                    "type": "tool_result",
                    "tool_use_id": "t2",
                    "is_error": True,
                    "content": [{"type": "text", "text": "no such dir"}],
                },
                {"type": "text", "text": "and?"},
            ],
        },
    ]
    request = chat_request(ask(messages=messages, tools=[TOOL]), "openai", "gpt-x")

    def call(i: str, cmd: str) -> dict[str, Any]:
        arguments = json.dumps({"command": cmd})
        return {"id": i, "type": "function", "function": {"name": "bash", "arguments": arguments}}

    assert request["messages"] == [
        {"role": "user", "content": "list files"},
        {
            "role": "assistant",
            "content": "Looking.",
            "tool_calls": [call("t1", "ls"), call("t2", "pwd")],
        },
        {"role": "tool", "tool_call_id": "t1", "content": "a\nb"},
        {"role": "tool", "tool_call_id": "t2", "content": "[tool error] no such dir"},
        {"role": "user", "content": "and?"},
    ]
    assert request["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "bash",
                "parameters": TOOL["input_schema"],
                "description": "Run a command",
            },
        }
    ]


def test_images_become_image_url_parts() -> None:
    content = [
        {"type": "text", "text": "what is this?"},
        {"type": "image", "source": PNG},
        {"type": "image", "source": {"type": "url", "url": "https://example.org/a.jpg"}},
    ]
    request = chat_request(ask(messages=[{"role": "user", "content": content}]), "openai", "g")
    assert request["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "what is this?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                {"type": "image_url", "image_url": {"url": "https://example.org/a.jpg"}},
            ],
        }
    ]


@pytest.mark.parametrize(
    ("choice", "mapped"),
    [
        ({"type": "auto"}, "auto"),
        ({"type": "any"}, "required"),
        ({"type": "none"}, "none"),
        ({"type": "tool", "name": "bash"}, {"type": "function", "function": {"name": "bash"}}),
    ],
)
def test_tool_choice(choice: dict[str, Any], mapped: object) -> None:
    request = chat_request(ask(tools=[TOOL], tool_choice=choice), "openai", "g")
    assert request["tool_choice"] == mapped
    assert "parallel_tool_calls" not in request


def test_server_tools_and_a_choice_without_tools_are_dropped() -> None:
    web_search = {"type": "web_search_20250305", "name": "web_search"}
    request = chat_request(ask(tools=[web_search], tool_choice={"type": "any"}), "openai", "g")
    assert "tools" not in request and "tool_choice" not in request


def chunks_of(text: str, calls: list[tuple[str, str, str]], finish: str) -> list[dict[str, Any]]:
    """A completion's stream as the API sends it: text in pieces, each call's arguments in
    pieces after its head, the finish reason, then the usage chunk."""

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {
            "id": "c1",
            "model": "gpt-x",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }

    out = [chunk({"role": "assistant", "content": ""})]
    out += [chunk({"content": text[i : i + 4]}) for i in range(0, len(text), 4)]
    for n, (cid, name, args) in enumerate(calls):
        out.append(
            chunk(
                {
                    "tool_calls": [
                        {"index": n, "id": cid, "function": {"name": name, "arguments": ""}}
                    ]
                }
            )
        )
        out += [
            chunk({"tool_calls": [{"index": n, "function": {"arguments": args[i : i + 5]}}]})
            for i in range(0, len(args), 5)
        ]
    out.append(chunk({}, finish))
    usage = USAGE
    out.append({"id": "c1", "model": "gpt-x", "choices": [], "usage": usage})
    return out


def whole(text: str, calls: list[tuple[str, str, str]], finish: str) -> dict[str, Any]:
    tool_calls = [
        {"id": cid, "type": "function", "function": {"name": name, "arguments": args}}
        for cid, name, args in calls
    ]
    message = {"role": "assistant", "content": text or None, "tool_calls": tool_calls or None}
    usage = USAGE
    return {
        "id": "c1",
        "model": "gpt-x",
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": usage,
    }


CASES = [
    ("Hello there, how are you?", [], "stop", "end_turn"),
    ("", [("call_1", "bash", '{"command": "ls -la"}')], "tool_calls", "tool_use"),
    (
        "Two at once.",
        [("call_1", "bash", '{"command": "ls"}'), ("call_2", "send", '{"text": "hi"}')],
        "tool_calls",
        "tool_use",
    ),
    ("cut", [], "length", "max_tokens"),
    ("", [], "content_filter", "refusal"),
]


@pytest.mark.parametrize(("text", "calls", "finish", "stop"), CASES)
def test_a_stream_assembles_to_the_whole_answer(
    text: str, calls: list[tuple[str, str, str]], finish: str, stop: str
) -> None:
    translator = StreamTranslator("m")
    events = [e for c in chunks_of(text, calls, finish) for e in translator.feed(c)]
    events += translator.finish()
    assembler = Assembler()
    for name, data in events:
        assembler.feed(name, {"type": name, **data})
    streamed = assembler.reply()
    answer = message_json(whole(text, calls, finish), "m")
    assert streamed == answer
    assert answer["stop_reason"] == stop
    assert [b["type"] for b in answer["content"]] == ["text"] * bool(text) + ["tool_use"] * len(
        calls
    )
    if calls:
        assert answer["content"][-1]["input"] == json.loads(calls[-1][2])
    assert answer["usage"] == {
        "input_tokens": 20,
        "output_tokens": 30,
        "cache_read_input_tokens": 100,
        "cache_creation_input_tokens": 0,
    }
    names = [n for n, _ in events]
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]
    assert names.count("content_block_start") == names.count("content_block_stop")


def test_arguments_that_are_not_an_object_reach_the_agent_as_text() -> None:
    answer = message_json(whole("", [("c", "bash", "not json")], "tool_calls"), "m")
    assert answer["content"][0]["input"] == {"_arguments": "not json"}


@pytest.mark.parametrize(
    ("usage", "counts"),
    [
        (None, {"input_tokens": 0, "output_tokens": 0}),
        (
            {"prompt_tokens": 10, "completion_tokens": 3},
            {"input_tokens": 10, "output_tokens": 3, "cache_read_input_tokens": 0},
        ),
    ],
)
def test_usage_without_details(usage: object, counts: dict[str, int]) -> None:
    assert messages_usage(usage).items() >= counts.items()


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (429, "rate_limit_error"),
        (500, "api_error"),
        (503, "api_error"),
        (422, "invalid_request_error"),
    ],
)
def test_errors_are_anthropic_errors(status: int, kind: str) -> None:
    assert error_json(status, "m") == {"type": "error", "error": {"type": kind, "message": "m"}}
