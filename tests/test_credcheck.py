"""Live credential checks against real servers: the fake model and Bot API (real protocol),
a real Prosody and a real Synapse. "ok" only when the call worked; otherwise what is wrong,
and never the secret itself."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import settings_for
from fake_anthropic import FakeAnthropic
from fake_telegram import FakeTelegram
from prosody import Prosody
from synapse import Synapse, running

from nanoclaw.cli import credcheck
from nanoclaw.cli.credcheck import Verdict
from nanoclaw.cli.doctor import check_channels

KEY = "sk-ant-right-key-7d3a"
PW = "secret-pw-81c2"


def closed_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def no_secret(verdict: Verdict, *secrets: str) -> Verdict:
    text = verdict.what + verdict.fix
    assert not any(s in text for s in secrets), text
    return verdict


async def test_model_key(fake: FakeAnthropic) -> None:
    fake.api_key = KEY
    ok = await credcheck.model_key(fake.base_url, KEY, "claude-x")
    assert ok.ok and "accepts the key" in ok.what, ok
    assert fake.requests[-1].path == "/v1/messages/count_tokens"
    assert fake.requests[-1].api_key == KEY

    wrong = no_secret(await credcheck.model_key(fake.base_url, "sk-ant-wrong-key", "m"), "wrong")
    assert wrong.status == "refused"
    assert "refused the key" in wrong.what and "authentication_error" in wrong.what
    assert "ANTHROPIC_API_KEY" in wrong.fix

    gone = await credcheck.model_key(closed_url(), KEY, "m", timeout=5)
    assert gone.status == "unreachable" and gone.what.startswith(
        "cannot reach the model endpoint http://127.0.0.1"
    )
    assert "ANTHROPIC_BASE_URL" in gone.fix


@pytest.mark.parametrize(
    ("status", "body", "verdict", "words"),
    [
        (200, {"input_tokens": 3}, "ok", "accepts the key"),
        (429, None, "ok", "rate-limited"),
        (403, {"error": {"type": "permission_error", "message": "no"}}, "refused", "refused"),
        (404, {"error": {"type": "not_found_error", "message": "model: m-9"}}, "failed", "know"),
        (404, "<html>", "failed", "answered 404"),
        (529, {"error": {"type": "overloaded_error", "message": "\x1b[2Jbusy"}}, "failed", "529"),
    ],
)
def test_model_verdict(status: int, body: object, verdict: str, words: str) -> None:
    v = credcheck.model_verdict("http://m", "m-9", status, body)
    assert v.status == verdict and words in v.what
    assert "\x1b" not in v.what  # outside text is shown escaped


async def test_telegram_token() -> None:
    with FakeTelegram() as tg:
        ok = await credcheck.telegram_token(tg.base_url, tg.token)
        wrong = await credcheck.telegram_token(tg.base_url, "123:wrong-token")
    assert ok.ok and ok.what == "Telegram bot @andy_bot"
    assert no_secret(wrong, "wrong-token").status == "refused"
    assert "TELEGRAM_BOT_TOKEN" in wrong.fix
    gone = await credcheck.telegram_token(closed_url(), "123:tok-secret", timeout=5)
    assert no_secret(gone, "tok-secret").status == "unreachable"


@pytest.fixture
def prosody(tmp_path: Path) -> Iterator[Prosody]:
    with Prosody(tmp_path / "prosody") as server:
        server.register("andy", PW)
        yield server


async def test_xmpp_login(prosody: Prosody) -> None:
    where = dict(server=f"127.0.0.1:{prosody.port}", tls="off", timeout=10)
    ok = await credcheck.xmpp_login(prosody.jid("andy"), PW, **where)  # type: ignore[arg-type]
    assert ok.ok and ok.what == f"XMPP login as {prosody.jid('andy')}"
    wrong = await credcheck.xmpp_login(prosody.jid("andy"), "bad-pw-7", **where)  # type: ignore[arg-type]
    assert no_secret(wrong, "bad-pw-7").status == "refused"
    assert "XMPP_PASSWORD" in wrong.fix
    port = closed_url().rsplit(":", 1)[1]
    gone = await credcheck.xmpp_login(
        prosody.jid("andy"), PW, server=f"127.0.0.1:{port}", tls="off", timeout=10
    )
    assert gone.status == "unreachable" and f"127.0.0.1:{port}" in gone.what
    # STARTTLS required against a server without TLS: no login over plain text
    plain = await credcheck.xmpp_login(
        prosody.jid("andy"), PW, server=f"127.0.0.1:{prosody.port}", timeout=10
    )
    assert not plain.ok


async def test_doctor_logs_in_to_each_enabled_channel(
    tmp_path: Path, prosody: Prosody, synapse: Synapse
) -> None:
    synapse.register("bot", PW)
    settings = settings_for(
        tmp_path,
        "http://127.0.0.1:9",
        XMPP_JID=prosody.jid("andy"),
        XMPP_PASSWORD="bad-pw-7",
        XMPP_SERVER=f"127.0.0.1:{prosody.port}",
        XMPP_TLS="off",
        MATRIX_HOMESERVER=synapse.url,
        MATRIX_USER_ID=synapse.user_id("bot"),
        MATRIX_PASSWORD=PW,
    )
    checks = {c.what: c for c in await check_channels(settings)}
    assert not checks[f"XMPP refused {prosody.jid('andy')}"].ok
    assert checks[f"Matrix login as {synapse.user_id('bot')} on {synapse.url}"].ok


@pytest.fixture(scope="module")
def synapse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Synapse]:
    with running(tmp_path_factory.mktemp("synapse")) as server:
        yield server


async def test_matrix_login(synapse: Synapse) -> None:
    token = synapse.register("andy", PW)
    synapse.register("other", PW)
    me = synapse.user_id("andy")
    by_password = await credcheck.matrix_login(synapse.url, me, password=PW)
    assert by_password.ok and by_password.what == f"Matrix login as {me} on {synapse.url}"
    by_token = await credcheck.matrix_login(synapse.url, me, token=token)
    assert by_token.ok
    wrong = await credcheck.matrix_login(synapse.url, me, password="bad-pw-7")
    assert no_secret(wrong, "bad-pw-7").status == "refused" and "MATRIX_PASSWORD" in wrong.fix
    bad_token = await credcheck.matrix_login(synapse.url, me, token="syt_bad_token_9")
    assert no_secret(bad_token, "syt_bad_token_9").status == "refused"
    other = await credcheck.matrix_login(synapse.url, synapse.user_id("other"), token=token)
    assert not other.ok and f"is for {me}" in other.what  # someone else's token
    gone = await credcheck.matrix_login(closed_url(), me, password=PW, timeout=5)
    assert gone.status == "unreachable"
