"""The bwrap command line for one agent run (SPEC section 5), built by a pure function.

The launcher puts the host's `Runtime` (`nanoclaw.sandbox.runtime`, read once per daemon) and
the group's paths, and its Nix environment if it has one (`NixMount`), into a `SandboxPlan`;
`bwrap_argv()` turns a plan into argv with exactly the mounts of the SPEC and reads nothing
else, so tests can read the plan and probes can try to break it. Without an environment the
root mirrors the host's /usr; with one it holds /env, the env's closure and the runtime's own
closure only, and every program on PATH comes from /env.

Limits: the rlimits are set by prlimit *inside* the sandbox, after bwrap made its user
namespace. RLIMIT_NPROC is then counted per sandbox (the kernel counts per namespace and
uid), so one sandbox's fork bomb cannot starve another of an ordinary user's sandboxes.
Host root is exempt from RLIMIT_NPROC, and under a root daemon the sandbox user *is* host
uid 0 to the kernel: then the cgroup of `nanoclaw.sandbox.cgroup` caps processes and memory. Being
host uid 0 also passes the owner checks of global /proc files (sysctls such as
kernel.core_pattern, IRQ affinity), hence PROC_RO, and the check of /proc/keys and of
kernel-wide lists (timers, slabs, vmalloc), hence PROC_MASKED; /dev is read-only, /tmp
size-capped. The seccomp program (`nanoclaw.sandbox.seccomp`) arrives on a file descriptor.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from nanoclaw.agent.protocol import EGRESS_SOCK, ERRORS, LLM_SOCK, NUDGE_SOCK
from nanoclaw.models import NetworkPolicy
from nanoclaw.sandbox.runtime import NIX_STORE, RUNTIME, Closure, Runtime, store_path

SANDBOX_UID = 1000
# Global (not per-process) parts of /proc, bound read-only over the sandbox's own /proc.
PROC_RO = ("sys", "sysrq-trigger", "irq", "bus", "fs", "acpi", "scsi", "driver", "mtrr", "pressure")
# Single files from /etc that programs need and that hold no secret of the host.
ETC_FILES = (
    "/etc/ld.so.cache",
    "/etc/alternatives",
    "/etc/localtime",
    "/etc/nsswitch.conf",
    "/etc/ssl/certs",
    "/etc/ca-certificates.conf",
    "/etc/mime.types",
    "/etc/bash.bashrc",
)
# A minimal /dev: the nodes programs open, and the usual links into /proc.
DEV_NODES = ("null", "zero", "full", "random", "urandom")
DEV_LINKS = (
    ("fd", "/proc/self/fd"),
    ("stdin", "/proc/self/fd/0"),
    ("stdout", "/proc/self/fd/1"),
    ("stderr", "/proc/self/fd/2"),
)
NET_ETC_FILES = ("/etc/resolv.conf", "/etc/hosts", "/etc/host.conf", "/etc/gai.conf")
ETC_PASSWD = "root:x:0:0:root:/root:/bin/false\nagent:x:1000:1000:agent:/workspace:/bin/bash\n"  # noqa: S105 (no secret: the sandbox user list)
ETC_GROUP = "root:x:0:\nagent:x:1000:\n"
HOST_PATH = "/usr/local/bin:/usr/bin:/bin"
ENV = "/env"
ENV_PATH = "/env/bin"  # nothing of the host after it: every program comes from the env
# Fixed paths that shebangs, `subprocess(shell=True)` and the runner's bash tool start.
ENV_LINKS = (("/bin/sh", "sh"), ("/bin/bash", "bash"), ("/usr/bin/env", "env"))
CA_BUNDLE = "etc/ssl/certs/ca-bundle.crt"  # where nixpkgs' cacert puts it in an env


@dataclass(frozen=True)
class Limits:
    """One sandbox's caps; the rlimits bind each process, `processes` and `memory_bytes`
    the whole sandbox (RLIMIT_NPROC per sandbox, and the cgroup when there is one)."""

    tmp_bytes: int = 256 * 1024 * 1024
    file_bytes: int = 512 * 1024 * 1024
    open_files: int = 1024
    address_space: int = 8 * 1024**3
    processes: int = 512
    cpu_seconds: int = 600
    memory_bytes: int = 4 * 1024**3


@dataclass(frozen=True)
class NixMount:
    """A group's built Nix environment as a run mounts it: `env` (its store path) at /env,
    each store path of its `closure` read-only at its own path, nothing else of the store."""

    env: str
    closure: tuple[str, ...]
    cert_file: str | None = None  # the env's CA bundle, inside, when it has one

    def __post_init__(self) -> None:
        # Each path is bound at its own place: anything but a store path would bind the host.
        for path in (self.env, *self.closure):
            if store_path(path) != path or ".." in Path(path).parts:
                raise ValueError(f"not a Nix store path: {path!r}")


def nix_mount(env: str | os.PathLike[str], closure: Iterable[str]) -> NixMount:
    """The mount of a built environment (`BuiltEnv.path`, `BuiltEnv.closure`): its store
    path resolved now (an out-link may be moved later), itself in its closure, and its CA
    bundle if it has one (cacert); without one, programs fall back to /etc/ssl/certs,
    the sandbox's copy of the host's bundle."""
    real = os.path.realpath(env)
    paths = tuple(dict.fromkeys((*closure, real)))
    bundle = f"{ENV}/{CA_BUNDLE}" if Path(real, CA_BUNDLE).is_file() else None
    return NixMount(real, paths, bundle)


@dataclass(frozen=True)
class SandboxPlan:
    workspace: Path
    ipc: Path
    global_dir: Path
    global_writable: bool
    skills: Path
    agent_code: Path
    etc: Path
    runtime: Runtime
    network: NetworkPolicy = "off"
    extra_ro: tuple[tuple[str, str], ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    limits: Limits = field(default_factory=Limits)
    sockets: Path | None = None  # host-only dir of the served sockets; None: in `ipc` (probes)
    nix: NixMount | None = None  # the group's environment: then no host /usr, /bin, /lib

    @property
    def socket_dir(self) -> Path:
        return self.sockets or self.ipc


def write_etc(directory: Path) -> Path:
    """The sandbox's own /etc, mounted whole (one mount is cheaper than ten).

    It holds copies of the few host files programs need (none secret), empty
    placeholders for the network files bound over them when the network is on, and
    its own passwd and group: the agent user, nobody of the host.
    """
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in (("passwd", ETC_PASSWD), ("group", ETC_GROUP)):
        path = directory / name
        if not path.is_file() or path.read_text() != text:
            path.write_text(text)
    for source in ETC_FILES:
        src, dst = Path(source), directory / Path(source).relative_to("/etc")
        if dst.exists() or dst.is_symlink() or not src.exists():
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir() and not src.is_symlink():
            shutil.copytree(src, dst, symlinks=True)
        else:
            shutil.copy2(src, dst, follow_symlinks=False)
    for source in NET_ETC_FILES:
        (directory / Path(source).name).touch(exist_ok=True)
    return directory


def bwrap_argv(plan: SandboxPlan, command: list[str], seccomp_fd: int | None = None) -> list[str]:
    """The full bwrap argv; every mount is listed here and nowhere else. `seccomp_fd`: a
    descriptor bwrap reads the filter's BPF program from (spawn.py always gives one).

    Pure: what it knows of the host comes from `plan.runtime.host`."""
    host = plan.runtime.host
    a = ["bwrap", "--unshare-user", "--unshare-pid", "--unshare-ipc", "--unshare-uts"]
    a += ["--unshare-cgroup-try"]
    if plan.network != "full":
        a.append("--unshare-net")
    a += ["--disable-userns", "--die-with-parent", "--new-session", "--clearenv"]
    a += ["--cap-drop", "ALL"]
    a += ["--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID), "--hostname", "nanoclaw"]
    if plan.nix is None:
        a += ["--ro-bind", "/usr", "/usr"]
        for path, target in host.top_dirs:
            a += ["--symlink", target, path] if target else ["--ro-bind", path, path]
    a += ["--ro-bind", str(plan.etc), "/etc"]
    if plan.network == "full":
        for path in NET_ETC_FILES:
            a += ["--ro-bind-try", path, path]
    if plan.nix is None and host.nix_store:
        a += ["--ro-bind", NIX_STORE, NIX_STORE]
    masked = plan.runtime.masked
    if plan.nix is not None:
        a += env_mounts(plan.nix, plan.runtime)
        masked += closure_of(plan.runtime).masked
    for src, dst in plan.runtime.mounts:
        a += ["--ro-bind", src, dst]
    for path in masked:  # the interpreter's installed packages: none inside
        a += ["--tmpfs", path, "--remount-ro", path]
    a += ["--ro-bind", str(plan.agent_code), f"{RUNTIME}/lib/agent"]
    a += ["--proc", "/proc"]
    for name in PROC_RO:
        a += ["--ro-bind-try", f"/proc/{name}", f"/proc/{name}"]
    for name in host.proc_masked:
        a += ["--ro-bind", "/dev/null", f"/proc/{name}"]
    a += ["--tmpfs", "/dev"]  # read-only once its nodes and links are in
    for node in DEV_NODES:
        a += ["--dev-bind", f"/dev/{node}", f"/dev/{node}"]
    for link, target in DEV_LINKS:
        a += ["--symlink", target, f"/dev/{link}"]
    a += ["--remount-ro", "/dev"]
    a += ["--size", str(plan.limits.tmp_bytes), "--tmpfs", "/tmp"]
    a += ["--bind", str(plan.workspace), "/workspace"]
    a += ["--bind", str(plan.ipc), "/ipc"]
    # errors/ is the host's; llm.sock is pinned so the agent cannot swap it for its own.
    a += ["--tmpfs", f"/ipc/{ERRORS}", "--remount-ro", f"/ipc/{ERRORS}"]
    # The sockets are served outside /ipc (no bind or chmod of the host's follows a link
    # planted there); a gate script has no egress proxy, hence -try.
    a += ["--ro-bind", str(plan.socket_dir / LLM_SOCK), f"/ipc/{LLM_SOCK}"]
    # The IPC watcher serves the nudge socket while it watches the group.
    a += ["--ro-bind-try", str(plan.socket_dir / NUDGE_SOCK), f"/ipc/{NUDGE_SOCK}"]
    if plan.network == "allowlist":
        a += ["--ro-bind-try", str(plan.socket_dir / EGRESS_SOCK), f"/ipc/{EGRESS_SOCK}"]
    a += ["--bind" if plan.global_writable else "--ro-bind", str(plan.global_dir), "/global"]
    a += ["--ro-bind", str(plan.skills), "/skills"]
    for src, dst in plan.extra_ro:
        a += ["--ro-bind", src, dst]
    a += ["--remount-ro", "/"]
    env = {
        "PATH": HOST_PATH if plan.nix is None else ENV_PATH,
        **(cert_env(plan.nix.cert_file) if plan.nix and plan.nix.cert_file else {}),
        "HOME": "/workspace",
        "LANG": "C.UTF-8",
        "TMPDIR": "/tmp",
        "PYTHONDONTWRITEBYTECODE": "1",
        **dict(plan.runtime.env if plan.nix is None else closure_of(plan.runtime).env),
        **dict(plan.env),
    }
    for key, value in env.items():
        a += ["--setenv", key, value]
    if seccomp_fd is not None:
        a += ["--seccomp", str(seccomp_fd)]
    a += ["--chdir", "/workspace", "--", *limits_prefix(plan.limits, plan.runtime.prlimit)]
    return [*a, *command]


def closure_of(runtime: Runtime) -> Closure:
    if runtime.closure is None:
        raise ValueError("a plan with a Nix environment needs the runtime's detect_closure()")
    return runtime.closure


def env_mounts(nix: NixMount, runtime: Runtime) -> list[str]:
    """The root of a sandbox with a Nix environment: its closure, the env at /env, what the
    runtime needs (file by file, at the paths the loader opens), and the fixed program
    paths as links into /env/bin. Nothing else of /nix/store, /usr, /bin or /lib."""
    a: list[str] = []
    for path in nix.closure:
        a += ["--ro-bind", path, path]
    a += ["--ro-bind", nix.env, ENV]
    for src, dst in closure_of(runtime).binds:
        a += ["--ro-bind", src, dst]
    for link, name in ENV_LINKS:
        a += ["--symlink", f"{ENV_PATH}/{name}", link]
    return a


def cert_env(bundle: str) -> dict[str, str]:
    """OpenSSL reads SSL_CERT_FILE; nixpkgs' curl, git and others NIX_SSL_CERT_FILE."""
    return {"SSL_CERT_FILE": bundle, "NIX_SSL_CERT_FILE": bundle}


