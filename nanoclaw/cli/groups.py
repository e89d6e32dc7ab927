"""`nanoclaw groups list/show/add/set/remove`: registered groups and their settings.

Works on the store directly, with or without a running daemon. A chat belongs to one
group: taking it from another needs --move; main can be changed but never removed.
"""

from __future__ import annotations

import argparse
import re
import shlex
import shutil
import sys
from dataclasses import replace
from pathlib import Path

from nanoclaw.config import Settings
from nanoclaw.display import printable_line
from nanoclaw.errors import ConfigError
from nanoclaw.home import ensure_main, open_store
from nanoclaw.ipc import exports
from nanoclaw.models import MAIN, Group, chat_id_problem, chat_problem, valid_folder
from nanoclaw.nixenv import catalog
from nanoclaw.sandbox.egress import parse_domains
from nanoclaw.schedule.tasks import CLAUDE_MD, Task
from nanoclaw.settingvalues import SENDER_RE
from nanoclaw.store.messages import Store

GROUP_KEYS = (
    "name",
    "trigger",
    "requires_trigger",
    "network",
    "allowed_senders",
    "model",
    "chat",
    "exports",
    "domains",
    "packages",
    "profile",
    "progress",
    "provider",
    "fallback_models",
    "daily_requests",
    "daily_tokens",
    "daily_cost",
    "vision",
)
PROVIDERS = ("anthropic", "openai", "openai-compatible")
MODEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,127}$")
SWITCH = {"on": True, "true": True, "yes": True, "1": True}
SWITCH |= {"off": False, "false": False, "no": False, "0": False}
PROGRESS_ON = "on: one message edited as the agent works (Telegram, Matrix; typing elsewhere)"
PROGRESS_OFF = "off: typing only (groups set FOLDER progress=on for a progress message)"
VISION_ON = "on: pictures reach the model as images (groups set FOLDER vision=off: paths only)"
VISION_OFF = "off: the model gets the saved pictures' paths, not the images"
HEADER = f"{'group':<16} {'trigger':<20} {'network':<10} chats"


def group_line(g: Group, default_trigger: str) -> str:
    trig = "(not needed)" if not g.requires_trigger else g.trigger or f"{default_trigger} (default)"
    # names and chat ids may come from a platform or an agent: nothing reaches the terminal raw
    return printable_line(f"{g.folder:<16} {trig:<20} {g.network:<10} {','.join(g.chats) or '-'}")


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
        if problem := chat_id_problem(value):
            raise ValueError(problem)
        return replace(group, chats=tuple(dict.fromkeys((*group.chats, value))))
    if key == "exports":
        entries = [v.strip() for v in value.split(",") if v.strip()]
        return replace(group, exports=exports.format_exports(exports.parse_exports(entries)))
    if key == "domains":
        return replace(group, domains=parse_domains(value.split(",")))
    if key == "packages":
        return replace(group, packages=catalog.parse_packages(value))
    if key == "profile":
        if value and (problem := catalog.profile_problem(value)):
            raise ValueError(problem)
        return replace(group, profile=value or None)
    if key in ("progress", "vision"):
        if value.lower() not in SWITCH:
            raise ValueError(f"{key} is on or off")
        on = SWITCH[value.lower()]
        return replace(group, progress=on) if key == "progress" else replace(group, vision=on)
    if key == "provider":
        if value and value not in PROVIDERS:
            raise ValueError(f"provider is one of {', '.join(PROVIDERS)} (empty: LLM_PROVIDER)")
        return replace(group, provider=value or None)
    if key in ("model", "fallback_models"):
        names = tuple(v for v in (part.strip() for part in value.split(",")) if v)
        if bad := [n for n in names if not MODEL_RE.match(n)]:
            raise ValueError(f"{bad[0][:64]!r} is not a model name")
        if key == "model":
            if len(names) > 1:
                raise ValueError("model is one name (fallback_models takes a list)")
            return replace(group, model=names[0] if names else None)
        return replace(group, fallback_models=names)
    if key == "daily_cost":
        cost = budget_value(key, value)
        return replace(group, daily_cost=None if cost is None else float(cost))
    if key in ("daily_requests", "daily_tokens"):
        n = budget_value(key, value)
        n = None if n is None else int(n)
        return (
            replace(group, daily_requests=n)
            if key == "daily_requests"
            else replace(group, daily_tokens=n)
        )
    if key == "name":
        return replace(group, name=value or group.folder)
    if key == "trigger":
        return replace(group, trigger=value or None)
    raise ValueError(f"unknown key {key!r}; one of {', '.join(GROUP_KEYS)}")


