"""The Nix commands an environment needs (Debian's nix-bin 2.8: nix-build, nix-instantiate,
nix-store, no flakes): where they are, what nixpkgs is, which names it lacks, the build with
its progress, the closure and its size. Names reach Nix only as --argstr data.
"""

from __future__ import annotations

import asyncio
import difflib
import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from nanoclaw.nixenv.catalog import EnvError

STORE = "/nix/store/"
INSTALL_NIX = (
    "install Nix: sudo apt-get install nix-bin (Debian, Ubuntu), or see https://nixos.org/download"
)
# A lookup path such as <nixpkgs>, resolved through NIX_PATH by `nix-instantiate --find-file`.
LOOKUP_RE = re.compile(r"^<([A-Za-z0-9._+-]+(?:/[A-Za-z0-9._+-]+)*)>$")
STORE_NAME_RE = re.compile(r"/nix/store/[a-z0-9]{32}-([^/'\s]+)")

# Both expressions take the attribute names as one space-separated string and split it in
# Nix, so no name is ever spliced into Nix source. ignoreCollisions: bash and bashInteractive
# both give bin/bash; the first path wins, as in a profile.
_SPLIT = """
  names = builtins.filter (s: builtins.isString s && s != "") (builtins.split " " attrs);
  parts = a: builtins.filter builtins.isString (builtins.split "[.]" a);
"""
BUILD_EXPR = f"""{{ nixpkgs, attrs, name }}:
let
  pkgs = import nixpkgs {{ }};{_SPLIT}
  get = a: builtins.foldl' (set: k: builtins.getAttr k set) pkgs (parts a);
in
pkgs.buildEnv {{ inherit name; paths = map get names; ignoreCollisions = true; }}
"""
# Per name: whether it is there and a derivation, and else the names beside it, for close
# matches. tryEval: an attribute of nixpkgs may throw (a removed package's alias).
CHECK_EXPR = f"""{{ nixpkgs, attrs }}:
let
  pkgs = import nixpkgs {{ }};{_SPLIT}
  isDrv = v: builtins.isAttrs v && (v.type or "") == "derivation";
  go = set: prefix: ps:
    let
      h = builtins.head ps;
      has = builtins.tryEval (builtins.isAttrs set && builtins.hasAttr h set);
    in
    if !(has.success && has.value) then {{
      found = false; drv = false;
      near = map (n: prefix + n) (if builtins.isAttrs set then builtins.attrNames set else [ ]);
    }}
    else if builtins.tail ps == [ ] then
      let d = builtins.tryEval (isDrv (builtins.getAttr h set)); in
      {{ found = true; drv = d.success && d.value; near = [ ]; }}
    else go (builtins.getAttr h set) (prefix + h + ".") (builtins.tail ps);
in
map (a: {{ name = a; }} // go pkgs "" (parts a)) names
"""


@dataclass(frozen=True)
class NixTools:
    """The directory of nix-build, nix-instantiate and nix-store, and their environment."""

    bin: Path
    environ: Mapping[str, str]

    def cmd(self, tool: str, *args: str) -> list[str]:
        return [str(self.bin / tool), *args]


def find_nix(nix_bin: Path | None, environ: Mapping[str, str]) -> NixTools:
    """The Nix tools in `nix_bin`, else on the PATH of `environ`; EnvError says how to
    install them."""
    found = nix_bin if nix_bin is not None else None
    if found is None:
        path = shutil.which("nix-build", path=environ.get("PATH", ""))
        found = Path(path).parent if path else None
    if found is None or not (found / "nix-build").is_file():
        raise EnvError(f"Nix is not installed on this host; {INSTALL_NIX}")
    return NixTools(found, environ)


