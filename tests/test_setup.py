"""`nanoclaw setup` as a real subprocess answered through a pipe, against the fake model and
Bot API, a real Prosody and a real Synapse: every credential is checked live, a refused one
is asked again, and .env is written with mode 0600 keeping what was there."""

from __future__ import annotations

import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import cli_env
from fake_anthropic import FakeAnthropic
from fake_openai import FakeOpenAI
from fake_telegram import FakeTelegram
from prosody import Prosody
from synapse import Synapse, running

from nanoclaw.config import load_settings

KEY = "sk-ant-right-key-2b7"
PW = "pw-for-the-bot-5a1"


def setup(home: Path, answers: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nanoclaw.cli.main", "setup"],
        input="".join(a + "\n" for a in answers),
        cwd=home,
        env=cli_env(home, **env),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def prosody(tmp_path: Path) -> Iterator[Prosody]:
    with Prosody(tmp_path / "prosody") as server:
        server.register("andy", PW)
        yield server


@pytest.fixture
def synapse(tmp_path: Path) -> Iterator[Synapse]:
    with running(tmp_path / "synapse", ("andy",), PW) as server:
        yield server


def test_setup_checks_each_credential_and_writes_a_private_env(
    tmp_path: Path, fake: FakeAnthropic, prosody: Prosody, synapse: Synapse
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    fake.api_key = KEY
    jid = prosody.jid("andy")
    with FakeTelegram() as tg:
        answers = [
            "sk-ant-wrong-key-9",  # refused: asked again
            KEY,
            tg.token,
            jid,
            "wrong-password-3",  # refused: asked again, the address kept
            "",
            PW,
            synapse.url,
            "andy",  # no server part: asked again
            "@andy:localhost",
            PW,
        ]
        proc = setup(
            home,
            answers,
            ANTHROPIC_BASE_URL=fake.base_url,
            TELEGRAM_API_URL=tg.base_url,
            XMPP_SERVER=f"127.0.0.1:{prosody.port}",
            XMPP_TLS="off",
        )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert out.count("not ok: the model endpoint") == 1 and "refused the key" in out
    assert f"ok: the model endpoint {fake.base_url} accepts the key" in out
    assert "ok: Telegram bot @andy_bot" in out
    assert f"not ok: XMPP refused {jid}" in out and f"ok: XMPP login as {jid}" in out
    assert "ok: Matrix login as @andy:localhost" in out
    assert "nanoclaw pair main" in out
    for secret in (KEY, "sk-ant-wrong-key-9", PW, "wrong-password-3", tg.token):
        assert secret not in out + proc.stderr  # answers from a pipe are not echoed
    assert [r.path for r in fake.requests] == ["/v1/messages/count_tokens"] * 2

    env = home / ".env"
    assert mode(env) == 0o600
    text = env.read_text()
    assert "# nanoclaw settings" in text  # started from .env.example, comments and all
    s = load_settings(env, ANTHROPIC_BASE_URL=fake.base_url)
    assert s.anthropic_api_key is not None and s.anthropic_api_key.get_secret_value() == KEY
    assert s.telegram_bot_token is not None
    assert s.telegram_bot_token.get_secret_value() == tg.token
    assert s.xmpp_jid == jid
    assert s.xmpp_password is not None and s.xmpp_password.get_secret_value() == PW
    assert (s.matrix_homeserver, s.matrix_user_id) == (synapse.url, "@andy:localhost")
    assert s.matrix_password is not None and s.matrix_password.get_secret_value() == PW


def test_setup_keeps_what_was_in_env(tmp_path: Path, fake: FakeAnthropic) -> None:
    env = tmp_path / ".env"
    env.write_text("# mine\nFOO_BAR=1\nANTHROPIC_API_KEY=" + KEY + "\nASSISTANT_NAME=Zed\n")
    env.chmod(0o644)
    fake.api_key = KEY
    proc = setup(tmp_path, ["", "", "", ""], ANTHROPIC_BASE_URL=fake.base_url)  # Enter: keep
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "accepts the key" in proc.stdout
    assert mode(env) == 0o600
    assert env.read_text() == f"# mine\nFOO_BAR=1\nANTHROPIC_API_KEY={KEY}\nASSISTANT_NAME=Zed\n"
    assert "nanoclaw pair" not in proc.stdout  # no chat network: the terminal is the way in
    assert "nanoclaw chat" in proc.stdout


def test_setup_without_answers_writes_nothing(tmp_path: Path, fake: FakeAnthropic) -> None:
    proc = setup(tmp_path, [], ANTHROPIC_BASE_URL=fake.base_url)
    assert proc.returncode == 1
    assert proc.stderr.strip() == "nanoclaw: setup stopped: no more answers; nothing was written"
    assert not (tmp_path / ".env").exists()
    assert [p.name for p in tmp_path.iterdir()] == []  # no temporary file left either


def test_setup_under_an_openai_compatible_provider_asks_for_its_url_and_key(
    tmp_path: Path,
) -> None:
    """LLM_PROVIDER set beforehand: setup asks the endpoint's base URL and key (no Anthropic
    key), checks them with GET /models, asks again after a refusal, and writes them."""
    with FakeOpenAI() as fake:
        fake.api_key = "sk-compat-right"
        answers = [fake.base_url, "sk-compat-wrong", fake.base_url, "sk-compat-right", "", "", ""]
        proc = setup(
            tmp_path, answers, LLM_PROVIDER="openai-compatible", NANOCLAW_MODEL="llama3:8b"
        )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "refused the key" in proc.stdout and "Anthropic" not in proc.stdout
    assert "accepts the key (model llama3:8b)" in proc.stdout
    assert "sk-compat-wrong" not in proc.stdout
    assert "LLM_PROVIDER=openai-compatible" in (tmp_path / ".env").read_text()
    settings = load_settings(tmp_path / ".env")
    assert settings.llm_base_url == fake.base_url
    assert settings.openai_api_key is not None
    assert settings.openai_api_key.get_secret_value() == "sk-compat-right"
    assert settings.llm_provider == "openai-compatible"  # written too: .env alone suffices
    assert not (settings.anthropic_api_key and settings.anthropic_api_key.get_secret_value())