def hide_args(argv: list[str], fd: int) -> tuple[list[str], bytes]:
    """Move bwrap's options into a file descriptor (`--args FD`); the command stays.

    bwrap stays pid 1 inside the sandbox, and its command line, readable at
    /proc/1/cmdline, would otherwise show every host path of the mount plan.
    """
    if not argv or argv[0] != "bwrap" or "--" not in argv:
        raise ValueError("argv must be bwrap OPTIONS -- COMMAND")
    split = argv.index("--")
    payload = b"".join(arg.encode() + b"\0" for arg in argv[1:split])
    return ["bwrap", "--args", str(fd), *argv[split:]], payload


def limits_prefix(limits: Limits, prlimit: str = "prlimit") -> list[str]:
    """prlimit in front of the command: hard limits the sandbox cannot raise again.

    `bwrap_argv()` puts it inside the sandbox. In front of bwrap it would also work, but
    the user namespace would then inherit the RLIMIT_NPROC as a cap on all the daemon
    user's processes: one sandbox's fork bomb would stop others from starting.
    """
    return [
        prlimit,
        f"--nofile={limits.open_files}",
        f"--fsize={limits.file_bytes}",
        f"--as={limits.address_space}",
        f"--nproc={limits.processes}",
        f"--cpu={limits.cpu_seconds}",
        "--core=0",
        "--",
    ]


def agent_command(runtime: Runtime) -> list[str]:
    """Start the runner with an isolated interpreter and no `site` (-S: no site dir on
    sys.path); it imports the standard library and its own package only."""
    boot = (
        f"import sys; sys.path[:0] = [{RUNTIME + '/lib'!r}]; import runpy; "
        "runpy.run_module('agent', run_name='__main__')"
    )
    return [runtime.python, "-I", "-S", "-B", "-c", boot]