def _run(tools: NixTools, argv: list[str], timeout: float = 300) -> str:
    try:
        proc = subprocess.run(
            argv, capture_output=True, text=True, env=dict(tools.environ), timeout=timeout
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise EnvError(f"{Path(argv[0]).name} did not run: {exc}") from exc
    if proc.returncode != 0:
        raise EnvError(failure_line(proc.stderr.splitlines(), f"{Path(argv[0]).name} failed"))
    return proc.stdout


def nixpkgs_path(tools: NixTools | None, nixpkgs: str) -> str:
    """NANOCLAW_NIXPKGS as an absolute path: a lookup path such as <nixpkgs> is resolved
    through NIX_PATH (which needs Nix), a path must exist."""
    if match := LOOKUP_RE.match(nixpkgs):
        if tools is None:
            raise EnvError(f"Nix is not installed on this host; {INSTALL_NIX}")
        try:
            return _run(tools, tools.cmd("nix-instantiate", "--find-file", match[1]), 30).strip()
        except EnvError as exc:
            raise EnvError(
                f"NANOCLAW_NIXPKGS {nixpkgs} is not in NIX_PATH: set NANOCLAW_NIXPKGS to a "
                "nixpkgs checkout, or add the channel (nix-channel --add "
                "https://nixos.org/channels/nixpkgs-unstable nixpkgs && nix-channel --update)"
            ) from exc
    if not os.path.exists(nixpkgs):
        raise EnvError(f"NANOCLAW_NIXPKGS {nixpkgs}: no such file or directory")
    return nixpkgs


def nixpkgs_identity(path: str) -> str:
    """What changes when the package set does, cheaply (it keys the cache at every run) and
    the same whoever asks (no PATH, no git binary involved).

    A path in /nix/store (the flake's pin, a channel) never changes: its store path is the
    identity. A checkout is its resolved path and the mtime and size of its entry file (an
    edit there, as in the tests' stub) and of .git/HEAD and .git/index (a pull, a switch,
    a commit). An uncommitted edit elsewhere is not seen: `nanoclaw env build --force`
    rebuilds, and Nix reuses whatever did not change.
    """
    real = os.path.realpath(path)
    if real.startswith(STORE):
        return STORE + real[len(STORE) :].split("/", 1)[0]
    top = Path(real)
    entries = [top / "default.nix", top / ".git" / "HEAD", top / ".git" / "index"]
    if not top.is_dir():
        entries = [top]
    stamps = []
    for entry in entries:
        try:
            st = entry.stat()
            stamps.append(f"{entry.name}:{st.st_mtime_ns}:{st.st_size}")
        except OSError:
            stamps.append(f"{entry.name}:-")
    return f"{real} {' '.join(stamps)}"


def unknown_names(tools: NixTools, nixpkgs: str, names: tuple[str, ...]) -> str | None:
    """One line naming every attribute nixpkgs lacks or that is not a package, with close
    names; None when all are packages. Evaluates only, builds nothing."""
    argv = tools.cmd("nix-instantiate", "--eval", "--strict", "--json", "--expr", CHECK_EXPR)
    argv += ["--argstr", "nixpkgs", nixpkgs, "--argstr", "attrs", " ".join(names)]
    return unknown_line(json.loads(_run(tools, argv)))


def unknown_line(report: list[dict[str, object]]) -> str | None:
    """Pure: the one line for CHECK_EXPR's answer."""
    problems = []
    for entry in report:
        name = str(entry["name"])
        if not entry["found"]:
            near = [str(n) for n in entry["near"]] if isinstance(entry["near"], list) else []
            close = difflib.get_close_matches(name, near, n=3, cutoff=0.6)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            problems.append(f"{name}{hint}")
        elif not entry["drv"]:
            problems.append(f"{name} (not a package)")
    if not problems:
        return None
    noun = "package" if len(problems) == 1 else "packages"
    return f"unknown {noun} in nixpkgs: {'; '.join(problems)}"


def failure_line(lines: list[str], fallback: str) -> str:
    """Pure: Nix's first error, with the builder's last words before it, store paths
    shortened to their names."""
    errors = [i for i, line in enumerate(lines) if line.startswith("error:")]
    if not errors:
        tail = [line.strip() for line in lines if line.strip()]
        return _short(tail[-1]) if tail else fallback
    first = errors[0]
    said = [
        line.strip()
        for line in lines[:first]
        if line.strip()
        and not line.startswith(("building '", "these ", "  /nix/store", "warning:"))
    ]
    line = lines[first].removeprefix("error:").strip()
    return _short(f"{line}: {said[-1]}" if said else line)


def _short(line: str) -> str:
    return STORE_NAME_RE.sub(lambda m: m[1].removesuffix(".drv"), line)[:400]


async def build(
    tools: NixTools,
    nixpkgs: str,
    names: tuple[str, ...],
    name: str,
    out_link: Path,
    progress: Callable[[str], None] | None,
) -> str:
    """nix-build the environment with `out_link` as its GC root; each line Nix writes goes
    to `progress` as it comes. The store path, or EnvError with Nix's reason."""
    argv = tools.cmd("nix-build", "--expr", BUILD_EXPR, "--out-link", str(out_link))
    argv += ["--argstr", "nixpkgs", nixpkgs, "--argstr", "attrs", " ".join(names)]
    argv += ["--argstr", "name", name]
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=dict(tools.environ),
        )
    except OSError as exc:
        raise EnvError(f"nix-build did not run: {exc}") from exc
    assert proc.stdout is not None and proc.stderr is not None
    said: list[str] = []
    try:
        out, _ = await asyncio.gather(proc.stdout.read(), _relay(proc.stderr, said, progress))
        code = await proc.wait()
    except BaseException:  # cancelled (a /stop, shutdown): no orphan build
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        raise
    if code != 0:
        raise EnvError(failure_line(said, f"nix-build exited with {code}"))
    return out.decode().strip().splitlines()[-1]


async def _relay(
    stream: asyncio.StreamReader, said: list[str], progress: Callable[[str], None] | None
) -> None:
    while line := await stream.readline():
        text = line.decode(errors="replace").rstrip()
        said.append(text)
        del said[:-200]  # the tail is all an error line needs
        if progress is not None and text:
            progress(text)


def closure(tools: NixTools, path: str) -> tuple[tuple[str, ...], int]:
    """Every store path `path` needs (itself included) and their total NAR size in bytes."""
    paths = tuple(_run(tools, tools.cmd("nix-store", "-qR", path)).split())
    sizes = _run(tools, tools.cmd("nix-store", "-q", "--size", *paths)).split()
    return paths, sum(int(s) for s in sizes)


def probe(tools: NixTools, nixpkgs: str) -> str:
    """Nix's version, once `import nixpkgs {}` proved a package set with buildEnv (for a
    real nixpkgs this evaluates its top level: a second or two, for `doctor`)."""
    expr = "{ nixpkgs }: (import nixpkgs { }) ? buildEnv"
    argv = tools.cmd("nix-instantiate", "--eval", "--expr", expr, "--argstr", "nixpkgs", nixpkgs)
    if _run(tools, argv, 120).strip() != "true":
        raise EnvError(f"NANOCLAW_NIXPKGS {nixpkgs}: `import` gives no package set with buildEnv")
    return _run(tools, tools.cmd("nix-build", "--version"), 30).strip()
