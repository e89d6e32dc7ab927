"""`nanoclaw env build/show/catalog`: the groups' Nix environments and the built-in profiles.

`build` prints Nix's lines as they come and one line per group at the end; a group that fails
says why in one line and the command exits 1. Works beside a running daemon (Nix locks).
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime

from nanoclaw.config import Settings
from nanoclaw.display import printable_line
from nanoclaw.errors import ConfigError
from nanoclaw.home import ensure_main, open_store
from nanoclaw.models import Group, valid_folder
from nanoclaw.nixenv import BuiltEnv, EnvError, Environments, catalog
from nanoclaw.store.messages import Store

MIB = 1024 * 1024


def environments(settings: Settings) -> Environments:
    return Environments(settings.layout, settings.nanoclaw_nixpkgs)


def built_line(folder: str, env: BuiltEnv, fresh: bool) -> str:
    """Pure: the closing line of one group's build."""
    how = "built" if fresh else "already built"
    size = f"{len(env.closure)} store paths, {env.closure_bytes / MIB:.1f} MiB"
    return f"group {folder}: {how}: {env.path} ({len(env.packages)} packages; closure {size})"


def show_lines(g: Group, env: BuiltEnv | None, current: bool, settings: Settings) -> list[str]:
    """Pure over its inputs: what `env show` prints for one group."""
    try:
        names = catalog.wanted_packages(g)
    except EnvError as exc:
        return [f"group:        {g.folder}", f"environment:  none: {exc}"]
    lines = [
        f"group:        {g.folder}",
        f"profile:      {g.profile or 'none'}",
        f"packages:     {', '.join(g.packages) or 'none'}",
    ]
    if names is None:
        return [*lines, "environment:  none: runs use the host runtime"]
    lines.append(f"resolved:     {', '.join(names)}")
    lines.append(f"nixpkgs:      {settings.nanoclaw_nixpkgs} (NANOCLAW_NIXPKGS)")
    if env is None:
        return [*lines, f"store path:   not built yet (nanoclaw env build {g.folder})"]
    when = datetime.fromtimestamp(env.built_ms / 1000, settings.zone)
    state = "" if current else f" (stale: its spec or nixpkgs changed; env build {g.folder})"
    return [
        *lines,
        f"store path:   {env.path}{state}",
        f"closure:      {len(env.closure)} store paths, {env.closure_bytes / MIB:.1f} MiB",
        f"built:        {when:%Y-%m-%d %H:%M:%S %Z}",
    ]


async def _targets(store: Store, args: argparse.Namespace) -> list[Group]:
    if args.all:
        return [g for g in await store.groups() if g.packages or g.profile is not None]
    if args.group is None:
        raise ConfigError("env build: name a group, or --all")
    if not valid_folder(args.group):
        raise ConfigError(f"group {args.group!r}: use a-z, 0-9, _ and - (not 'global')")
    group = await store.group(args.group)
    if group is None:
        raise ConfigError(f"no group {args.group}")
    return [group]


def _progress(line: str) -> None:
    print(printable_line(f"  {line}"), flush=True)  # Nix's lines, as they come


async def _build(settings: Settings, args: argparse.Namespace) -> int:
    async with open_store(settings) as store:
        await ensure_main(store)
        groups = await _targets(store, args)
    envs = environments(settings)
    if not groups:
        print("no group declares packages or a profile: every group runs on the host runtime")
        return 0
    failed = 0
    for g in groups:
        if catalog.wanted_packages(g) is None:
            print(f"group {g.folder} declares no packages or profile: it runs on the host runtime")
            continue
        if hint := catalog.network_hint(g.profile, g.network, g.folder):
            print(hint)
        cached = None if args.force else envs.cached(g)
        if cached is not None:
            print(printable_line(built_line(g.folder, cached, fresh=False)))
            continue
        print(f"group {g.folder}: building its environment", flush=True)
        try:
            env = await envs.ensure(g, _progress, force=args.force)
        except EnvError as exc:
            print(printable_line(f"nanoclaw: env build {g.folder}: {exc}"), file=sys.stderr)
            failed += 1
            continue
        assert env is not None
        print(printable_line(built_line(g.folder, env, fresh=True)))
    return 1 if failed else 0


async def _show(settings: Settings, folder: str) -> int:
    async with open_store(settings) as store:
        await ensure_main(store)
        group = await store.group(folder) if valid_folder(folder) else None
    if group is None:
        print(f"no group {folder[:64]}", file=sys.stderr)
        return 1
    envs = environments(settings)
    recorded = envs.recorded(group.folder)
    current = recorded is not None and envs.cached(group) == recorded
    for line in show_lines(group, recorded, current, settings):
        print(printable_line(line))
    return 0


async def run(settings: Settings, args: argparse.Namespace) -> int:
    if args.action == "catalog":
        for line in catalog.catalog_lines(args.filter or ""):
            print(printable_line(line))
        return 0
    if args.action == "show":
        return await _show(settings, args.group)
    return await _build(settings, args)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    env = sub.add_parser("env", help="groups' Nix environments and the built-in profiles")
    esub = env.add_subparsers(dest="action", required=True, metavar="ACTION")
    build = esub.add_parser("build", help="build a group's environment now (or --all)")
    build.add_argument("group", nargs="?")
    build.add_argument("--all", action="store_true", help="every group that declares packages")
    build.add_argument("--force", action="store_true", help="run nix-build even if cached")
    show = esub.add_parser("show", help="packages, store path, closure size, built when")
    show.add_argument("group")
    cat = esub.add_parser("catalog", help="the built-in profiles and their packages")
    cat.add_argument("--filter", help="only profiles whose name or a package contains TEXT")
