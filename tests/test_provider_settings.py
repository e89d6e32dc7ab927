"""Provider settings: a group's chain of models, the credentials each provider needs (no
Anthropic key for the others, in `require_credential` and `doctor`), and the whole agent
path of `nanoclaw chat` against a fake OpenAI-compatible endpoint."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import cli_env
from fake_anthropic import FakeAnthropic
from fake_openai import FakeOpenAI

from nanoclaw.cli.doctor import check_credential
from nanoclaw.config import load_settings, require_credential, setting_names
from nanoclaw.errors import ConfigError
from nanoclaw.proxy.providers import Route, Target


@pytest.fixture
def openai_fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


def test_route_chain_entries() -> None:
    route = Route("openai", ("gpt-b", "anthropic:claude-c", "gpt-a", "llama3:8b"))
    assert route.chain("gpt-a") == (
        Target("openai", "gpt-a"),
        Target("openai", "gpt-b"),
        Target("anthropic", "claude-c"),
        Target("openai", "llama3:8b"),
    )


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    for name in setting_names():
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return monkeypatch


def test_other_providers_need_no_anthropic_key(env: pytest.MonkeyPatch) -> None:
    env.setenv("LLM_PROVIDER", "openai")
    with pytest.raises(ConfigError, match=r"^setting OPENAI_API_KEY"):
        require_credential(load_settings(env_file=None))
    env.setenv("OPENAI_API_KEY", "sk-x")
    require_credential(load_settings(env_file=None))
    env.setenv("LLM_PROVIDER", "openai-compatible")
    env.delenv("OPENAI_API_KEY")
    with pytest.raises(ConfigError, match=r"^setting LLM_BASE_URL"):
        require_credential(load_settings(env_file=None))
    env.setenv("LLM_BASE_URL", "http://127.0.0.1:8080/v1")
    require_credential(load_settings(env_file=None))


async def test_doctor_checks_the_providers_key_live(
    env: pytest.MonkeyPatch, openai_fake: FakeOpenAI
) -> None:
    """GET /models at the endpoint: the key refused, the model not listed, and both right."""
    env.setenv("LLM_PROVIDER", "openai")
    env.setenv("LLM_BASE_URL", openai_fake.base_url)
    env.setenv("NANOCLAW_MODEL", "gpt-5-mini")
    missing = await check_credential(load_settings(env_file=None))
    assert not missing.ok and "OPENAI_API_KEY" in missing.what
    openai_fake.api_key = "sk-right"
    env.setenv("OPENAI_API_KEY", "sk-wrong")
    wrong = await check_credential(load_settings(env_file=None))
    assert not wrong.ok and "refused the key" in wrong.what and "OPENAI_API_KEY" in wrong.fix
    assert "sk-wrong" not in wrong.what + wrong.fix
    env.setenv("OPENAI_API_KEY", "sk-right")
    env.setenv("NANOCLAW_MODEL", "gpt-nope")
    unlisted = await check_credential(load_settings(env_file=None))
    assert not unlisted.ok and "does not list the model gpt-nope" in unlisted.what
    env.setenv("NANOCLAW_MODEL", "gpt-5-mini")
    present = await check_credential(load_settings(env_file=None))
    assert present.ok and "accepts the key (model gpt-5-mini)" in present.what, present
    assert [r.headers.get("authorization") for r in openai_fake.requests][-1] == "Bearer sk-right"


def test_nanoclaw_chat_with_an_openai_compatible_endpoint(
    home: Path, fake: FakeAnthropic, openai_fake: FakeOpenAI
) -> None:
    """The whole agent path, in a sandbox: no Anthropic key, the bash tool's round trip
    translated both ways, the answer printed."""
    (home / ".env").unlink()
    openai_fake.api_key = None
    env = cli_env(
        home,
        LLM_PROVIDER="openai-compatible",
        LLM_BASE_URL=openai_fake.base_url,
        NANOCLAW_MODEL="llama3:8b",
        ANTHROPIC_BASE_URL=fake.base_url,
        AGENT_IDLE_TIMEOUT_S="5",
        POLL_INTERVAL_MS="50",
    )
    proc = subprocess.run(
        [sys.executable, "-m", "nanoclaw.cli.main", "chat"],
        input="@Andy please [[bash: echo translated-$((6*7))]]\n",
        env=env,
        cwd=home,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Andy: RESULT: exit code 0" in proc.stdout and "translated-42" in proc.stdout
    sent = openai_fake.requests
    assert len(sent) == 2 and {r.body["model"] for r in sent} == {"llama3:8b"}
    assert sent[1].body["messages"][-1]["role"] == "tool"
    assert fake.requests == []
