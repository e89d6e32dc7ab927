"""The `nanoclaw` command (SPEC section 9): run, chat, groups, chats, tasks, usage, env, doctor.

Settings are built here, once, and passed down; a bad setting ends the command with one
line naming it and exit code 2, never a traceback, and a closed stdout ends it quietly.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import Sequence
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import TextIO

from nanoclaw.cli import env as envcmd
from nanoclaw.cli import groups as groupcmd
from nanoclaw.cli import pair as paircmd
from nanoclaw.cli import service as servicecmd
from nanoclaw.cli import setup as setupcmd
from nanoclaw.cli import tape as tapecmd
from nanoclaw.cli import tasks as taskcmd
from nanoclaw.cli import usage as usagecmd
from nanoclaw.cli.groups import apply_setting as apply_setting  # where tests found it
from nanoclaw.config import Settings, require_credential, startup_settings
from nanoclaw.display import LogFormatter, printable, printable_line
from nanoclaw.errors import ConfigError, NanoclawError
from nanoclaw.home import ensure_main, open_store, try_lock

# The daemon's pieces (app, channel, router, doctor) pull in aiohttp, the SDKs and the
# launcher: the commands that need them import them, so `--help` and the store-only
# commands (groups, chats, tasks, usage, pair) start fast.

log = logging.getLogger("nanoclaw")
SIGPIPE_EXIT = 141  # 128 + SIGPIPE: what `ls | head` reports for ls
CHATS_HEADER = f"{'chat':<40} {'group':<18} {'last seen':<16}  name"


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
    from nanoclaw.app import Core
    from nanoclaw.channel import enabled_channels, load_channels

    require_credential(settings)
    lock = try_lock(settings.layout.lock)
    if lock is None:
        raise ConfigError("another nanoclaw daemon holds store/daemon.lock; stop it first")
    channels = load_channels(settings, enabled_channels(settings))
    async with open_store(settings) as store:
        log.info(
            "nanoclaw running: channels=%s home=%s",
            ",".join(channels) or "none",
            settings.nanoclaw_home,
        )
        async with Core.open(settings, store, channels) as core:
            await core.serve()
    return 0


async def cmd_chat(settings: Settings, folder: str) -> int:
    from channels.repl import TerminalChat
    from channels.terminal import TerminalChannel, origin_of
    from nanoclaw.app import Core
    from nanoclaw.channel import Ingest
    from nanoclaw.router import Router

    async with open_store(settings) as store, contextlib.AsyncExitStack() as stack:
        channel = TerminalChannel(
            settings.assistant_name,
            received=settings.layout.received,
            origin=origin_of(store, settings.zone),  # marks replies of scheduled tasks
        )
        await ensure_main(store)
        lock = try_lock(settings.layout.lock)
        if lock is not None:
            require_credential(settings)
            core = await stack.enter_async_context(Core.open(settings, store, {"term": channel}))
            started = asyncio.Event()
            background = asyncio.create_task(core.run(started))
            await started.wait()
            inbound: Ingest = core.ingest
            stop = core.orchestrator.stop  # Ctrl+C while the agent works stops its run
            control = core.control.answer  # /status, /pause, /resume, /stop
            approve = core.control.approve  # main's /allow and /deny
        else:  # beside a daemon: this process only stores lines and prints term: replies
            router = Router(store, {"term": channel}, 0.05)
            background = asyncio.create_task(router.run())
            inbound, stop, control, approve = Ingest(store), None, None, None
        await channel.start(inbound)
        chat = TerminalChat(
            store, inbound, channel, settings, "main", stop, control=control, approve=approve
        )
        note = await chat.select(folder)
        if chat.folder != folder:
            print(note, file=sys.stderr)
            code = 2
        else:
            code = await chat.run(sys.stdin)
        background.cancel()
        await asyncio.gather(background, return_exceptions=True)
    return code


async def cmd_chats(settings: Settings) -> int:
    async with open_store(settings) as store:
        chats = await store.chats()
        print(CHATS_HEADER if chats else "no chats seen yet")
        for c in chats:
            seen = datetime.fromtimestamp(c.last_seen_ms / 1000, settings.zone)
            where = c.folder or "(not registered)"
            line = f"{c.chat_id:<40} {where:<18} {seen:%Y-%m-%d %H:%M}  {c.name}"
            print(printable_line(line))  # the title of any chat that wrote to the bot
    return 0


async def cmd_tasks(settings: Settings, args: argparse.Namespace) -> int:
    async with open_store(settings) as store:
        return await taskcmd.cmd_tasks(settings, store, args)


async def cmd_doctor(settings: Settings) -> int:
    from nanoclaw.cli import doctor

    text, ok = doctor.report(await doctor.run_checks(settings))
    print(text)
    return 0 if ok else 1


def version() -> str:
    try:
        return metadata.version("nanoclaw")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="nanoclaw", description="self-hosted AI assistant for chat")
    p.add_argument("--version", action="version", version=f"nanoclaw {version()}")
    p.add_argument("--env-file", type=Path, help="settings file (default: ./.env if present)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("run", help="the daemon: channels, orchestrator, IPC watcher, router")
    chat = sub.add_parser("chat", help="terminal chat (REPL, or piped stdin)")
    chat.add_argument("group", nargs="?", default="main", help="the group to talk to (main)")
    groupcmd.add_parser(sub)
    sub.add_parser("chats", help="chats seen, registered or not")
    taskcmd.add_parser(sub)
    usagecmd.add_parser(sub)
    tapecmd.add_parser(sub)
    paircmd.add_parser(sub)
    setupcmd.add_parser(sub)
    envcmd.add_parser(sub)
    servicecmd.add_parser(sub)
    sub.add_parser("doctor", help="check bwrap, namespaces, credential, store, channels")
    return p


def dispatch(args: argparse.Namespace) -> int:
    if args.command == "setup":  # before the settings: it is how they get written
        return setupcmd.run(args)
    settings = startup_settings(args.env_file, sys.stderr)
    setup_logging(settings, to_file=args.command == "chat")
    if args.command == "run":
        return asyncio.run(cmd_run(settings))
    if args.command == "chat":
        return asyncio.run(cmd_chat(settings, args.group))
    if args.command == "groups":
        return asyncio.run(groupcmd.cmd_groups(settings, args))
    if args.command == "chats":
        return asyncio.run(cmd_chats(settings))
    if args.command == "tasks":
        return asyncio.run(cmd_tasks(settings, args))
    if args.command == "usage":
        return asyncio.run(usagecmd.run(settings, args))
    if args.command == "tape":
        return asyncio.run(tapecmd.run(settings, args))
    if args.command == "pair":
        return asyncio.run(paircmd.run(settings, args))
    if args.command == "env":
        return asyncio.run(envcmd.run(settings, args))
    if args.command == "service":
        return servicecmd.run(settings, args)
    return asyncio.run(cmd_doctor(settings))


def main(argv: Sequence[str] | None = None) -> int:
    try:
        try:
            args = parser().parse_args(argv)
        except SystemExit:  # --help, --version, a usage error: flush them here too
            sys.stdout.flush()
            raise
        code = dispatch(args)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit
        return code
    except ConfigError as exc:
        print(printable(f"nanoclaw: {exc}"), file=sys.stderr)
        return 2
    except NanoclawError as exc:
        print(printable(f"nanoclaw: {exc}"), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`nanoclaw usage | head -3`): stop quietly, as Unix tools do.
        # Python flushes stdout again at exit; pointing it at /dev/null keeps that quiet too
        # (https://docs.python.org/3/library/signal.html#note-on-sigpipe).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return SIGPIPE_EXIT


if __name__ == "__main__":
    sys.exit(main())