def fallbacks(g: Group, settings: Settings) -> str:
    if g.fallback_models:
        return ", ".join(g.fallback_models)
    if settings.nanoclaw_fallback_models:
        return f"{', '.join(settings.nanoclaw_fallback_models)} (default, NANOCLAW_FALLBACK_MODELS)"
    return "none (NANOCLAW_FALLBACK_MODELS)"


def budget_value(key: str, value: str) -> int | float | None:
    """Pure: a per-group budget from `groups set`; empty means the GROUP_DAILY_* setting."""
    if not value:
        return None
    try:
        number = float(value) if key == "daily_cost" else int(value)
    except ValueError:
        raise ValueError(f"{key} is a number, 0 for no limit, empty for the default") from None
    if number < 0 or number != number or number == float("inf"):
        raise ValueError(f"{key} is 0 or more")
    return number


def budget_text(g: Group, settings: Settings) -> str:
    """Pure: the group's daily limits, each with where it comes from (its own or a setting)."""
    limits = (
        ("requests", g.daily_requests, settings.group_daily_requests),
        ("tokens", g.daily_tokens, settings.group_daily_tokens),
        ("cost", g.daily_cost, settings.group_daily_cost),
    )
    parts: list[str] = []
    own: list[str] = []
    shared: list[str] = []
    for what, mine, setting in limits:
        n = setting if mine is None else mine
        if not n:  # 0, or no GROUP_DAILY_COST
            parts.append(f"no {what} limit")
        else:
            parts.append((f"${n:.2f}" if what == "cost" else f"{n} {what}") + " a day")
        (shared if mine is None else own).append(what)
    if not own:
        return f"{', '.join(parts)} (GROUP_DAILY_REQUESTS, _TOKENS, _COST: every group)"
    settings_part = f"; GROUP_DAILY_*: {', '.join(shared)}" if shared else ""
    return f"{', '.join(parts)} (its own: {', '.join(own)}{settings_part})"


def show_lines(g: Group, settings: Settings, tasks: list[Task], workspace: Path) -> list[str]:
    """Pure over its inputs: every setting of one group, with the defaults it falls back on."""

    def listed(values: tuple[str, ...] | list[str], empty: str = "none") -> str:
        return ", ".join(values) or empty

    if g.requires_trigger:
        trigger = g.trigger or f"{settings.trigger} (default, TRIGGER_WORD)"
    else:
        trigger = "not needed: every message from an allowed sender starts a run"
    network = g.network + (f" (domains: {listed(g.domains)})" if g.network == "allowlist" else "")
    budget = budget_text(g, settings)
    paused = sum(t.status == "paused" for t in tasks)
    claude_md = workspace / "CLAUDE.md"
    lines = [
        f"group:           {g.folder}",
        f"name:            {g.name}",
        f"chats:           {listed(g.chats)}",
        f"trigger:         {trigger}",
        f"allowed senders: {listed(g.allowed_senders, 'none of its own')}; "
        f"also ALLOWED_SENDERS: {listed(settings.allowed_senders)}",
        f"model:           {g.model or f'{settings.nanoclaw_model} (default, NANOCLAW_MODEL)'}",
        f"provider:        {g.provider or f'{settings.llm_provider} (default, LLM_PROVIDER)'}",
        f"fallbacks:       {fallbacks(g, settings)}",
        f"network:         {network}",
        f"domains:         {listed(g.domains)}",
        f"exports:         {listed(g.exports)}",
        f"mounts:          {listed(g.mounts)}",
        f"profile:         {g.profile or 'none'}",
        f"packages:        {listed(g.packages)}",
        f"environment:     {environment_line(g)}",
        f"progress:        {PROGRESS_ON if g.progress else PROGRESS_OFF}",
        f"vision:          {VISION_ON if g.vision else VISION_OFF}",
        f"budget:          {budget}",
        f"tasks:           {len(tasks) - paused} active, {paused} paused",
        f"workspace:       {workspace}" + ("" if claude_md.is_file() else " (no CLAUDE.md)"),
    ]
    return [printable_line(line) for line in lines]  # names and ids may be a platform's


def environment_line(g: Group) -> str:
    """Pure: what the group's runs get: the host runtime, or the Nix environment's names."""
    try:
        names = catalog.wanted_packages(g)
    except catalog.EnvError as exc:
        return f"none: {exc}"
    if names is None:
        return "the host runtime (no packages or profile)"
    return f"Nix: {', '.join(names)} (nanoclaw env show {g.folder})"


