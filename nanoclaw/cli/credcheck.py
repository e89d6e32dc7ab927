"""Live credential checks: one cheap real call per credential, each with a short timeout.

`nanoclaw doctor` and `nanoclaw setup` both use them. A check says "ok" only when the call
worked; otherwise it names what is wrong (the key was refused, the server cannot be reached)
and the fix. No secret ever appears in what a check says.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from aiohttp import ClientConnectorError, ClientError, ClientSession, ClientTimeout
from yarl import URL

from nanoclaw.display import printable_line
from nanoclaw.settingvalues import OPENAI_URL

TIMEOUT_S = 10.0
API_VERSION = "2023-06-01"
MATRIX_API = "/_matrix/client/v3"
Status = Literal["ok", "refused", "unreachable", "failed"]


@dataclass(frozen=True)
class Verdict:
    status: Status
    what: str
    fix: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def said(text: object, *secrets: str, limit: int = 200) -> str:
    """Outside text made one short printable line, with every secret blanked out."""
    line = " ".join(str(text).split())
    for secret in secrets:
        if secret:
            line = line.replace(secret, "<secret>")
    return printable_line(line[:limit])


def api_error(body: Any) -> str:
    """`type: message` from an Anthropic or Matrix error body, else ''."""
    if not isinstance(body, dict):
        return ""
    err = body.get("error")
    if isinstance(err, dict):  # Anthropic: {"type": "error", "error": {"type", "message"}}
        return f"{err.get('type', '')}: {err.get('message', '')}".strip(": ")
    code, text = body.get("errcode", ""), body.get("error", "") or body.get("description", "")
    return f"{code}: {text}".strip(": ")  # Matrix (errcode, error), Telegram (description)


def public(url: str, path: bool = True) -> str:
    """A URL as shown: never with a user:password@ in it; only its origin if not `path`."""
    try:
        parsed = URL(url)
        return str(parsed.with_user(None) if path else parsed.origin())
    except ValueError:
        return "a URL that cannot be used"


async def _call(
    method: str, url: str, secrets: tuple[str, ...], timeout: float, label: str, **kw: Any
) -> tuple[int, Any] | Verdict:
    """(status, JSON body or None), or the verdict of a call that got no answer."""
    where = f"{label} {public(url, path=False)}"
    try:
        async with (
            ClientSession(timeout=ClientTimeout(total=timeout)) as session,
            session.request(method, url, **kw) as resp,
        ):
            try:
                body = await resp.json(content_type=None)
            except ValueError:
                body = None
            return resp.status, body
    except TimeoutError:
        return Verdict("unreachable", f"{where} did not answer within {timeout:.0f}s")
    except ClientConnectorError as exc:
        return Verdict("unreachable", f"cannot reach {where}: {said(exc, *secrets)}")
    except (ClientError, ValueError) as exc:  # ValueError: a URL aiohttp cannot use
        return Verdict("unreachable", f"{where}: {said(exc, *secrets) or type(exc).__name__}")


def model_verdict(url: str, model: str, status: int, body: Any) -> Verdict:
    """Pure: what an answer of the model endpoint to count_tokens says about key and model."""
    detail = said(api_error(body) or f"HTTP {status}")
    fix = "check ANTHROPIC_API_KEY (a key from https://console.anthropic.com)"
    if status == 200:
        return Verdict("ok", f"the model endpoint {url} accepts the key (model {model})")
    if status == 429:
        return Verdict("ok", f"the model endpoint {url} accepts the key (rate-limited now)")
    if status in (401, 403):
        return Verdict("refused", f"the model endpoint {url} refused the key ({detail})", fix)
    if status == 404 and model in detail:
        what = f"the model endpoint {url} does not know the model {model} ({detail})"
        return Verdict("failed", what, "set NANOCLAW_MODEL to a model it offers")
    what = f"the model endpoint {url} answered {status} ({detail})"
    return Verdict("failed", what, "check ANTHROPIC_BASE_URL (an Anthropic-compatible endpoint)")


async def model_key(base_url: str, key: str, model: str, timeout: float = TIMEOUT_S) -> Verdict:
    """count_tokens (free) with the key: it checks the key and the model name at once."""
    url = base_url.rstrip("/")
    headers = {"x-api-key": key, "anthropic-version": API_VERSION}
    body = {"model": model, "messages": [{"role": "user", "content": "ping"}]}
    answer = await _call(
        "POST",
        f"{url}/v1/messages/count_tokens",
        (key,),
        timeout,
        "the model endpoint",
        json=body,
        headers=headers,
    )
    if isinstance(answer, Verdict):
        return Verdict(answer.status, answer.what, "check ANTHROPIC_BASE_URL and the network")
    return model_verdict(public(url), model, *answer)


async def openai_key(
    base_url: str | None, key: str, model: str, timeout: float = TIMEOUT_S
) -> Verdict:
    """GET /models (free) at an OpenAI-style endpoint: the key, and whether it lists the
    model. A keyless endpoint (a local server) is asked without Authorization."""
    url = (base_url or OPENAI_URL).rstrip("/")
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    answer = await _call(
        "GET", f"{url}/models", (key,), timeout, "the model endpoint", headers=headers
    )
    if isinstance(answer, Verdict):
        return Verdict(answer.status, answer.what, "check LLM_BASE_URL and the network")
    return openai_verdict(public(url), model, *answer)


def openai_verdict(url: str, model: str, status: int, body: Any) -> Verdict:
    """Pure: what an OpenAI-style endpoint's answer to GET /models says of key and model."""
    detail = said(api_error(body) or f"HTTP {status}")
    if status in (401, 403):
        fix = "check OPENAI_API_KEY (the key of that endpoint)"
        return Verdict("refused", f"the model endpoint {url} refused the key ({detail})", fix)
    if status != 200:
        what = f"the model endpoint {url} answered {status} to GET /models ({detail})"
        return Verdict("failed", what, "check LLM_BASE_URL (the base URL, ending in /v1)")
    data = body.get("data") if isinstance(body, dict) else None
    ids = {m.get("id") for m in data if isinstance(m, dict)} if isinstance(data, list) else set()
    if ids and model not in ids:
        what = f"the model endpoint {url} accepts the key but does not list the model {model}"
        return Verdict("failed", said(what), "set NANOCLAW_MODEL to a model it lists")
    return Verdict("ok", said(f"the model endpoint {url} accepts the key (model {model})"))


