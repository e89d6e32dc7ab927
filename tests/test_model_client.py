"""The runner's stdlib model client against the fake Messages API: which answers it retries,
how long it waits (the waits are recorded, never slept), and what its errors say."""

from __future__ import annotations

from pathlib import Path

import pytest
from fake_anthropic import FakeAnthropic, Reply, error_reply, text_reply

from nanoclaw.agent.__main__ import describe_error
from nanoclaw.agent.model import ModelClient, ModelError

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
    assert first.headers["anthropic-version"] == "2023-06-01" and first.body == MSG
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
