"""`Environments` in-process with the real Nix and the stub nixpkgs: callers of one spec share
one build, a changed spec is stale, Nix missing and a bad NANOCLAW_NIXPKGS are one line."""

from __future__ import annotations

import asyncio
import os
from dataclasses import replace
from pathlib import Path

import pytest
from nixhome import STUB, fresh_folder, need_nix, nix_environ

from nanoclaw.layout import Layout
from nanoclaw.models import Group
from nanoclaw.nixenv import EnvError, Environments
from nanoclaw.nixenv.nix import nixpkgs_identity


def envs_for(home: Path, nixpkgs: str = str(STUB), **environ: str) -> Environments:
    return Environments(Layout(home), nixpkgs, environ=nix_environ(**environ))


async def test_concurrent_callers_share_one_build(tmp_path: Path) -> None:
    need_nix()
    envs = envs_for(tmp_path)
    group = Group(fresh_folder("twin"), "twin", packages=("jq",))
    assert envs.cached(group) is None
    heard: tuple[list[str], list[str]] = ([], [])
    first, second = await asyncio.gather(
        envs.ensure(group, heard[0].append), envs.ensure(group, heard[1].append)
    )
    assert first is not None and first is second  # one build's result, not two builds
    assert first.packages == ("bash", "coreutils", "jq")
    assert first.path in first.closure and all(p.startswith("/nix/store/") for p in first.closure)
    assert first.closure_bytes > 0
    for lines in heard:  # both callers hear the build's progress
        assert lines[0].startswith("checking 3 packages in ")
        assert any(f"nanoclaw-env-{group.folder}.drv" in line for line in lines)
    assert envs.cached(group) == first
    assert await envs.ensure(group) == first  # a hit: the same record, built_ms and all
    # a new instance (another process) reads the same record
    assert envs_for(tmp_path).cached(group) == first

    wider = replace(group, packages=("jq", "git"))
    assert envs.cached(wider) is None  # another spec: stale until built
    assert envs.recorded(group.folder) == first


async def test_a_group_without_packages_gets_none_and_needs_no_nix(tmp_path: Path) -> None:
    envs = envs_for(tmp_path, PATH=str(tmp_path))
    plain = Group("plain", "plain")
    assert envs.cached(plain) is None
    assert await envs.ensure(plain) is None


async def test_without_nix_the_run_fails_with_how_to_install(tmp_path: Path) -> None:
    envs = envs_for(tmp_path, PATH=str(tmp_path))  # an empty directory: no nix-build
    group = Group("work", "work", packages=("jq",))
    with pytest.raises(EnvError) as info:
        await envs.ensure(group)
    assert str(info.value).startswith("Nix is not installed on this host; install Nix: ")
    assert "apt-get install nix-bin" in str(info.value) and "\n" not in str(info.value)
    assert envs.cached(group) is None


async def test_a_bad_nixpkgs_is_one_line(tmp_path: Path) -> None:
    need_nix()
    group = Group("work", "work", packages=("jq",))
    with pytest.raises(EnvError, match="NANOCLAW_NIXPKGS /nonexistent: no such file"):
        await envs_for(tmp_path, "/nonexistent").ensure(group)
    lookup = envs_for(tmp_path, "<nixpkgs>", NIX_PATH="")
    with pytest.raises(EnvError, match=r"NANOCLAW_NIXPKGS <nixpkgs> is not in NIX_PATH"):
        await lookup.ensure(group)
    assert lookup.cached(group) is None


def test_nixpkgs_identity_of_store_paths_and_checkouts(tmp_path: Path) -> None:
    store_path = "/nix/store/0123456789abcdfghijklmnpqrsvwxyz-nixpkgs-src"
    assert nixpkgs_identity(store_path + "/pkgs/top-level") == store_path
    checkout = tmp_path / "nixpkgs"
    (checkout / ".git").mkdir(parents=True)
    (checkout / "default.nix").write_text("{ ... }: { }\n")
    (checkout / ".git" / "HEAD").write_text("ref: refs/heads/master\n")
    before = nixpkgs_identity(str(checkout))
    assert before == nixpkgs_identity(str(checkout)) and before.startswith(f"{checkout} ")
    (checkout / ".git" / "HEAD").write_text("ref: refs/heads/release-24.11\n")  # a switch
    switched = nixpkgs_identity(str(checkout))
    assert switched != before
    os.utime(checkout / "default.nix", ns=(1, 1))  # an edit of the entry file
    assert nixpkgs_identity(str(checkout)) != switched