async def telegram_token(api_url: str, token: str, timeout: float = TIMEOUT_S) -> Verdict:
    """getMe: the bot the token belongs to."""
    url = f"{api_url.rstrip('/')}/bot{token}/getMe"
    answer = await _call("POST", url, (token,), timeout, "the Bot API")
    fix = "check TELEGRAM_BOT_TOKEN (from @BotFather)"
    if isinstance(answer, Verdict):
        return Verdict(answer.status, answer.what, "check TELEGRAM_API_URL and the network")
    status, body = answer
    result = body.get("result") if isinstance(body, dict) else None
    if status == 200 and isinstance(result, dict):
        return Verdict("ok", f"Telegram bot @{said(result.get('username', '?'), token)}")
    if status in (401, 403, 404):  # the Bot API answers 404 to a token of the wrong shape
        detail = said(api_error(body) or f"HTTP {status}", token)
        return Verdict("refused", f"Telegram refused the bot token ({detail})", fix)
    return Verdict("failed", f"the Bot API answered {status}", "check TELEGRAM_API_URL")


async def matrix_login(
    homeserver: str,
    user_id: str,
    *,
    password: str = "",
    token: str = "",
    timeout: float = TIMEOUT_S,
) -> Verdict:
    """whoami with the access token; else a password login, logged out at once (the check
    leaves no device behind)."""
    api = homeserver.rstrip("/") + MATRIX_API
    secrets = (password, token)
    if token:
        answer = await _call(
            "GET",
            f"{api}/account/whoami",
            secrets,
            timeout,
            "the homeserver",
            headers={"authorization": f"Bearer {token}"},
        )
    elif password:
        ident = {"type": "m.id.user", "user": user_id}
        login = {
            "type": "m.login.password",
            "identifier": ident,
            "password": password,
            "initial_device_display_name": "nanoclaw check",
        }
        answer = await _call("POST", f"{api}/login", secrets, timeout, "the homeserver", json=login)
    else:
        return Verdict(
            "failed", f"Matrix {user_id}: no login", "set MATRIX_PASSWORD or MATRIX_ACCESS_TOKEN"
        )
    if isinstance(answer, Verdict):
        return Verdict(answer.status, answer.what, "check MATRIX_HOMESERVER and the network")
    status, body = answer
    body = body if isinstance(body, dict) else {}
    if status in (401, 403):
        which = "MATRIX_ACCESS_TOKEN" if token else "MATRIX_USER_ID and MATRIX_PASSWORD"
        detail = said(api_error(body) or f"HTTP {status}", *secrets)
        return Verdict("refused", f"Matrix refused {user_id} ({detail})", f"check {which}")
    if status != 200:
        what = f"{public(homeserver)} answered {status} (is it a Matrix homeserver?)"
        return Verdict("failed", what, "check MATRIX_HOMESERVER")
    if not token:
        new = str(body.get("access_token", ""))
        await _call(
            "POST",
            f"{api}/logout",
            (*secrets, new),
            timeout,
            "the homeserver",
            headers={"authorization": f"Bearer {new}"},
        )
    who = said(body.get("user_id", ""), *secrets)
    if who != user_id:
        what = f"the Matrix login is for {who or 'nobody'}, not {user_id}"
        return Verdict("failed", what, "set MATRIX_USER_ID to the bot's own id")
    return Verdict("ok", f"Matrix login as {user_id} on {public(homeserver)}")


