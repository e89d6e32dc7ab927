"""`nanoclaw setup`: the guided first hour, as questions on the terminal.

Asks for the model key and each channel's credentials, checks each with one live call (as
`doctor` does) and asks again while the server refuses, writes `.env` (0600, every other
line kept), then says what comes next: the service and pairing a chat.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import subprocess
import sys
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from dotenv import dotenv_values

from nanoclaw.config import DEFAULT_MODEL, load_settings, setting_names
from nanoclaw.display import printable
from nanoclaw.envfile import quote, with_values, write_private
from nanoclaw.errors import ConfigError, NanoclawError
from nanoclaw.settingvalues import MATRIX_USER_RE

if TYPE_CHECKING:  # the steps import credcheck (aiohttp) when they run, not `--help`
    from nanoclaw.cli.credcheck import Verdict

TEMPLATE = Path(__file__).resolve().parents[2] / ".env.example"
Values = dict[str, str]
Check = Coroutine[object, object, "Verdict"]


class NoAnswer(NanoclawError):
    """The answers ran out (end of input): nothing is written."""


@dataclass
class Console:
    """Questions and answers. On a terminal a secret is read without echo; from a pipe
    (scripts, tests) every answer is one line."""

    stdin: TextIO
    stdout: TextIO

    def ask(self, prompt: str, secret: bool = False) -> str:
        prompt = printable(prompt)  # it may show a value from .env or the environment
        if secret and self.stdin.isatty():
            return getpass.getpass(prompt, stream=self.stdout).strip()
        self.stdout.write(prompt)
        self.stdout.flush()
        line = self.stdin.readline()
        if not line:
            raise NoAnswer("setup stopped: no more answers; nothing was written")
        return line.strip()

    def say(self, text: str) -> None:
        print(printable(text), file=self.stdout, flush=True)

    def yes(self, prompt: str) -> bool:
        """A y/N question: the end of input is the default, no (what is written stays)."""
        try:
            return self.ask(prompt).lower() in ("y", "yes")
        except NoAnswer:
            self.say("")
            return False


def _writable(console: Console, value: str) -> bool:
    try:
        quote(value)
    except ValueError as exc:
        console.say(f"  {exc}; try again")
        return False
    return True


def settled(
    console: Console,
    ask: Callable[[], Values],
    check: Callable[[Values], Check],
) -> Values:
    """Ask, check live, ask again while the server refuses; {} when skipped. A server that
    cannot be reached may be down for now: the answers are kept if the owner says so."""
    while True:
        values = ask()
        if not values:
            return {}
        if not all(_writable(console, v) for v in values.values()):
            continue
        verdict = asyncio.run(check(values))
        console.say(f"  {'ok' if verdict.ok else 'not ok'}: {verdict.what}")
        if verdict.ok:
            return values
        if verdict.fix:
            console.say(f"  fix: {verdict.fix}")
        if verdict.status != "refused" and console.yes("  Keep it all the same? [y/N] "):
            return values


def _kept(console: Console, label: str, current: str, secret: bool) -> str:
    """One answer; Enter keeps the current value (a secret is not shown)."""
    shown = " [Enter keeps the current one]" if secret else f" [{current}]"
    return console.ask(f"{label}{shown if current else ''}: ", secret) or current


def openai_step(console: Console, cur: Mapping[str, str], provider: str) -> Values:
    """LLM_PROVIDER=openai or openai-compatible (set before setup): the endpoint's key (and
    base URL), checked with GET /models."""
    from nanoclaw.cli import credcheck

    model = cur.get("NANOCLAW_MODEL") or DEFAULT_MODEL
    compatible = provider == "openai-compatible"
    console.say(
        f"\nThe model: LLM_PROVIDER={provider}, model {model} (NANOCLAW_MODEL). The key stays "
        "on this host; the sandbox never sees it."
    )
    base, key = cur.get("LLM_BASE_URL", ""), cur.get("OPENAI_API_KEY", "")

    def ask() -> Values:
        nonlocal base, key
        url = _kept(console, "Base URL (ending in /v1)", base, secret=False) if compatible else base
        while compatible and not url.startswith(("http://", "https://")):
            url = console.ask("Base URL (http:// or https://, ending in /v1): ")
        answer = _kept(console, "API key" + (" (Enter: none)" if compatible else ""), key, True)
        while not answer and not compatible:
            answer = console.ask("API key: ", secret=True)
        base, key = url, ""  # a refused key is not offered again
        values = {"LLM_PROVIDER": provider, "OPENAI_API_KEY": answer}
        return {**values, "LLM_BASE_URL": url} if url else values

    return settled(
        console,
        ask,
        lambda v: credcheck.openai_key(v.get("LLM_BASE_URL"), v["OPENAI_API_KEY"], model),
    )


def model_step(console: Console, cur: Mapping[str, str]) -> Values:
    from nanoclaw.cli import credcheck

    provider = cur.get("LLM_PROVIDER", "anthropic").strip().lower()
    if provider in ("openai", "openai-compatible"):
        return openai_step(console, cur, provider)
    base = cur.get("ANTHROPIC_BASE_URL") or "https://api.anthropic.com"
    model = cur.get("NANOCLAW_MODEL") or DEFAULT_MODEL
    console.say(
        "\nThe model: an Anthropic API key (https://console.anthropic.com). It stays on this "
        f"host; the sandbox never sees it. Checked against {base}."
    )
    current = cur.get("ANTHROPIC_API_KEY", "")

    def ask() -> Values:
        nonlocal current
        key = ""
        while not key:
            key = _kept(console, "Anthropic API key", current, secret=True)
            current = ""  # a key that was refused is not offered again
        return {"ANTHROPIC_API_KEY": key}

    return settled(console, ask, lambda v: credcheck.model_key(base, v["ANTHROPIC_API_KEY"], model))


def telegram_step(console: Console, cur: Mapping[str, str]) -> Values:
    from nanoclaw.cli import credcheck

    api = cur.get("TELEGRAM_API_URL") or "https://api.telegram.org"
    console.say("\nTelegram (optional): a bot token from @BotFather. Enter skips.")
    current = cur.get("TELEGRAM_BOT_TOKEN", "")

    def ask() -> Values:
        nonlocal current
        token, current = _kept(console, "Telegram bot token", current, secret=True), ""
        return {"TELEGRAM_BOT_TOKEN": token} if token else {}

    return settled(console, ask, lambda v: credcheck.telegram_token(api, v["TELEGRAM_BOT_TOKEN"]))


def xmpp_step(console: Console, cur: Mapping[str, str]) -> Values:
    from nanoclaw.cli import credcheck

    console.say("\nXMPP (optional): the bot's own account, like andy@example.org. Enter skips.")
    jid, password = cur.get("XMPP_JID", ""), cur.get("XMPP_PASSWORD", "")
    ca = cur.get("XMPP_CA_FILE")

    def ask() -> Values:
        nonlocal jid, password
        jid = _kept(console, "XMPP address", jid, secret=False)
        if not jid:
            return {}
        password = _kept(console, "XMPP password", password, secret=True)
        got, password = {"XMPP_JID": jid, "XMPP_PASSWORD": password}, ""
        return got

    def check(v: Values) -> Check:
        return credcheck.xmpp_login(
            v["XMPP_JID"],
            v["XMPP_PASSWORD"],
            server=cur.get("XMPP_SERVER") or None,
            tls=cur.get("XMPP_TLS") or "required",
            ca_file=Path(ca) if ca else None,
        )

    return settled(console, ask, check)


def matrix_step(console: Console, cur: Mapping[str, str]) -> Values:
    from nanoclaw.cli import credcheck

    console.say("\nMatrix (optional): the homeserver's URL and the bot's account. Enter skips.")
    hs, user = cur.get("MATRIX_HOMESERVER", ""), cur.get("MATRIX_USER_ID", "")
    password, token = cur.get("MATRIX_PASSWORD", ""), cur.get("MATRIX_ACCESS_TOKEN", "")

    def ask() -> Values:
        nonlocal hs, user, password, token
        hs = _kept(console, "Matrix homeserver URL", hs, secret=False)
        if not hs:
            return {}
        user = _kept(console, "Matrix user id, like @andy:example.org", user, secret=False)
        while not MATRIX_USER_RE.match(user):
            user = console.ask("  the full id, with its server part (@andy:example.org): ")
        got = {"MATRIX_HOMESERVER": hs, "MATRIX_USER_ID": user}
        label = "Matrix password (Enter: an access token instead)"
        secret = _kept(console, label, password, secret=True)
        if secret:
            got["MATRIX_PASSWORD"] = secret
        else:
            got["MATRIX_ACCESS_TOKEN"] = _kept(console, "Matrix access token", token, True)
        password = token = ""
        return got

    def check(v: Values) -> Check:
        return credcheck.matrix_login(
            v["MATRIX_HOMESERVER"],
            v["MATRIX_USER_ID"],
            password=v.get("MATRIX_PASSWORD", ""),
            token=v.get("MATRIX_ACCESS_TOKEN", ""),
        )

    return settled(console, ask, check)


def has_command(name: str) -> bool:
    """Whether `nanoclaw NAME` exists in this version (the service command comes later)."""
    from nanoclaw.cli.main import parser  # here: the command line imports this module

    subs = [a for a in parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return any(name in a.choices for a in subs)


def next_steps(console: Console, env_file: Path, values: Values) -> None:
    """The service, then how a chat gets paired (or the terminal when no network is set)."""
    if has_command("service") and console.yes("\nInstall the systemd service now? [y/N] "):
        cli = [sys.executable, "-m", "nanoclaw.cli.main", "--env-file", str(env_file)]
        subprocess.run([*cli, "service", "install"], check=False)
    else:
        console.say("\nStart the daemon with: nanoclaw run   (check everything: nanoclaw doctor)")
    networks = [k for k in ("TELEGRAM_BOT_TOKEN", "XMPP_JID", "MATRIX_USER_ID") if k in values]
    if networks:
        console.say(
            "Then pair a chat: run `nanoclaw pair main` (or another group name) and send the "
            "code it shows to the bot from that chat (in a Telegram group: /pair CODE)."
        )
    console.say("Talk to it here: nanoclaw chat")


def run(args: argparse.Namespace, console: Console | None = None) -> int:
    """The whole dialogue; `.env` is written once, at the end, only if it got there."""
    console = console or Console(sys.stdin, sys.stdout)
    env_file: Path = args.env_file or Path(".env")
    old = env_file.read_text(encoding="utf-8") if env_file.is_file() else None
    known = setting_names()
    saved = {k: v or "" for k, v in dotenv_values(env_file).items()} if old is not None else {}
    cur = {**saved, **{k: v for k, v in os.environ.items() if k in known}}
    console.say(f"nanoclaw setup: writes {env_file.resolve()} (readable by you only).")
    values: Values = {}
    for step in (model_step, telegram_step, xmpp_step, matrix_step):
        values.update(step(console, cur))
    text = old if old is not None else (TEMPLATE.read_text() if TEMPLATE.is_file() else "")
    write_private(env_file, with_values(text, values))
    console.say(f"\nwrote {env_file} ({', '.join(values)})")
    try:
        load_settings(env_file)
    except ConfigError as exc:  # a value from before, or from the environment
        console.say(f"note: {exc}")
    next_steps(console, env_file, values)
    return 0


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sub.add_parser(
        "setup",
        help="guided setup: model key and channels, checked live, written to .env",
        description="Asks for the model key (the Anthropic key; with LLM_PROVIDER=openai or "
        "openai-compatible set, that endpoint's URL and key) and each channel's credentials, "
        "checks each with a live call, and writes them to .env (or --env-file) with mode 0600.",
    )
