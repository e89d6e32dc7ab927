"""What a sandbox takes from the host to run the runner: the host's root layout (`Host`),
the interpreter (`Runtime`) and its files for a sandbox with no host /usr (`Closure`); read
once per daemon by the `detect_*` functions, then plain inputs to `plan.bwrap_argv`.
"""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

RUNTIME = "/runtime"
NIX_STORE = "/nix/store"
TOP_DIRS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")  # mirrored beside /usr
# Global files of /proc hidden behind /dev/null (Docker's masked paths and more): kernel
# addresses and timers of the host, and the host's keys, readable by uid 0.
PROC_MASKED = (
    "kcore",
    "keys",
    "key-users",
    "latency_stats",
    "timer_list",
    "timer_stats",
    "sched_debug",
    "slabinfo",
    "vmallocinfo",
)
GUI_MODULES = ("_tkinter",)  # extension modules whose libraries the closure leaves out
# Run by the runtime's own interpreter (any version, no site): where its parts are.
FACTS = (
    "import json, site, sys, sysconfig; p = sysconfig.get_paths(); print(json.dumps({"
    "'executable': sys.executable, 'base': sys.base_prefix, 'stdlib': p['stdlib'], "
    "'platstdlib': p['platstdlib'], 'site': site.getsitepackages(), "
    "'tzpath': sysconfig.get_config_var('TZPATH') or ''}))"
)
DETECT_TIMEOUT_S = 60.0

Bind = tuple[str, str]  # (host path, path inside)


@dataclass(frozen=True)
class Host:
    """What a sandbox mirrors of the host's root and kernel, as `detect_host()` found it."""

    # ("/bin", "usr/bin") for a merged-/usr symlink, ("/lib64", None) for a real directory
    top_dirs: tuple[tuple[str, str | None], ...]
    nix_store: bool  # the host has /nix/store (a group's Nix environment lives there)
    proc_masked: tuple[str, ...]  # the files of PROC_MASKED this kernel has


@dataclass(frozen=True)
class Closure:
    """What the runtime needs of the host when the sandbox mounts no host /usr or /lib (a
    group with a Nix environment), beyond `Runtime.mounts`: the interpreter, its standard
    library, the shared libraries these and prlimit load (the dynamic loader too), the
    time-zone database; each bound read-only at the path the loader or Python opens."""

    binds: tuple[Bind, ...]
    masked: tuple[str, ...] = ()  # site dirs inside `binds`: empty inside
    env: tuple[tuple[str, str], ...] = ()  # replaces `Runtime.env` in such a sandbox


@dataclass(frozen=True)
class Runtime:
    """Where the interpreter comes from on the host, and how it appears inside; with the
    host's own layout, so that building the argv reads nothing. No package is mounted: the
    runner needs the standard library only, and the interpreter's own site dirs (`masked`,
    paths inside) are hidden behind empty directories."""

    mounts: tuple[Bind, ...]
    python: str
    masked: tuple[str, ...]
    host: Host
    env: tuple[tuple[str, str], ...] = ()
    prlimit: str = "/usr/bin/prlimit"  # the host's, run inside: under /usr or /nix/store
    closure: Closure | None = None  # `detect_closure()`: needed by a plan with a Nix env


def detect_host() -> Host:
    """The host's root and kernel as a sandbox mirrors them, read now (once per daemon)."""
    top: list[tuple[str, str | None]] = []
    for name in TOP_DIRS:
        path = f"/{name}"
        if os.path.islink(path):
            top.append((path, os.readlink(path)))
        elif os.path.isdir(path):
            top.append((path, None))
    # only those this kernel has: bwrap cannot create a file in /proc to mount over
    masked = tuple(name for name in PROC_MASKED if os.path.exists(f"/proc/{name}"))
    return Host(tuple(top), Path(NIX_STORE).is_dir(), masked)


def detect_runtime() -> Runtime:
    """The running interpreter (the base one, not a venv's), seen read-only at /runtime
    inside; /usr and /nix as they are. Its standard library comes with it, its site dirs not."""
    base = Path(sys.base_prefix).resolve()
    mounts: list[Bind] = []
    ver = f"python{sys.version_info.major}.{sys.version_info.minor}"
    inside = base
    if base.is_relative_to("/usr") or base.is_relative_to("/nix"):
        python = str(Path(sys.base_prefix) / "bin" / ver)
        env: tuple[tuple[str, str], ...] = ()
    else:
        inside = Path(f"{RUNTIME}/python")
        mounts.append((str(base), str(inside)))
        python = f"{RUNTIME}/python/bin/{ver}"
        env = (("LD_LIBRARY_PATH", f"{RUNTIME}/python/lib"),)
    masked: list[str] = []
    for site_dir in site.getsitepackages([str(base)]):
        path = Path(site_dir).resolve()
        # only under /runtime/python: a /usr or /nix interpreter's dirs are the system's (-S
        # keeps them off the runner's sys.path; the group's own tools may use them)
        if inside != base and path.is_dir() and path.is_relative_to(base):
            masked.append(str(inside / path.relative_to(base)))
    found = shutil.which("prlimit")
    prlimit = os.path.realpath(found) if found else Runtime.prlimit
    return Runtime(tuple(mounts), python, tuple(dict.fromkeys(masked)), detect_host(), env, prlimit)