def environment_notes(g: Group, nix_found: bool) -> list[str]:
    """Pure: what to say after `packages` or `profile` changed: the profile's network hint,
    and whether the wish can come true on this host."""
    if catalog.wanted_packages(g) is None:
        return []
    hint = catalog.network_hint(g.profile, g.network, g.folder)
    notes = [hint] if hint else []
    if nix_found:
        notes.append(
            f"its environment is built at its next run, or now: nanoclaw env build {g.folder}"
        )
    else:
        notes.append(
            f"Nix is not installed here: runs of group {g.folder} fail until it is "
            "(nanoclaw doctor says how)"
        )
    return notes


async def _held(store: Store, group: Group, move: bool) -> list[str]:
    """The notes for chats taken from other groups; ConfigError when one is taken without
    --move (the store would move it silently: a chat belongs to one group)."""
    notes = []
    for chat in group.chats:
        holder = await store.folder_of_chat(chat)
        problem = chat_problem(chat, group.folder, holder)
        if problem and not move:
            raise ConfigError(f"{problem}; use --move to take it")
        if problem and holder is not None:
            other = await store.group(holder)
            left = [c for c in (other.chats if other else ()) if c not in group.chats]
            notes.append(f"moved {chat} from group {holder}" + ("" if left else " (none left)"))
    return notes


async def _remove(settings: Settings, store: Store, folder: str) -> int:
    if folder == MAIN:
        raise ConfigError("main is the admin group and cannot be removed; `groups set` changes it")
    group = await store.group(folder)
    if group is None:
        print(f"no group {folder}", file=sys.stderr)
        return 1
    stopped = []
    for task in await store.tasks(folder):  # active and paused
        # an agent's task is cancelled; a CLAUDE.md task is marked gone, as when its lines
        # are deleted, and comes back if the group is added again with the file unchanged
        status = "removed" if task.source == CLAUDE_MD else "cancelled"
        await store.replace_task(replace(task, status=status, next_run_ms=None))
        stopped.append(task.id)
    await store.remove_group(folder)
    workspace = settings.layout.groups / folder
    chats = ", ".join(group.chats) or "none"
    print(printable_line(f"removed group {folder}; its chats are no longer answered: {chats}"))
    print(
        f"stopped its {len(stopped)} tasks: {', '.join(stopped)}" if stopped else "it had no tasks"
    )
    print(f"kept: {workspace} (its CLAUDE.md and files) and the chats' messages in the store")
    print(f"to delete the files: rm -r {shlex.quote(str(workspace))}")
    return 0


async def cmd_groups(settings: Settings, args: argparse.Namespace) -> int:
    async with open_store(settings) as store:
        await ensure_main(store)
        if args.action == "list":
            print(HEADER)
            for g in await store.groups():
                print(group_line(g, settings.trigger))
            return 0
        if not valid_folder(args.folder):
            raise ConfigError(f"group {args.folder!r}: use a-z, 0-9, _ and - (not 'global')")
        if args.action == "remove":
            return await _remove(settings, store, args.folder)
        group = await store.group(args.folder)
        if args.action == "show":
            if group is None:
                print(f"no group {args.folder}", file=sys.stderr)
                return 1
            tasks = await store.tasks(args.folder)
            for line in show_lines(group, settings, tasks, settings.layout.groups / group.folder):
                print(line)
            return 0
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
        notes = await _held(store, group, args.move)
        keys = {pair.partition("=")[0].strip() for pair in pairs}
        if keys & {"packages", "profile"}:
            notes += environment_notes(group, shutil.which("nix-build") is not None)
        await store.save_group(group)
        (settings.layout.groups / group.folder).mkdir(parents=True, exist_ok=True)
        print(HEADER)
        print(group_line(group, settings.trigger))
        for note in notes:
            print(printable_line(note))
    return 0


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    groups = sub.add_parser("groups", help="registered groups and their settings")
    gsub = groups.add_subparsers(dest="action", required=True, metavar="ACTION")
    gsub.add_parser("list", help="every group: trigger, network, chats")
    show = gsub.add_parser("show", help="every setting of one group, defaults included")
    show.add_argument("folder")
    move = "take a chat another group holds (it stops answering there)"
    add = gsub.add_parser("add", help="register a group: groups add work --chat tg:-100123")
    add.add_argument("folder")
    add.add_argument("--chat", action="append", default=[], help="chat id (repeatable)")
    add.add_argument("--set", action="append", help="key=value, as for `groups set`")
    add.add_argument("--move", action="store_true", help=move)
    keys = ", ".join(GROUP_KEYS)
    st = gsub.add_parser("set", help=f"change settings: groups set FOLDER key=value ... ({keys})")
    st.add_argument("folder")
    st.add_argument("pairs", nargs="+", metavar="key=value")
    st.add_argument("--move", action="store_true", help=move)
    gone = "unregister a group (not main): stops its tasks, keeps its folder and messages"
    rm = gsub.add_parser("remove", help=gone)
    rm.add_argument("folder")
