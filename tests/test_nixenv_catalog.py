"""The pure parts of per-group Nix environments: profiles, name checks, resolution, the
cache key, and the one-line messages made of Nix's answers."""

from __future__ import annotations

import pytest

from nanoclaw.models import Group
from nanoclaw.nixenv import EnvError, wanted_packages
from nanoclaw.nixenv.catalog import (
    ALWAYS,
    PROFILES,
    attr_problem,
    catalog_lines,
    network_hint,
    parse_packages,
    profile_problem,
    resolve,
)
from nanoclaw.nixenv.nix import BUILD_EXPR, failure_line, unknown_line
from nanoclaw.nixenv.record import cache_key


@pytest.mark.parametrize(
    ("profile", "packages", "expected"),
    [
        (None, (), ("bash", "coreutils")),
        (None, ("jq", "ripgrep"), ("bash", "coreutils", "jq", "ripgrep")),
        (None, ("ripgrep", "jq", "bash"), ("bash", "coreutils", "jq", "ripgrep")),
        ("strict", (), ("bash", "cacert", "coreutils")),
        (
            "offline-review",
            ("jq",),
            ("bash", "coreutils", "git", "gnugrep", "gnused", "jq"),
        ),
        ("debug-network", (), ("bash", "coreutils", "curl", "dnsutils", "netcat")),
        (
            "build-install",
            ("python312",),
            (
                "bash",
                "cargo",
                "coreutils",
                "gcc",
                "git",
                "gnumake",
                "nodejs",
                "python3",
                "python312",
                "rustc",
            ),
        ),
    ],
)
def test_resolve_adds_bash_and_coreutils_and_nothing_else(
    profile: str | None, packages: tuple[str, ...], expected: tuple[str, ...]
) -> None:
    assert resolve(profile, packages) == expected


def test_every_profile_resolves_to_its_packages_plus_the_two() -> None:
    for name, listed in PROFILES.items():
        assert set(resolve(name, ())) == {*listed, *ALWAYS}
    assert {"strict", "offline-review", "build-install", "debug-network", "default"} == set(
        PROFILES
    )
    assert "python3" in PROFILES["default"] and "jq" in PROFILES["default"]


def test_a_group_that_declares_nothing_keeps_the_host_runtime() -> None:
    assert wanted_packages(Group("work", "work")) is None
    assert wanted_packages(Group("work", "work", packages=("jq",))) == ("bash", "coreutils", "jq")
    assert wanted_packages(Group("work", "work", profile="strict")) == resolve("strict", ())
    with pytest.raises(EnvError, match="unknown profile 'gone'"):
        wanted_packages(Group("work", "work", profile="gone"))


@pytest.mark.parametrize(
    "name", ["jq", "python312", "nodePackages.pnpm", "python3Packages.requests", "gtk+3", "_x"]
)
def test_attribute_names_accepted(name: str) -> None:
    assert attr_problem(name) is None


@pytest.mark.parametrize(
    "name",
    ["jq;rm", "a b", "${x}", '"jq"', "3jq", ".jq", "jq.", "a..b", "a.b.c.d.e", "x" * 101, "é"],
)
def test_attribute_names_refused(name: str) -> None:
    problem = attr_problem(name)
    assert problem is not None and "not a nixpkgs attribute name" in problem


def test_parse_packages_keeps_order_drops_duplicates_and_refuses_the_first_bad() -> None:
    assert parse_packages(" jq, ripgrep,,jq ,python312") == ("jq", "ripgrep", "python312")
    assert parse_packages("") == ()
    with pytest.raises(ValueError, match="'r g'"):
        parse_packages("jq,r g,x;y")


def test_profile_problem_names_close_profiles() -> None:
    assert profile_problem("strict") is None
    assert "did you mean strict?" in (profile_problem("strct") or "")
    assert "did you mean" not in (profile_problem("zzzzzz") or "did you mean")


def test_network_hint_only_for_profiles_that_expect_full_network() -> None:
    hint = network_hint("build-install", "off", "work")
    assert hint is not None and "network=full" in hint and "does not grant it" in hint
    assert "nanoclaw groups set work network=full" in hint
    assert network_hint("build-install", "full", "work") is None
    assert network_hint("debug-network", "allowlist", "work") is not None
    assert network_hint("strict", "off", "work") is None
    assert network_hint(None, "off", "work") is None


def test_catalog_filters_on_profile_and_package_names() -> None:
    everything = catalog_lines()
    assert [line.split()[0] for line in everything[:-1]] == list(PROFILES)
    assert everything[-1] == "every environment also holds bash and coreutils"
    netcat = catalog_lines("netcat")
    assert [line.split()[0] for line in netcat[:-1]] == ["debug-network"]
    assert "expects network=full" in netcat[0]
    assert [line.split()[0] for line in catalog_lines("REVIEW")[:-1]] == ["offline-review"]
    assert catalog_lines("zzz")[0].startswith("no profile matches 'zzz'")


def test_cache_key_depends_on_nixpkgs_packages_and_expression_not_order() -> None:
    key = cache_key("/nix/store/abc-nixpkgs", ("bash", "jq"), BUILD_EXPR)
    assert key == cache_key("/nix/store/abc-nixpkgs", ("jq", "bash"), BUILD_EXPR)
    assert key != cache_key("/nix/store/def-nixpkgs", ("bash", "jq"), BUILD_EXPR)
    assert key != cache_key("/nix/store/abc-nixpkgs", ("bash", "jq", "git"), BUILD_EXPR)
    assert key != cache_key("/nix/store/abc-nixpkgs", ("bash", "jq"), BUILD_EXPR + " ")


def test_unknown_line_names_each_problem_with_close_names() -> None:
    near = ["jq", "ripgrep", "git", "gitFull"]
    report: list[dict[str, object]] = [
        {"name": "jq", "found": True, "drv": True, "near": []},
        {"name": "jqq", "found": False, "drv": False, "near": near},
        {"name": "zzzzzz", "found": False, "drv": False, "near": near},
        {"name": "lib", "found": True, "drv": False, "near": []},
    ]
    assert unknown_line(report) == (
        "unknown packages in nixpkgs: jqq (did you mean jq?); zzzzzz; lib (not a package)"
    )
    assert unknown_line(report[:1]) is None
    assert unknown_line(report[1:2]) == "unknown package in nixpkgs: jqq (did you mean jq?)"


def test_failure_line_is_the_first_error_with_the_builders_last_words() -> None:
    drv = "/nix/store/8n6xyzsgrj1395fba671hgjcj1m1qj58-broken-stub.drv"
    lines = [
        "these 2 derivations will be built:",
        f"  {drv}",
        f"building '{drv}'...",
        "this package does not build",
        f"error: builder for '{drv}' failed with exit code 1",
        "error: 1 dependencies of derivation '/nix/store/x' failed to build",
    ]
    assert failure_line(lines, "?") == (
        "builder for 'broken-stub' failed with exit code 1: this package does not build"
    )
    assert failure_line([], "nix-build exited with 1") == "nix-build exited with 1"
    assert failure_line(["", "something odd"], "?") == "something odd"
