"""`nanoclaw pair GROUP`: a one-time code that registers the chat it is sent from.

Writes the code's hash to the store, with or without a running daemon; the daemon reads
it when the code arrives. The group is created (as `groups add GROUP` would) if missing.
"""

from __future__ import annotations

import argparse
from datetime import datetime

from nanoclaw.config import Settings
from nanoclaw.errors import ConfigError
from nanoclaw.home import ensure_main, open_store
from nanoclaw.models import MAIN, Group, valid_folder
from nanoclaw.pairing import TTL_MS
from nanoclaw.store.db import now_ms
from nanoclaw.store.pairbook import NewCode


def instructions(new: NewCode, settings: Settings, created: bool) -> list[str]:
    """Pure: what the owner reads, and passes on with the code."""
    until = datetime.fromtimestamp(new.expires_ms / 1000, settings.zone)
    lines = [f"created group {new.folder}"] if created else []
    lines += [
        f"pairing code for group {new.folder}: {new.code}",
        f"valid until {until:%H:%M %Z} ({TTL_MS // 60_000} minutes), for one chat only.",
        "Send it to the bot from the chat to register: a private chat, a group or a room.",
        f"In a Telegram group send /pair@<bot username> {new.code} (privacy mode hides the rest).",
        f"That chat then talks to group {new.folder}, and whoever sent the code may wake "
        "the bot there.",
    ]
    if new.folder == MAIN:
        lines.append("main is the admin group: its chats may steer every group. Pair with care.")
    return lines


async def run(settings: Settings, args: argparse.Namespace) -> int:
    folder = args.group
    if not valid_folder(folder):
        raise ConfigError(f"group {folder!r}: use a-z, 0-9, _ and - (not 'global')")
    async with open_store(settings) as store:
        await ensure_main(store)
        created = await store.group(folder) is None
        if created:
            await store.save_group(Group(folder=folder, name=folder))
            (settings.layout.groups / folder).mkdir(parents=True, exist_ok=True)
        new = await store.create_pair_code(folder, now_ms())
    for line in instructions(new, settings, created):
        print(line)
    return 0


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    pair = sub.add_parser(
        "pair",
        help="a one-time code that registers the chat it is sent from to GROUP",
        description="Print a short one-time code, valid 10 minutes. Whoever sends it to the "
        "bot (Telegram, XMPP, Matrix) gets that chat registered to GROUP and is allowed to "
        "wake the bot there. GROUP is created if it does not exist.",
    )
    pair.add_argument("group", help="the group the chat joins, e.g. work")