XMPP_OUTCOMES: dict[str, Status] = {  # slixmpp event -> what it means before session start
    "session_start": "ok",
    "failed_all_auth": "refused",
    "connection_failed": "unreachable",
    "ssl_invalid_chain": "failed",
    "stream_error": "failed",
    "disconnected": "failed",
}


async def xmpp_login(
    jid: str,
    password: str,
    *,
    server: str | None = None,
    tls: str = "required",
    ca_file: Path | None = None,
    timeout: float = TIMEOUT_S,
) -> Verdict:
    """A real login with slixmpp (TLS as the channel does it), then a disconnect."""
    try:
        from slixmpp import ClientXMPP
    except ImportError as exc:
        return Verdict("failed", f"XMPP not checked: {exc}", "uv sync")
    insecure = tls == "off"
    mechanisms = {"unencrypted_plain": insecure, "unencrypted_scram": insecure}
    client = ClientXMPP(jid, password, plugin_config={"feature_mechanisms": mechanisms})
    client.enable_direct_tls, client.enable_starttls = tls == "direct", tls == "required"
    client.enable_plaintext = insecure
    if ca_file is not None:
        client.ca_certs = ca_file
    done: asyncio.Future[tuple[str, object]] = asyncio.get_running_loop().create_future()

    def settle(event: str, arg: object) -> None:
        if not done.done():
            done.set_result((event, arg))

    for event in XMPP_OUTCOMES:
        client.add_event_handler(event, functools.partial(settle, event))
    quiet = logging.getLogger("slixmpp")
    level, quiet.level = quiet.level, logging.CRITICAL  # its own error lines: said below
    try:
        host, _, port = (server or "").rpartition(":")
        client.connect(host or None, int(port) if port else None)
        try:  # asyncio.timeout, not wait_for: a cancel in the same step must not be lost
            async with asyncio.timeout(timeout):
                event, arg = await done
        except TimeoutError:
            event, arg = "timeout", ""
    finally:
        await _hang_up(client)
        quiet.level = level
    return xmpp_verdict(jid, server, event, said(arg, password))


def xmpp_verdict(jid: str, server: str | None, event: str, detail: str) -> Verdict:
    """Pure: what the first slixmpp event of a login attempt says."""
    where = server or f"the server of {jid} (from DNS)"
    status = XMPP_OUTCOMES.get(event, "unreachable")
    if status == "ok":
        return Verdict("ok", f"XMPP login as {jid}")
    if status == "refused":
        return Verdict("refused", f"XMPP refused {jid}", "check XMPP_JID and XMPP_PASSWORD")
    if status == "unreachable":
        what = f"cannot reach {where}" + (f": {detail}" if detail else " in time")
        return Verdict("unreachable", what, "check XMPP_SERVER (host:port) and the network")
    what = f"XMPP {where}: {event.replace('_', ' ')} before login {detail}".strip()
    return Verdict("failed", what, "check XMPP_TLS and XMPP_CA_FILE (the server's certificate)")


async def _hang_up(client: Any) -> None:
    client.cancel_connection_attempt()
    try:
        async with asyncio.timeout(3):
            await client.disconnect(wait=1)
    except (TimeoutError, OSError):
        client.abort()
    task = client._run_out_filters  # else "Task was destroyed but it is pending"
    if task is not None and not task.done():
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
