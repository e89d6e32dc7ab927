"""The built-in profiles and how a group's `profile` and `packages` resolve to attribute names.

Pure: no Nix is called here. A profile only lists packages; network stays the group's own
setting, and a profile that expects `network=full` only earns a hint.
"""

from __future__ import annotations

import difflib
import re

from nanoclaw.errors import SandboxError
from nanoclaw.models import Group

# In every environment, and nothing else implicitly: the runner's interpreter and its
# resource-limit helper come with its runtime, not from here.
ALWAYS = ("bash", "coreutils")

# nixo's profiles, plus `default`: the agent tool set flake.nix listed before environments
# were per group (python3 stands for the agent's old interpreter, now a tool like any other).
PROFILES: dict[str, tuple[str, ...]] = {
    "default": (
        "bashInteractive",
        "coreutils",
        "findutils",
        "gnugrep",
        "gnused",
        "gawk",
        "jq",
        "curl",
        "git",
        "python3",
        "ripgrep",
        "diffutils",
        "gnutar",
        "gzip",
    ),
    "strict": ("coreutils", "bash", "cacert"),
    "offline-review": ("git", "coreutils", "bash", "gnugrep", "gnused", "jq"),
    "build-install": ("nodejs", "python3", "rustc", "cargo", "git", "gcc", "gnumake"),
    "debug-network": ("curl", "netcat", "dnsutils"),
}

# Profiles whose tools are of little use offline: `groups set` and `env build` say so, and
# leave the network policy alone.
EXPECTS_FULL_NETWORK = {
    "build-install": "npm, pip and cargo fetch from the internet",
    "debug-network": "its tools probe the network",
}

# An attribute path of nixpkgs: identifiers joined by dots (`python312`, `nodePackages.pnpm`).
# No quotes, no `${`, no spaces: a name is data to Nix (passed with --argstr, split there),
# and this keeps it so for anyone who reads it back. Four parts cover every real package set.
ATTR_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_+-]{0,99}(\.[A-Za-z_][A-Za-z0-9_+-]{0,99}){0,3}$")


class EnvError(SandboxError):
    """One line for the chat or the CLI: why a group's environment cannot be had."""


def attr_problem(name: str) -> str | None:
    """Why `name` cannot be a nixpkgs attribute path, or None."""
    if ATTR_RE.match(name):
        return None
    shown = name[:64]
    return f"{shown!r} is not a nixpkgs attribute name (like jq, python312, nodePackages.pnpm)"


def parse_packages(value: str) -> tuple[str, ...]:
    """`jq, ripgrep,python312` as a tuple in the order given, duplicates dropped; ValueError
    names the first bad name. An empty value clears the list."""
    names = [part.strip() for part in value.split(",") if part.strip()]
    for name in names:
        if problem := attr_problem(name):
            raise ValueError(problem)
    return tuple(dict.fromkeys(names))


def profile_problem(name: str) -> str | None:
    """Why `name` is not a built-in profile (with the close ones), or None."""
    if name in PROFILES:
        return None
    close = difflib.get_close_matches(name, list(PROFILES), n=2, cutoff=0.5)
    hint = f" (did you mean {' or '.join(close)}?)" if close else ""
    return f"unknown profile {name[:64]!r}{hint}; one of {', '.join(PROFILES)}"


def resolve(profile: str | None, packages: tuple[str, ...]) -> tuple[str, ...]:
    """The attribute names an environment holds: `ALWAYS`, the profile's and the group's
    own, sorted and without duplicates (the order of a buildEnv's paths is not the
    group's to choose, and a sorted list makes one cache key per set)."""
    if profile is not None and (problem := profile_problem(profile)):
        raise EnvError(problem)
    listed = PROFILES[profile] if profile is not None else ()
    return tuple(sorted({*ALWAYS, *listed, *packages}))


def wanted_packages(group: Group) -> tuple[str, ...] | None:
    """The group's resolved packages; None when it declares neither, and keeps the host
    runtime. EnvError for a profile that is no longer built in."""
    if not group.packages and group.profile is None:
        return None
    return resolve(group.profile, group.packages)


def network_hint(profile: str | None, network: str, folder: str) -> str | None:
    """The hint for a profile that expects a network the group does not have."""
    if profile is None or profile not in EXPECTS_FULL_NETWORK or network == "full":
        return None
    why = EXPECTS_FULL_NETWORK[profile]
    return (
        f"hint: profile {profile} expects network=full ({why}); it does not grant it. "
        f"To allow: nanoclaw groups set {folder} network=full"
    )


def catalog_lines(text: str = "") -> list[str]:
    """The profiles and their packages, those whose name or a package contains `text`."""
    needle = text.lower()
    lines = []
    for name, packages in PROFILES.items():
        if needle and needle not in name and not any(needle in p.lower() for p in packages):
            continue
        why = EXPECTS_FULL_NETWORK.get(name)
        note = f"  (expects network=full: {why})" if why else ""
        lines.append(f"{name:<16} {', '.join(packages)}{note}")
    always = f"every environment also holds {' and '.join(ALWAYS)}"
    return [*lines, always] if lines else [f"no profile matches {text[:64]!r}; {always}"]
