"""`nanoclaw tape recent [HOURS] | search QUERY | stats` (and `/tape ...` in the REPL).

Reads the store's tape directly, with or without a running daemon. Every field passes
through `printable_line`; text that may hold untrusted senders' words shows `[untrusted]`.
"""

from __future__ import annotations

import argparse
import shlex
import time
from datetime import datetime
from typing import NoReturn
from zoneinfo import ZoneInfo

from nanoclaw.config import Settings
from nanoclaw.display import printable_line
from nanoclaw.errors import ConfigError
from nanoclaw.home import open_store
from nanoclaw.store.messages import Store
from nanoclaw.store.tape import TapeEvent, TapeQueryError, TapeStats

UNTRUSTED = "[untrusted] "
STATS_HEADER = (
    f"{'group':<16}{'messages':>9}{'runs':>7}{'tools':>7}{'errors':>7}{'tokens':>11}"
    f"{'reply p50':>11}{'reply p95':>11}"
)
HOUR_MS = 3_600_000


def event_line(event: TapeEvent, zone: ZoneInfo) -> str:
    """One event on one line: when, group, kind, run, then its text (marked if untrusted)."""
    at = datetime.fromtimestamp(event.ts_ms / 1000, zone)
    run = f"#{event.run_id} " if event.run_id is not None else ""
    detail = event.detail or {}
    who = f"{detail.get('name') or detail.get('sender')}: " if event.kind == "message" else ""
    mark = UNTRUSTED if event.untrusted else ""
    head = f"{at:%Y-%m-%d %H:%M:%S} {event.folder:<12} {event.kind:<9} {run}"
    return printable_line(f"{head}{mark}{who}{event.text}")


def _seconds(ms: int | None) -> str:
    return "-" if ms is None else f"{ms / 1000:.1f} s"


def stats_line(stats: TapeStats) -> str:
    return printable_line(
        f"{stats.folder:<16}{stats.messages:>9}{stats.runs:>7}{stats.tools:>7}"
        f"{stats.errors:>7}{stats.tokens:>11}{_seconds(stats.p50_ms):>11}"
        f"{_seconds(stats.p95_ms):>11}"
    )


async def tape_lines(
    store: Store, args: argparse.Namespace, zone: ZoneInfo, now_ms: int | None = None
) -> list[str]:
    """What `tape` shows for parsed `args`; a bad search query raises ConfigError."""
    if args.action == "stats":
        stats = await store.tape_stats()
        return [STATS_HEADER, *map(stats_line, stats)] if stats else ["the tape is empty"]
    if args.action == "search":
        try:
            events = await store.tape_search(args.query, args.group)
        except TapeQueryError as exc:
            raise ConfigError(str(exc)) from exc
        none = f"nothing on the tape matches {args.query!r}"
    else:
        now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
        events = await store.tape_recent(now_ms - int(args.hours * HOUR_MS), args.group)
        none = f"nothing on the tape in the last {args.hours:g} hours"
    return [event_line(e, zone) for e in events] or [printable_line(none)]


async def run(settings: Settings, args: argparse.Namespace) -> int:
    async with open_store(settings) as store:
        for line in await tape_lines(store, args, settings.zone):
            print(line)
    return 0


class _ReplParser(argparse.ArgumentParser):
    """`/tape ...` in the REPL: a usage error is a line to show, never an exit."""

    def error(self, message: str) -> NoReturn:
        raise ConfigError(f"{message}; {self.format_usage().strip()}")

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        raise ConfigError(message or self.format_help().strip())


async def repl_tape(store: Store, arg: str, zone: ZoneInfo) -> str:
    """The REPL's `/tape ARGS`: the same actions as the command, as one text to show."""
    parser = _ReplParser(prog="/tape")
    _actions(parser)
    try:
        args = parser.parse_args(shlex.split(arg) or ["recent"])
        return "\n".join(await tape_lines(store, args, zone))
    except (ConfigError, ValueError) as exc:  # ValueError: shlex's unclosed quote
        return printable_line(str(exc))


def _hours(value: str) -> float:
    try:
        hours = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of hours") from None
    if not 0 < hours <= 24 * 36_500:
        raise argparse.ArgumentTypeError("HOURS is more than 0")
    return hours


def _actions(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    recent = actions.add_parser("recent", help="events of the last hours, oldest first")
    recent.add_argument("hours", nargs="?", type=_hours, default=24.0, help="default 24")
    recent.add_argument("--group", help="only this group's")
    search = actions.add_parser(
        "search",
        help="events whose text matches an FTS5 query",
        description='QUERY is FTS5 syntax: words (all must match), "a phrase", OR, NOT, '
        "prefix*; the newest 100 matches are shown, oldest first.",
    )
    search.add_argument("query", help='e.g. build OR deploy, "npm run"')
    search.add_argument("--group", help="only this group's")
    actions.add_parser(
        "stats",
        help="per group: messages, runs, tool calls, errors, tokens, reply time",
        description="Reply time: from the message that started a run to the run's first "
        "reply in that chat. Tokens: input + cache writes + output of the runs started.",
    )


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    tape = sub.add_parser(
        "tape",
        help="the event tape: recent events, search, stats",
        description="Every event (messages, replies, runs, tool calls, IPC actions, refusals, "
        "errors), kept TAPE_RETENTION_DAYS. [untrusted] marks text that may hold words of "
        "senders not allowed to instruct the agent.",
    )
    _actions(tape)
