"""`Environments`: a group's Nix environment, built once per spec and reused until the spec
or nixpkgs changes. A build checks the names first (one line with close names for a typo),
then runs nix-build with the group's GC root; concurrent callers of one spec share one build.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path

from nanoclaw.layout import Layout
from nanoclaw.models import Group
from nanoclaw.nixenv import nix
from nanoclaw.nixenv.catalog import EnvError, wanted_packages
from nanoclaw.nixenv.record import (
    BuiltEnv,
    cache_key,
    envs_dir,
    is_rooted,
    read_record,
    root_of,
    write_record,
)
from nanoclaw.store.db import now_ms

log = logging.getLogger(__name__)
Progress = Callable[[str], None]
_Slot = tuple[str, str]  # (folder, cache key)


class Environments:
    """The groups' environments under `layout` (store/envs/), built from `nixpkgs`.

    `nix_bin` is the directory of the Nix tools (default: found on PATH at each build, so
    installing Nix needs no restart); `environ` is what they run with (default: this
    process's environment), the injection point for tests that turn substituters off.
    """

    def __init__(
        self,
        layout: Layout,
        nixpkgs: str,
        *,
        nix_bin: Path | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.layout = layout
        self.nixpkgs = nixpkgs
        self._nix_bin = nix_bin
        self._environ = environ
        self._lookups: dict[str, str] = {}  # <nixpkgs> -> its NIX_PATH entry (a symlink)
        self._building: dict[_Slot, asyncio.Task[BuiltEnv]] = {}
        self._listeners: dict[_Slot, list[Progress]] = {}

    def environ(self) -> Mapping[str, str]:
        return self._environ if self._environ is not None else os.environ

    def tools(self) -> nix.NixTools:
        """The Nix tools, or EnvError saying Nix is missing and how to install it."""
        return nix.find_nix(self._nix_bin, self.environ())

    def nixpkgs_path(self, tools: nix.NixTools | None) -> str:
        """NANOCLAW_NIXPKGS as a path; a lookup path is asked of Nix once per instance
        (the entry it names is a symlink that a channel update moves: identity follows it)."""
        if nix.LOOKUP_RE.match(self.nixpkgs):
            if self.nixpkgs not in self._lookups:
                self._lookups[self.nixpkgs] = nix.nixpkgs_path(tools, self.nixpkgs)
            return self._lookups[self.nixpkgs]
        return nix.nixpkgs_path(tools, self.nixpkgs)

    def _key(self, packages: tuple[str, ...], tools: nix.NixTools | None) -> tuple[str, str, str]:
        path = self.nixpkgs_path(tools)
        identity = nix.nixpkgs_identity(path)
        return path, identity, cache_key(identity, packages, nix.BUILD_EXPR)

    def recorded(self, folder: str) -> BuiltEnv | None:
        """The environment last built for `folder`, whatever spec it was built for."""
        return read_record(self.layout, folder)

    def _hit(self, folder: str, key: str) -> BuiltEnv | None:
        env = read_record(self.layout, folder)
        if env is None or env.key != key or not is_rooted(self.layout, env, folder):
            return None
        return env

    def cached(self, group: Group) -> BuiltEnv | None:
        """The environment already built for the group's current spec and nixpkgs, or None
        (nothing declared, not built, stale, or not knowable without Nix). Runs no build;
        reads the record and stats a checkout's few stamp files (and asks Nix, once per
        instance, where a <lookup> path such as <nixpkgs> points)."""
        try:
            packages = wanted_packages(group)
            if packages is None:
                return None
            try:
                tools: nix.NixTools | None = self.tools()
            except EnvError:
                tools = None  # a store path or checkout is still knowable
            _, _, key = self._key(packages, tools)
        except EnvError:
            return None
        return self._hit(group.folder, key)

    async def ensure(
        self,
        group: Group,
        progress: Progress | None = None,
        *,
        force: bool = False,
        building: Callable[[], Awaitable[None]] | None = None,
    ) -> BuiltEnv | None:
        """The group's environment, built first if needed (`force`: run nix-build even so);
        None when it declares nothing. `building` is awaited once when this call has to
        wait for a build (its own or one under way). EnvError (one line) when Nix is
        missing, a name is unknown or the build fails: the run must fail with it, never
        fall back to the host."""
        packages = wanted_packages(group)
        if packages is None:
            return None
        tools = self.tools()
        if nix.LOOKUP_RE.match(self.nixpkgs) and self.nixpkgs not in self._lookups:
            await asyncio.to_thread(self.nixpkgs_path, tools)  # asks Nix once per instance
        # From here to joining the build nothing awaits (the key is a few stat calls): a
        # caller that joins hears every line of the build from then on.
        path, identity, key = self._key(packages, tools)
        if not force and (hit := self._hit(group.folder, key)) is not None:
            return hit
        slot = (group.folder, key)
        listeners = self._listeners.setdefault(slot, [])
        if progress is not None:
            listeners.append(progress)
        task = self._building.get(slot)
        if task is None:
            built = self._build(tools, group.folder, packages, path, identity, key, slot)
            task = asyncio.ensure_future(built)
            self._building[slot] = task
            task.add_done_callback(lambda done: self._finished(slot, done))
        try:
            if building is not None:  # after joining: no line of the build is missed
                await building()
            # shielded: one caller given up (a /stop) does not end the build the others wait on
            return await asyncio.shield(task)
        finally:
            if progress is not None and progress in listeners:
                listeners.remove(progress)

    def _finished(self, slot: _Slot, task: asyncio.Task[BuiltEnv]) -> None:
        self._building.pop(slot, None)
        self._listeners.pop(slot, None)
        if not task.cancelled() and task.exception() is not None:
            log.debug("env build failed: group=%s %s", slot[0], task.exception())

    def _tell(self, slot: _Slot, line: str) -> None:
        for listener in list(self._listeners.get(slot, ())):
            listener(line)

    async def _build(
        self,
        tools: nix.NixTools,
        folder: str,
        packages: tuple[str, ...],
        path: str,
        identity: str,
        key: str,
        slot: _Slot,
    ) -> BuiltEnv:
        self._tell(slot, f"checking {len(packages)} packages in {path}: {', '.join(packages)}")
        problem = await asyncio.to_thread(nix.unknown_names, tools, path, packages)
        if problem is not None:
            raise EnvError(problem)
        envs_dir(self.layout).mkdir(parents=True, exist_ok=True)
        log.debug("env build: group=%s packages=%s nixpkgs=%s", folder, ",".join(packages), path)
        out = await nix.build(
            tools,
            path,
            packages,
            f"nanoclaw-env-{folder}",
            root_of(self.layout, folder),
            lambda line: self._tell(slot, line),
        )
        paths, size = await asyncio.to_thread(nix.closure, tools, out)
        env = BuiltEnv(out, paths, packages, now_ms(), size, key, identity)
        write_record(self.layout, folder, env)
        return env
