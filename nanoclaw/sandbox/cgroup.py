"""A cgroup for each sandbox: caps on its processes and memory that bind every host uid.

Under a daemon running as root the sandbox user is host uid 0, which the kernel exempts
from RLIMIT_NPROC: only a pids cgroup stops a fork bomb, so a root daemon that cannot make
one refuses to start the sandbox. An ordinary user's daemon uses a cgroup when it may (a
delegated hierarchy) and otherwise relies on RLIMIT_NPROC, which binds it. The run's
cgroup is made under the daemon's own (cgroup v1) or at the top of the v2 tree (a v2
cgroup that holds processes, as the daemon's does, cannot pass controllers down).
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shlex
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from nanoclaw.errors import SandboxError
from nanoclaw.sandbox.plan import Limits

CONTROLLERS = frozenset({"pids", "memory"})
PREFIX = "nanoclaw-"
LABEL_RE = re.compile(r"[^A-Za-z0-9_.-]")


@dataclass(frozen=True)
class Hierarchy:
    base: Path  # the directory the runs' cgroups are made in
    controllers: frozenset[str]
    v2: bool


def find_hierarchies(proc_cgroup: str, mountinfo: str) -> list[Hierarchy]:
    """Where to make run cgroups, from /proc/self/cgroup and /proc/self/mountinfo (pure)."""
    own: dict[frozenset[str], str] = {}
    for line in proc_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3:
            own[frozenset(parts[1].split(",")) - {""}] = parts[2]
    v1: list[Hierarchy] = []
    v2: list[Hierarchy] = []
    for line in mountinfo.splitlines():
        fields = line.split(" - ", 1)
        head, tail = fields[0].split(), fields[-1].split()
        if len(fields) != 2 or len(head) < 5 or len(tail) < 3:
            continue
        root, point, fstype = head[3], Path(head[4].replace("\\040", " ")), tail[0]
        if fstype == "cgroup2" and root == "/" and frozenset() in own:
            v2.append(Hierarchy(point, CONTROLLERS, True))
        elif fstype == "cgroup":
            names = frozenset(tail[2].split(",")) & CONTROLLERS
            path = next((p for c, p in own.items() if (c & CONTROLLERS) == names), None)
            if names and path is not None and (path + "/").startswith(root.rstrip("/") + "/"):
                v1.append(Hierarchy(point / path[len(root) :].lstrip("/"), names, False))
    return v1 + v2  # a controller in a v1 hierarchy is absent from the v2 one


def jail_prefix(procs_files: list[Path]) -> list[str]:
    """A shell that joins the cgroups, then becomes the sandbox (nothing runs outside).

    The shell exports PWD, which bwrap, pid 1 inside, would show at /proc/1/environ: it is
    unset (and spawn.py starts the jail in `/`), so bwrap's environment stays empty."""
    if not procs_files:
        return []
    files = " ".join(shlex.quote(str(path)) for path in procs_files)
    # builtins only (no tee): a fork and an exec less on every sandbox start
    script = f'unset PWD; for f in {files}; do echo $$ > "$f" || exit 1; done; exec "$@"'
    return ["/bin/sh", "-c", script, "nanoclaw-jail"]