def parse_ldd(text: str) -> tuple[str, ...]:
    """The libraries `ldd` reports loaded, as the paths the loader opened (in order, once
    each). Headers of several files, the vDSO, "statically linked" and "not found" (that
    module would fail to import inside, as it does outside) give nothing."""
    found: list[str] = []
    for raw in text.splitlines():
        line = raw.strip()
        if " (0x" not in line:
            continue
        path = line.split("=>", 1)[1].strip() if "=>" in line else line
        path = path.split(" (0x", 1)[0].strip()
        if path.startswith("/"):
            found.append(path)
    return tuple(dict.fromkeys(found))


def to_host(runtime: Runtime, inside: str) -> str:
    """The host path of a path inside that lies in one of the runtime's mounts (else itself)."""
    for src, dst in runtime.mounts:
        if Path(inside).is_relative_to(dst):
            return str(Path(src) / Path(inside).relative_to(dst))
    return inside


def store_path(path: str) -> str | None:
    """/nix/store/HASH-NAME of a path inside the store, or None."""
    parts = Path(path).parts
    if len(parts) > 3 and Path(*parts[:3]) == Path(NIX_STORE):
        return str(Path(*parts[:4]))
    return None


def _covered(path: str, binds: list[Bind], roots: tuple[str, ...]) -> bool:
    """Whether `path` (inside) is already one of the binds or below one, or below a root."""
    inside = [dst for _, dst in binds]
    return any(Path(path).is_relative_to(p) for p in (*inside, *roots))


def _output(argv: list[str], env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(
        argv, capture_output=True, text=True, env=env or {}, timeout=DETECT_TIMEOUT_S
    )
    return proc.stdout  # ldd exits 1 when one of many files is not dynamic: read what it saw


def _runpath_libs(ldd: str, exe: str, roots: tuple[str, ...]) -> tuple[Bind, ...] | None:
    """A relocated interpreter's own libraries (libpython) where its RUNPATH finds them on the
    host, to be bound there too; None if it needs LD_LIBRARY_PATH to find them."""
    text = _output([ldd, exe])
    if "not found" in text:
        return None
    own = [path for path in parse_ldd(text) if _covered(os.path.realpath(path), [], roots)]
    return tuple((os.path.realpath(path), path) for path in own)


def detect_closure(runtime: Runtime) -> Closure:
    """The runtime's closure (see `Closure`), found from the files themselves: `ldd` over the
    interpreter, its standard library's extension modules and prlimit (the host's own system
    files, not the agent's), `nix-store -qR` for those in /nix/store. `_tkinter` is left out:
    its GUI stack (X11, fonts, Tcl/Tk) cannot work with no display and no Tcl library. A few
    tenths of a second: the daemon asks only when a group with an environment first runs."""
    env = {key: to_host(runtime, value) for key, value in runtime.env}
    python = to_host(runtime, runtime.python)
    facts = json.loads(_output([python, "-I", "-S", "-c", FACTS], env))
    roots = tuple(path for mount in runtime.mounts for path in mount)  # bound whole already
    exe, prlimit = os.path.realpath(facts["executable"]), os.path.realpath(runtime.prlimit)
    binds: list[Bind] = []
    stores = [p for p in (store_path(exe), store_path(prlimit)) if p]
    nix_store = shutil.which("nix-store")
    if stores and nix_store:
        closure = _output([nix_store, "--query", "--requisites", *stores]).split()
        binds += [(p, p) for p in closure if store_path(p) == p]
    dynload = Path(facts["platstdlib"]) / "lib-dynload"
    modules = sorted(str(m) for m in dynload.glob("*.so") if not m.name.startswith(GUI_MODULES))
    # what a store closure holds is there whole; the rest (even in a mount) loads host libs
    elf = [f for f in (exe, *modules, prlimit) if os.path.exists(f) and not _covered(f, binds, ())]
    ldd = shutil.which("ldd")
    for path in parse_ldd(_output([ldd, *elf], env)) if ldd and elf else ():
        if not _covered(path, binds, roots) and not _covered(os.path.realpath(path), [], roots):
            binds.append((os.path.realpath(path), path))
    # LD_LIBRARY_PATH would outrank the RUNPATH of the env's own programs (a Nix python
    # would load this libpython): where the interpreter's RUNPATH does, it is not set.
    own = _runpath_libs(ldd, exe, roots) if ldd and env else None
    binds += own or ()
    for src, dst in ((exe, runtime.python), (prlimit, prlimit)):
        if os.path.exists(src) and not _covered(dst, binds, roots):
            binds.append((src, dst))
    for directory in (facts["stdlib"], str(dynload)):
        if Path(directory).is_dir() and not _covered(directory, binds, roots):
            binds.append((os.path.realpath(directory), directory))
    # The runner's zoneinfo reads the first time-zone directory of TZPATH that exists.
    zones = [d for d in facts["tzpath"].split(os.pathsep) if d and Path(d).is_dir()]
    if zones and not _covered(zones[0], binds, roots):
        binds.append((os.path.realpath(zones[0]), zones[0]))
    masked = [
        d
        for d in facts["site"]
        if Path(d).is_dir() and _covered(d, binds, ()) and not _covered(d, [], roots)
    ]
    return Closure(tuple(binds), tuple(masked), runtime.env if own is None else ())
