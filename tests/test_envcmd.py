"""`nanoclaw env build/show/catalog` as subprocesses, building from the stub nixpkgs with the
real Nix: progress while it builds, a real GC root, a cache hit that needs no Nix at all,
one-line errors for an unknown name and for a failed build."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import make_home, run_cli
from nixhome import fresh_folder, need_nix, nix_settings


@dataclass(frozen=True)
class Built:
    home: Path
    folder: str
    proc: subprocess.CompletedProcess[str]


def cli(home: Path, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return run_cli(home, *args, **nix_settings(**extra))


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    """One group with jq and ripgrep, built once for the module."""
    need_nix()
    home = make_home(tmp_path_factory.mktemp("envcmd") / "home")
    folder = fresh_folder("work")
    added = cli(home, "groups", "add", folder, "--chat", "tg:-7", "--set", "packages=jq,ripgrep")
    assert added.returncode == 0, added.stderr
    return Built(home, folder, cli(home, "env", "build", folder))


def record(b: Built) -> dict[str, object]:
    data: dict[str, object] = json.loads(
        (b.home / "store" / "envs" / f"{b.folder}.json").read_text()
    )
    return data


def test_build_shows_progress_and_leaves_a_real_gc_root(built: Built) -> None:
    proc = built.proc
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout.splitlines()
    assert out[0] == f"group {built.folder}: building its environment"
    assert out[1].startswith("  checking 4 packages in ") and out[1].endswith(
        "bash, coreutils, jq, ripgrep"
    )
    building = [line for line in out if line.startswith("  building '/nix/store/")]
    assert any(f"nanoclaw-env-{built.folder}.drv" in line for line in building)  # Nix's own
    root = built.home / "store" / "envs" / built.folder
    target = root.readlink()
    assert str(target).startswith("/nix/store/") and target.name.endswith(built.folder)
    assert out[-1].startswith(f"group {built.folder}: built: {target} (4 packages; closure ")
    roots = subprocess.run(
        ["nix-store", "--gc", "--print-roots"], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert f"{root} -> {target}" in roots
    # the environment's programs run from the store alone: jq is the stub's script
    jq = subprocess.run([target / "bin" / "jq", "."], capture_output=True, text=True, env={})
    assert jq.stdout.startswith("jq from jq-stub")
    data = record(built)
    assert data["path"] == str(target) and data["packages"] == [
        "bash",
        "coreutils",
        "jq",
        "ripgrep",
    ]
    assert str(target) in data["closure"]  # type: ignore[operator]


def test_a_second_build_is_a_cache_hit_that_needs_no_nix(built: Built, tmp_path: Path) -> None:
    before = record(built)
    # no Nix on PATH: a hit reads the record and stats the stub, it calls no nix-build
    proc = cli(built.home, "env", "build", built.folder, PATH=str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"group {built.folder}: already built: {before['path']}")
    assert record(built) == before  # built_ms unchanged: nothing was rebuilt


def test_show_prints_packages_store_path_closure_and_when(built: Built) -> None:
    proc = cli(built.home, "env", "show", built.folder)
    assert proc.returncode == 0, proc.stderr
    shown = {k: v.strip() for k, v in (line.split(":", 1) for line in proc.stdout.splitlines())}
    data = record(built)
    assert shown["packages"] == "jq, ripgrep" and shown["profile"] == "none"
    assert shown["resolved"] == "bash, coreutils, jq, ripgrep"
    assert shown["store path"] == data["path"]
    assert shown["closure"].startswith(f"{len(data['closure'])} store paths, ")  # type: ignore[arg-type]
    assert shown["built"].endswith("UTC")
    main = cli(built.home, "env", "show", "main")
    assert "environment:  none: runs use the host runtime" in main.stdout
    assert cli(built.home, "env", "show", "nope").returncode == 1


def test_an_unknown_name_is_one_line_with_close_names(built: Built) -> None:
    folder = fresh_folder("typo")
    added = cli(built.home, "groups", "add", folder, "--set", "packages=jqq,ripgrp,git")
    assert added.returncode == 0, added.stderr
    proc = cli(built.home, "env", "build", folder)
    assert proc.returncode == 1
    assert proc.stderr == (
        f"nanoclaw: env build {folder}: unknown packages in nixpkgs: "
        "jqq (did you mean jq?); ripgrp (did you mean ripgrep?)\n"
    )
    assert not (built.home / "store" / "envs" / folder).exists()


def test_a_failed_build_says_why_in_one_line(built: Built) -> None:
    folder = fresh_folder("bad")
    assert cli(built.home, "groups", "add", folder, "--set", "packages=broken").returncode == 0
    proc = cli(built.home, "env", "build", folder)
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith(f"nanoclaw: env build {folder}: builder for 'broken-stub'")
    assert proc.stderr.endswith(": this package does not build\n")
    assert "  this package does not build" in proc.stdout  # streamed as it came
    assert not (built.home / "store" / "envs" / folder).exists()


def test_build_all_and_a_group_without_packages(built: Built) -> None:
    plain = cli(built.home, "env", "build", "main")
    assert plain.returncode == 0
    assert (
        plain.stdout == "group main declares no packages or profile: it runs on the host runtime\n"
    )
    every = cli(built.home, "env", "build", "--all")
    assert f"group {built.folder}: already built:" in every.stdout
    assert cli(built.home, "env", "build", "nope").returncode == 2


def test_catalog_lists_profiles_and_filters(tmp_path: Path) -> None:
    proc = run_cli(make_home(tmp_path / "home"), "env", "catalog", "--filter", "dnsutils")
    assert proc.returncode == 0
    assert proc.stdout.splitlines() == [
        "debug-network    curl, netcat, dnsutils  (expects network=full: its tools probe the "
        "network)",
        "every environment also holds bash and coreutils",
    ]
