"""The `nanoclaw` command (SPEC section 9): run, chat, groups, chats, tasks, usage, doctor.

Settings are built here, once, and passed down; a bad setting ends the command with one
line naming it and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import TextIO

from nanoclaw import doctor, exports, taskcmd, usagecmd
from nanoclaw.app import Core, ensure_main, open_store, try_lock
from nanoclaw.channel import Ingest, enabled_channels, load_channels
from nanoclaw.config import SENDER_RE, Settings, load_settings, require_credential
from nanoclaw.display import LogFormatter, printable, printable_line
from nanoclaw.egress import parse_domains
from nanoclaw.errors import ConfigError, NanoclawError
from nanoclaw.models import CHAT_RE, Group, valid_folder
from nanoclaw.router import Router

log = logging.getLogger("nanoclaw")
GROUP_KEYS = (
    "name", "trigger", "requires_trigger", "network", "allowed_senders", "model", "chat", "exports",
    "domains",
)  # fmt: skip


def setup_logging(
    settings: Settings, to_file: bool, stream: TextIO | None = None
) -> logging.Handler:
    """Log to store/logs/nanoclaw.log or to `stream` (stderr), one line per record.

    Logged values come from chats, agents and the network: the formatter escapes their
    newlines and control characters, so none can forge a line or drive a terminal.
    """
    level = getattr(logging, settings.log_level.upper())
    if to_file:
        path = settings.layout.logs / "nanoclaw.log"
        path.parent.mkdir(parents=True, exist_ok=True)
        handler: logging.Handler = logging.FileHandler(path, encoding="utf-8")
    else:
        handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(LogFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("aiosqlite", "watchfiles", "asyncio"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
    return handler


async def cmd_run(settings: Settings) -> int:
    require_credential(settings)
    lock = try_lock(settings.layout.lock)
    if lock is None:
        raise ConfigError("another nanoclaw daemon holds store/daemon.lock; stop it first")
    channels = load_channels(settings, enabled_channels(settings))
    async with open_store(settings) as store:
        log.info("nanoclaw running: channels=%s home=%s", ",".join(channels) or "none",
                 settings.nanoclaw_home)  # fmt: skip
        await Core(settings, store, channels).run()
    return 0


async def cmd_chat(settings: Settings, folder: str) -> int:
    from channels.terminal import TerminalChannel, TerminalChat

    channel = TerminalChannel(settings.assistant_name, received=settings.layout.received)
    async with open_store(settings) as store:
        await ensure_main(store)
        lock = try_lock(settings.layout.lock)
        if lock is not None:
            require_credential(settings)
            core = Core(settings, store, {"term": channel})
            started = asyncio.Event()
            background = asyncio.create_task(core.run(started))
            await started.wait()
            inbound: Ingest = core.ingest
        else:
            router = Router(store, {"term": channel}, 0.05)
            background = asyncio.create_task(router.run())
            inbound = Ingest(store)
        await channel.start(inbound)
        chat = TerminalChat(store, inbound, channel, settings, "main")
        note = await chat.select(folder)
        if chat.folder != folder:
            print(note, file=sys.stderr)
            code = 2
        elif sys.stdin.isatty():
            code = await chat.repl()
        else:
            code = await chat.piped(sys.stdin.read().splitlines())
        background.cancel()
        await asyncio.gather(background, return_exceptions=True)
    return code


def _group_line(g: Group) -> str:
    trig = "no trigger" if not g.requires_trigger else f"trigger {g.trigger or 'default'}"
    line = f"{g.folder:<16} {trig:<20} net={g.network:<9} chats={','.join(g.chats) or '-'}"
    line += f" domains={','.join(g.domains) or '-'}" if g.network == "allowlist" else ""
    # names and chat ids may come from a platform or an agent: nothing reaches the terminal raw
    return printable_line(line + (f" exports={','.join(g.exports)}" if g.exports else ""))


def apply_setting(group: Group, key: str, value: str) -> Group:
    """Pure: the group with one `key=value` applied; ValueError says what is wrong."""
    if key == "requires_trigger":
        if value.lower() not in ("true", "false", "yes", "no", "1", "0"):
            raise ValueError("requires_trigger is true or false")
        return replace(group, requires_trigger=value.lower() in ("true", "yes", "1"))
    if key == "network":
        if value not in ("off", "allowlist", "full"):
            raise ValueError("network is off, allowlist or full")
        return replace(group, network=value)  # type: ignore[arg-type]
    if key == "allowed_senders":
        senders = tuple(v for v in (part.strip() for part in value.split(",")) if v)
        bad = [s for s in senders if not SENDER_RE.match(s)]
        if bad:
            raise ValueError(f"{bad[0]!r} is not a sender id like tg:123 or xmpp:a@example.org")
        return replace(group, allowed_senders=senders)
    if key == "chat":
        if not CHAT_RE.match(value):
            raise ValueError(f"{value!r} is not a chat id like tg:-100123 or term:work")
        return replace(group, chats=(*group.chats, value))
    if key == "exports":
        entries = [v.strip() for v in value.split(",") if v.strip()]
        return replace(group, exports=exports.format_exports(exports.parse_exports(entries)))
    if key == "domains":
        return replace(group, domains=parse_domains(value.split(",")))
    if key == "name":
        return replace(group, name=value or group.folder)
    if key == "trigger":
        return replace(group, trigger=value or None)
    if key == "model":
        return replace(group, model=value or None)
    raise ValueError(f"unknown key {key!r}; one of {', '.join(GROUP_KEYS)}")


async def cmd_groups(settings: Settings, args: argparse.Namespace) -> int:
    async with open_store(settings) as store:
        await ensure_main(store)
        if args.action == "list":
            for g in await store.groups():
                print(_group_line(g))
            return 0
        if not valid_folder(args.folder):
            raise ConfigError(f"group {args.folder!r}: use a-z, 0-9, _ and - (not 'global')")
        group = await store.group(args.folder)
        if args.action == "remove":
            ok = await store.remove_group(args.folder)
            print(f"removed {args.folder}" if ok else f"no group {args.folder}")
            return 0 if ok else 1
        if args.action == "add":
            group = group or Group(folder=args.folder, name=args.folder)
            pairs = [f"chat={c}" for c in args.chat] + list(args.set or [])
        else:
            if group is None:
                print(f"no group {args.folder}; add it first", file=sys.stderr)
                return 1
            pairs = list(args.pairs)
        for pair in pairs:
            key, sep, value = pair.partition("=")
            if not sep:
                raise ConfigError(f"{pair!r}: write key=value")
            try:
                group = apply_setting(group, key.strip(), value.strip())
            except ValueError as exc:
                raise ConfigError(f"group {args.folder}: {exc}") from exc
        await store.save_group(group)
        (settings.layout.groups / group.folder).mkdir(parents=True, exist_ok=True)
        print(_group_line(group))
    return 0


async def cmd_chats(settings: Settings) -> int:
    async with open_store(settings) as store:
        for c in await store.chats():
            seen = datetime.fromtimestamp(c.last_seen_ms / 1000, settings.zone)
            where = c.folder or "(not registered)"
            line = f"{c.chat_id:<40} {where:<18} {seen:%Y-%m-%d %H:%M}  {c.name}"
            print(printable_line(line))  # the title of any chat that wrote to the bot
    return 0


async def cmd_tasks(settings: Settings, args: argparse.Namespace) -> int:
    async with open_store(settings) as store:
        return await taskcmd.cmd_tasks(settings, store, args)


async def cmd_doctor(settings: Settings) -> int:
    text, ok = doctor.report(await doctor.run_checks(settings))
    print(text)
    return 0 if ok else 1


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="nanoclaw", description="self-hosted AI assistant for chat")
    p.add_argument("--env-file", type=Path, default=Path(".env"), help="settings file (.env)")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="the daemon: channels, orchestrator, IPC watcher, router")
    chat = sub.add_parser("chat", help="terminal chat (REPL, or piped stdin)")
    chat.add_argument("group", nargs="?", default="main")
    groups = sub.add_parser("groups", help="registered groups and their settings")
    gsub = groups.add_subparsers(dest="action", required=True)
    gsub.add_parser("list")
    add = gsub.add_parser("add", help="register a group: groups add work --chat tg:-100123")
    add.add_argument("folder")
    add.add_argument("--chat", action="append", default=[], help="chat id (repeatable)")
    add.add_argument("--set", action="append", help="key=value, as for `groups set`")
    rm = gsub.add_parser("remove")
    rm.add_argument("folder")
    st = gsub.add_parser("set", help=f"groups set FOLDER key=value ... ({', '.join(GROUP_KEYS)})")
    st.add_argument("folder")
    st.add_argument("pairs", nargs="+")
    sub.add_parser("chats", help="chats seen, registered or not")
    taskcmd.add_parser(sub)
    usagecmd.add_parser(sub)
    sub.add_parser("doctor", help="check bwrap, namespaces, credential, store, channels")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        settings = load_settings(args.env_file if args.env_file.is_file() else None)
        setup_logging(settings, to_file=args.command == "chat")
        if args.command == "run":
            return asyncio.run(cmd_run(settings))
        if args.command == "chat":
            return asyncio.run(cmd_chat(settings, args.group))
        if args.command == "groups":
            return asyncio.run(cmd_groups(settings, args))
        if args.command == "chats":
            return asyncio.run(cmd_chats(settings))
        if args.command == "tasks":
            return asyncio.run(cmd_tasks(settings, args))
        if args.command == "usage":
            return asyncio.run(usagecmd.run(settings, args))
        return asyncio.run(cmd_doctor(settings))
    except ConfigError as exc:
        print(printable(f"nanoclaw: {exc}"), file=sys.stderr)
        return 2
    except NanoclawError as exc:
        print(printable(f"nanoclaw: {exc}"), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
