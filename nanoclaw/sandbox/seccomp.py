"""The seccomp filter of every sandbox (SPEC section 5): the rules, and their BPF program.

`RULES` is a deny-list modelled on Flatpak's (flatpak-run.c) and Docker's default profile;
`build_filter()` compiles it with the system's libseccomp (ctypes, no hand-written BPF) and
bwrap loads it (`--seccomp FD`) just before it executes the sandbox's command.

Why: the kernel keyrings are not namespaced and go by uid, and under a root daemon the
sandbox user is host uid 0; the other calls are interfaces an agent never needs, with a
record of exploits (bpf, perf, userfaultfd, io_uring, rare socket families) or that would
undo the sandbox (mounts, namespaces, file handles). Denied calls fail with an errno.
Calls of another ABI (int 0x80 and x32 on x86_64, arm32 on aarch64) all fail with ENOSYS:
the rules know the native numbers only. ptrace stays (gdb, strace; it reaches only the
sandbox's own processes, and kernels since 4.8 recheck the filter after a tracer).
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
from dataclasses import dataclass
from typing import Literal

LIBRARY = "libseccomp.so.2"
INSTALL_FIX = "sudo apt-get install -y libseccomp2 (Nix: add libseccomp to LD_LIBRARY_PATH)"
# AUDIT_ARCH_* tokens, as libseccomp names architectures.
ARCHES = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
NATIVE = 0
ALLOW = 0x7FFF0000
BADARCH_ATTR = 2  # SCMP_FLTATR_ACT_BADARCH
NO_SYSCALL = -1  # __NR_SCMP_ERROR: a name this libseccomp does not know
Op = Literal["ne", "ge", "eq", "masked_eq"]
OPS: dict[Op, int] = {"ne": 1, "ge": 5, "eq": 4, "masked_eq": 7}


def errno_action(code: int) -> int:
    return 0x00050000 | (code & 0xFFFF)


@dataclass(frozen=True)
class ArgTest:
    """One comparison of a syscall argument: `(arg & mask) == value` for masked_eq."""

    index: int
    op: Op
    value: int
    mask: int = 0


@dataclass(frozen=True)
class Rule:
    syscall: str
    errno: int = errno.EPERM
    when: ArgTest | None = None  # None: every call


# Denied outright, by what they reach.
DENIED: dict[str, tuple[str, ...]] = {
    "keyrings (not namespaced, keyed by uid)": ("add_key", "keyctl", "request_key"),
    "kernel programs, tracing": ("bpf", "perf_event_open", "lookup_dcookie", "syslog"),
    "io_uring (exploit-prone)": ("io_uring_setup", "io_uring_enter", "io_uring_register"),
    "memory of races and of others": ("userfaultfd", "move_pages", "migrate_pages"),
    "kexec": ("kexec_load", "kexec_file_load", "reboot"),
    "modules": ("init_module", "finit_module", "delete_module", "create_module"),
    "old module calls": ("query_module", "get_kernel_syms", "nfsservctl", "_sysctl"),
    "host resources": ("swapon", "swapoff", "acct", "quotactl", "quotactl_fd"),
    "hardware, 16-bit code": ("iopl", "ioperm", "modify_ldt", "vm86", "vm86old"),
    "obsolete": ("uselib", "ustat", "sysfs"),
    "mount tree": ("mount", "umount", "umount2", "pivot_root", "chroot", "mount_setattr"),
    "new mount API": ("move_mount", "open_tree", "fsopen", "fsconfig", "fsmount", "fspick"),
    "namespaces (clone's flags below)": ("unshare", "setns"),
    "files by handle (a classic breakout)": ("name_to_handle_at", "open_by_handle_at"),
    "filesystem-wide watches": ("fanotify_init",),
}
CLONE_NEW = {
    "CLONE_NEWNS": 0x00020000,
    "CLONE_NEWCGROUP": 0x02000000,
    "CLONE_NEWUTS": 0x04000000,
    "CLONE_NEWIPC": 0x08000000,
    "CLONE_NEWUSER": 0x10000000,
    "CLONE_NEWPID": 0x20000000,
    "CLONE_NEWNET": 0x40000000,
}  # CLONE_NEWTIME (0x80) is the exit-signal byte for clone(): only unshare/clone3 take it
TIOCSTI, TIOCLINUX = 0x5412, 0x541C  # push input into the terminal; console ioctls
# Socket families kept: AF_UNSPEC, AF_UNIX, AF_INET, AF_INET6, AF_NETLINK (0, 1, 2, 10, 16).
SOCKET_FAMILIES_DENIED = (*range(3, 10), *range(11, 16))
SOCKET_FAMILY_FIRST_RARE = 17  # AF_PACKET and everything after it

RULES: tuple[Rule, ...] = (
    *(Rule(name) for names in DENIED.values() for name in names),
    # clone3's flags are in memory BPF cannot read: ENOSYS makes glibc fall back to clone
    Rule("clone3", errno.ENOSYS),
    *(Rule("clone", when=ArgTest(0, "masked_eq", flag, flag)) for flag in CLONE_NEW.values()),
    *(Rule("ioctl", when=ArgTest(1, "masked_eq", op, 0xFFFFFFFF)) for op in (TIOCSTI, TIOCLINUX)),
    # Only PER_LINUX: READ_IMPLIES_EXEC, MMAP_PAGE_ZERO and the like help exploits (Flatpak)
    Rule("personality", when=ArgTest(0, "ne", 0)),
    *(
        Rule("socket", errno.EAFNOSUPPORT, ArgTest(0, "eq", family))
        for family in SOCKET_FAMILIES_DENIED
    ),
    Rule("socket", errno.EAFNOSUPPORT, ArgTest(0, "ge", SOCKET_FAMILY_FIRST_RARE)),
)


class FilterUnavailable(OSError):
    """libseccomp cannot be loaded or refused the rules: no sandbox may start unfiltered."""


@dataclass(frozen=True)
class Filter:
    bpf: bytes
    arch: str
    rules: int  # rules in the program (calls absent from this architecture left out)
    unknown: tuple[str, ...]  # names this libseccomp does not know (older than the kernel)


class _ArgCmp(ctypes.Structure):
    _fields_ = (
        ("arg", ctypes.c_uint),
        ("op", ctypes.c_int),
        ("datum_a", ctypes.c_uint64),
        ("datum_b", ctypes.c_uint64),
    )


def native_arch() -> str:
    return os.uname().machine


def load_library(library: str = LIBRARY) -> ctypes.CDLL:
    """libseccomp with the prototypes used here; FilterUnavailable names the fix."""
    try:
        lib = ctypes.CDLL(library)
    except OSError as exc:
        raise FilterUnavailable(
            f"cannot load {library} for the sandbox's seccomp filter ({exc}): {INSTALL_FIX}"
        ) from exc
    ctx, u32 = ctypes.c_void_p, ctypes.c_uint32
    protos: dict[str, tuple[object, tuple[object, ...]]] = {
        "seccomp_init": (ctx, (u32,)),
        "seccomp_release": (None, (ctx,)),
        "seccomp_attr_set": (ctypes.c_int, (ctx, ctypes.c_int, u32)),
        "seccomp_arch_add": (ctypes.c_int, (ctx, u32)),
        "seccomp_arch_remove": (ctypes.c_int, (ctx, u32)),
        "seccomp_arch_native": (u32, ()),
        "seccomp_syscall_resolve_name_arch": (ctypes.c_int, (u32, ctypes.c_char_p)),
        "seccomp_rule_add_array": (
            ctypes.c_int,
            (ctx, u32, ctypes.c_int, ctypes.c_uint, ctypes.POINTER(_ArgCmp)),
        ),
        "seccomp_export_bpf": (ctypes.c_int, (ctx, ctypes.c_int)),
    }
    for name, (restype, argtypes) in protos.items():
        function = getattr(lib, name)
        function.restype = restype
        function.argtypes = argtypes
    return lib


def syscall_number(lib: ctypes.CDLL, name: str, arch: str | None = None) -> int:
    """The number of `name` on `arch` (default native); negative where it has none."""
    token = NATIVE if arch is None else ARCHES[arch]
    return int(lib.seccomp_syscall_resolve_name_arch(token, name.encode()))


def _check(rc: int, what: str) -> None:
    if rc < 0:
        raise FilterUnavailable(f"libseccomp refused {what}: {os.strerror(-rc)}")


def build_filter(
    rules: tuple[Rule, ...] = RULES, arch: str | None = None, library: str = LIBRARY
) -> Filter:
    """The BPF program of `rules` for `arch` (default: this machine's): default allow."""
    lib = load_library(library)
    token = NATIVE if arch is None else ARCHES[arch]
    ctx = lib.seccomp_init(ALLOW)
    if not ctx:
        raise FilterUnavailable("libseccomp could not make a filter")
    try:
        _check(lib.seccomp_attr_set(ctx, BADARCH_ATTR, errno_action(errno.ENOSYS)), "bad-arch")
        if token not in (NATIVE, lib.seccomp_arch_native()):  # a foreign program (tests)
            _check(lib.seccomp_arch_add(ctx, token), f"arch {arch}")
            _check(lib.seccomp_arch_remove(ctx, NATIVE), "the native arch")
        added, unknown = 0, []
        for rule in rules:
            if syscall_number(lib, rule.syscall) == NO_SYSCALL:
                unknown.append(rule.syscall)
                continue
            if syscall_number(lib, rule.syscall, arch) < 0:
                continue  # not a call of this architecture (iopl on aarch64)
            _add(lib, ctx, rule)
            added += 1
        fd = os.memfd_create("nanoclaw-seccomp", os.MFD_CLOEXEC)
        try:
            _check(lib.seccomp_export_bpf(ctx, fd), "export")
            bpf = os.pread(fd, os.fstat(fd).st_size, 0)
        finally:
            os.close(fd)
    finally:
        lib.seccomp_release(ctx)
    return Filter(bpf, arch or native_arch(), added, tuple(dict.fromkeys(unknown)))


def _add(lib: ctypes.CDLL, ctx: int, rule: Rule) -> None:
    # rule_add takes the native number and translates it for each arch of the filter
    number = syscall_number(lib, rule.syscall)
    cmps = (_ArgCmp * 1)()
    count = 0
    if rule.when is not None:
        test = rule.when
        if test.op == "masked_eq":
            cmps[0] = _ArgCmp(test.index, OPS[test.op], test.mask, test.value)
        else:
            cmps[0] = _ArgCmp(test.index, OPS[test.op], test.value, 0)
        count = 1
    rc = lib.seccomp_rule_add_array(ctx, errno_action(rule.errno), number, count, cmps)
    _check(rc, f"the rule for {rule.syscall}")


@functools.cache
def sandbox_filter(library: str = LIBRARY) -> Filter:
    """This machine's program, built once per daemon (a failure is retried at next call)."""
    return build_filter(RULES, None, library)