class RunCgroup:
    """`create()` before the sandbox, `prefix()` in front of its argv, `remove()` after."""

    def __init__(self, dirs: tuple[Path, ...] = ()) -> None:
        self.dirs = dirs

    @classmethod
    def create(
        cls,
        limits: Limits,
        label: str,
        *,
        required: bool | None = None,
        hierarchies: list[Hierarchy] | None = None,
    ) -> RunCgroup:
        """The run's cgroup; SandboxError when `required` (default: as root) and none can
        cap its processes. `hierarchies`: where to look (default: this process's)."""
        required = os.geteuid() == 0 if required is None else required
        found = _own_hierarchies() if hierarchies is None else hierarchies
        name = f"{PREFIX}{os.getpid()}-{LABEL_RE.sub('_', label)[:64]}-{secrets.token_hex(4)}"
        dirs: list[Path] = []
        covered: set[str] = set()
        for hierarchy in found:
            wanted = hierarchy.controllers - covered
            if hierarchy.v2:
                wanted = _enable_v2(hierarchy.base, wanted)
            if not wanted:
                continue
            path = hierarchy.base / name
            try:
                _sweep(hierarchy.base)
                path.mkdir()
            except OSError:
                continue
            dirs.append(path)
            try:
                _write_limits(path, wanted, limits, hierarchy.v2)
            except OSError:
                dirs.pop()
                with contextlib.suppress(OSError):
                    path.rmdir()
                continue
            covered |= wanted
        group = cls(tuple(dirs))
        if required and "pids" not in covered:
            group.remove()
            raise SandboxError(
                "running as root, the sandbox needs a pids cgroup it can create (root is "
                "exempt from RLIMIT_NPROC); mount a writable cgroup fs or run as a normal user"
            )
        return group

    def prefix(self) -> list[str]:
        return jail_prefix([path / "cgroup.procs" for path in self.dirs])

    def kill(self) -> None:
        """SIGKILL whatever is left in the cgroup (bwrap's pid namespace dies with it)."""
        for path in self.dirs:
            if (path / "cgroup.kill").exists():  # v2, Linux 5.14 and later
                with contextlib.suppress(OSError):
                    (path / "cgroup.kill").write_text("1")
            with contextlib.suppress(OSError, ValueError):
                for pid in (path / "cgroup.procs").read_text().split():
                    with contextlib.suppress(OSError):
                        os.kill(int(pid), signal.SIGKILL)

    def remove(self, wait_s: float = 5.0) -> None:
        """Kill what is left and remove the cgroups; blocking, so callers use a thread."""
        deadline = time.monotonic() + wait_s
        for path in self.dirs:
            pause = 0.002  # the next run waits for this slot: look again soon, then less often
            while True:
                self.kill()
                try:
                    path.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:  # busy until the kernel has reaped the last process
                    if time.monotonic() > deadline:
                        break
                    time.sleep(pause)
                    pause = min(pause * 2, 0.02)


def _own_hierarchies() -> list[Hierarchy]:
    try:
        cgroup = Path("/proc/self/cgroup").read_text()
        mountinfo = Path("/proc/self/mountinfo").read_text()
    except OSError:
        return []
    return find_hierarchies(cgroup, mountinfo)


def _enable_v2(base: Path, wanted: frozenset[str]) -> frozenset[str]:
    """The wanted controllers that `base` can hand to its children, enabling them."""
    try:
        have = wanted & frozenset((base / "cgroup.controllers").read_text().split())
        enabled = frozenset((base / "cgroup.subtree_control").read_text().split())
        if have - enabled:
            (base / "cgroup.subtree_control").write_text(
                " ".join(f"+{c}" for c in sorted(have - enabled))
            )
    except OSError:
        return frozenset()
    return have


def _write_limits(path: Path, controllers: frozenset[str], limits: Limits, v2: bool) -> None:
    if "pids" in controllers:
        (path / "pids.max").write_text(str(limits.processes))
    if "memory" in controllers:
        memory = str(limits.memory_bytes)
        (path / ("memory.max" if v2 else "memory.limit_in_bytes")).write_text(memory)
        swap = path / ("memory.swap.max" if v2 else "memory.memsw.limit_in_bytes")
        with contextlib.suppress(OSError):  # no swap accounting: nothing to cap
            swap.write_text("0" if v2 else memory)


def _sweep(base: Path) -> None:
    """Remove the empty run cgroups of daemons that died before removing them."""
    for path in base.glob(f"{PREFIX}*"):
        pid = path.name[len(PREFIX) :].split("-", 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            with contextlib.suppress(OSError):
                path.rmdir()
        except OSError:
            pass
