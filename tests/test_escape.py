"""Escape probes: the agent tries to gain privileges or reach the host (SPEC section 5).

Each probe runs in a real sandbox started as the runner starts one, once with the daemon
as root (the sandbox user is then host uid 0, so every owner check on a visible host
object is a hole) and once as an ordinary user.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import socket
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from probe import MODES, make_plan, plan_dir, run

from nanoclaw.ipc import files as ipcfs
from nanoclaw.sandbox.plan import SandboxPlan

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="probes switch users: needs root")
PY = "python3 -c"


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def base() -> Iterator[Path]:
    with plan_dir() as path:
        yield path


@pytest.fixture
def plan(base: Path, mode: str) -> SandboxPlan:
    return make_plan(base, mode)


@dataclass
class HostProcess:
    proc: subprocess.Popen[bytes]
    name: str


@pytest.fixture
def host_process() -> Iterator[HostProcess]:
    """A host process with a name of its own, for the agent to look for."""
    name = f"nanoclaw-host-{secrets.token_hex(4)}"
    proc = subprocess.Popen(["bash", "-c", f"exec -a {name} sleep 300"])
    yield HostProcess(proc, name)
    proc.kill()
    proc.wait()


def test_no_new_privileges_no_capabilities_one_uid(plan: SandboxPlan, mode: str) -> None:
    out = run(
        plan, "grep -E '^(Cap|NoNewPrivs|Uid|Gid)' /proc/self/status; cat /proc/self/uid_map", mode
    )
    assert re.search(r"NoNewPrivs:\s+1", out)
    for cap in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert re.search(rf"{cap}:\s+0+\n", out), cap
    assert re.search(r"Uid:\s+1000\s+1000\s+1000\s+1000", out)
    mapped = [
        line.split() for line in out.splitlines() if re.fullmatch(r"\s*\d+\s+\d+\s+\d+", line)
    ]
    assert len(mapped) == 1 and mapped[0][0] == "1000" and mapped[0][2] == "1"


def test_setuid_binary_does_not_change_identity(base: Path, mode: str) -> None:
    plan = make_plan(base, mode, extra_ro=((str(base / "suid"), "/suid"),))
    (base / "suid").mkdir(mode=0o755)
    shutil.copy("/usr/bin/sleep", base / "suid" / "sleep")
    os.chmod(base / "suid" / "sleep", 0o6755)  # setuid and setgid host root
    out = run(
        plan,
        "test -u /suid/sleep && echo IS-SETUID; /suid/sleep 5 & sleep 0.5; "
        "grep -E '^(Uid|Gid)' /proc/$!/status; kill $!; su -c id root </dev/null",
        mode,
    )
    assert "IS-SETUID" in out
    assert re.search(r"Uid:\s+1000\s+1000\s+1000\s+1000", out)
    assert re.search(r"Gid:\s+1000\s+1000\s+1000\s+1000", out)
    assert "uid=0" not in out


def test_cannot_mount_or_remount(plan: SandboxPlan, mode: str) -> None:
    libc = "import ctypes, os; l = ctypes.CDLL(None, use_errno=True)"
    out = run(
        plan,
        "mount -t tmpfs none /tmp && echo MOUNTED; mount --bind /workspace /skills && echo BOUND; "
        "mount -o remount,rw /skills && echo REMOUNTED; umount /skills && echo UNMOUNTED; "
        "umount -l /ipc/llm.sock && echo UNMOUNTED; "
        f'{PY} \'{libc}; r = l.mount(b"none", b"/tmp", b"tmpfs", 0, None); '
        'print("MOUNTED" if r == 0 else "errno", ctypes.get_errno())\'; '
        "touch /skills/x && echo WROTE",
        mode,
    )
    assert not re.search(r"MOUNTED|BOUND|WROTE", out)
    assert "errno 1" in out  # EPERM


def test_cannot_create_namespaces(plan: SandboxPlan, mode: str) -> None:
    out = run(
        plan,
        "unshare -U true && echo USERNS; unshare -Ur id && echo ROOT-IN-USERNS; "
        "unshare -m true && echo MOUNTNS; unshare -n true && echo NETNS; "
        "unshare -p -f true && echo PIDNS",
        mode,
    )
    assert not re.search(r"USERNS|ROOT-IN-USERNS|MOUNTNS|NETNS|PIDNS", out)


def test_runner_skills_global_and_runtime_are_read_only(base: Path, mode: str) -> None:
    files = {
        "agent/__main__.py": "runner\n",
        "skills/SKILL.md": "skill\n",
        "global/CLAUDE.md": "global\n",
    }
    for rel, text in files.items():
        (base / rel).parent.mkdir(parents=True, exist_ok=True)
        (base / rel).write_text(text)
    plan = make_plan(base, mode)
    attempts = []
    for inside in ("/runtime/lib/agent/__main__.py", "/skills/SKILL.md", "/global/CLAUDE.md"):
        attempts += [
            f"echo HACK >> {inside}",
            f"rm -f {inside}",
            f"mv {inside} {inside}.x",
            f"chmod 777 {inside}",
            f"truncate -s 0 {inside}",
            f"ln -sf /tmp/x {inside}",
            f'{PY} \'import os; os.rename("{os.path.dirname(inside)}", "/tmp/moved")\'',
        ]
    attempts += ["touch /usr/bin/x", "touch /etc/passwd", "echo x > /runtime/x", "mkdir /x"]
    out = run(
        plan, "; ".join(f"{a} 2>/dev/null && echo DID-{i}" for i, a in enumerate(attempts)), mode
    )
    assert [attempts[int(i)] for i in re.findall(r"DID-(\d+)", out)] == []
    for rel, text in files.items():
        assert (base / rel).read_text() == text


def test_cannot_see_host_processes(plan: SandboxPlan, mode: str, host_process: HostProcess) -> None:
    pid, name = host_process.proc.pid, host_process.name
    out = run(
        plan,
        f"ls -d /proc/[0-9]* | wc -l; test -e /proc/{pid} && echo SEES-PID; "
        # the name is put together by a builtin: no command line in the sandbox holds it
        f"printf '%s%s\\n' {name[:8]} {name[8:]} > /tmp/name; "
        "cat /proc/[0-9]*/cmdline /proc/[0-9]*/comm /proc/[0-9]*/environ | tr '\\0' '\\n' "
        "| grep -c -f /tmp/name; grep -c -f /tmp/name /tmp/name; "
        "grep -rls -f /tmp/name /proc/sys /proc/locks /proc/timer_list",
        mode,
    )
    count, matches, control = out.split()[:3]
    assert int(count) < 10
    assert "SEES-PID" not in out and name not in out
    assert matches == "0" and control == "1"  # the search works: it finds the name in a file


def test_cannot_signal_host_processes(
    plan: SandboxPlan, mode: str, host_process: HostProcess
) -> None:
    pid = host_process.proc.pid
    out = run(
        plan,
        f"kill -0 {pid} && echo SIGNALLED; kill -KILL {pid} && echo KILLED; echo tried; "
        # kill(-1): every process it may signal. Under a root daemon, outside a pid
        # namespace that is every process of the host: only sent once the script has
        # checked it is in its own namespace (pid 1 is bwrap, and few pids are visible).
        '[ "$(cat /proc/1/comm)" = bwrap ] && [ $(ls -d /proc/[0-9]* | wc -l) -lt 10 ] '
        "&& echo ALONE && { sleep 60 & kill -KILL -1; wait $!; echo own-sleep=$?; }",
        mode,
    )
    assert "tried" in out and "SIGNALLED" not in out and "KILLED" not in out
    assert "ALONE" in out and "own-sleep=137" in out  # kill(-1) reached what it may reach
    assert host_process.proc.poll() is None


def test_cannot_ptrace_host_processes(
    plan: SandboxPlan, mode: str, host_process: HostProcess
) -> None:
    pid = host_process.proc.pid
    code = (
        "import ctypes; l = ctypes.CDLL(None, use_errno=True); "
        "l.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]; "
        f"r = [l.ptrace(req, {pid}, None, None) for req in (16, 0x4206)]; "  # ATTACH, SEIZE
        'print("ptrace", r, ctypes.get_errno())'
    )
    out = run(plan, f"{PY} '{code}'; cat /proc/{pid}/mem 2>/dev/null && echo READ-MEM", mode)
    assert "ptrace [-1, -1] 3" in out  # ESRCH: no such process in its world
    assert "READ-MEM" not in out
    assert host_process.proc.poll() is None


def _connect_from_inside(plan: SandboxPlan, mode: str, address: str) -> tuple[str, bool]:
    """The sandbox tries to connect to a host socket listening at `address`; whether a
    connection reached the host is read from the backlog afterwards (nothing accepts)."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(address)
        if not address.startswith("\0"):
            os.chmod(address, 0o777)
        sock.listen(8)
        code = (
            "import socket; s = socket.socket(socket.AF_UNIX)\n"
            f"try: s.connect({address!r}); print('CONNECTED')\n"
            "except OSError as e: print('refused', type(e).__name__)"
        )
        out = run(plan, f'{PY} "{code}"', mode)
        sock.setblocking(False)
        try:
            sock.accept()[0].close()
        except BlockingIOError:
            return out, False
        return out, True


def test_cannot_reach_a_host_unix_socket_by_path(plan: SandboxPlan, mode: str) -> None:
    path = f"/tmp/nanoclaw-host-{secrets.token_hex(4)}.sock"  # the host's /tmp
    try:
        out, reached = _connect_from_inside(plan, mode, path)
    finally:
        os.unlink(path)
    assert "refused FileNotFoundError" in out and not reached


def test_cannot_reach_a_host_abstract_socket(plan: SandboxPlan, mode: str) -> None:
    out, reached = _connect_from_inside(plan, mode, f"\0nanoclaw-host-{secrets.token_hex(4)}")
    assert "refused ConnectionRefusedError" in out and not reached


def test_only_harmless_devices(plan: SandboxPlan, mode: str) -> None:
    out = run(
        plan,
        "ls -A /dev | tr '\\n' ' '; echo; "
        "for d in sda vda nvme0n1 mem kmem port kmsg tty console ptmx shm pts fuse net/tun; do "
        "test -e /dev/$d && echo HAS-$d; done; "
        "mknod /tmp/mem c 1 1 && echo MKNOD; touch /dev/x && echo DEV-WRITABLE; "
        "mkdir /dev/shm && echo DEV-WRITABLE; echo ok > /dev/null && echo null-works",
        mode,
    )
    assert set(out.splitlines()[0].split()) == {
        "fd",
        "full",
        "null",
        "random",
        "stderr",
        "stdin",
        "stdout",
        "urandom",
        "zero",
    }
    assert not re.search(r"HAS-|MKNOD|DEV-WRITABLE", out)
    assert "null-works" in out


def test_global_proc_files_are_read_only(plan: SandboxPlan, mode: str) -> None:
    """Under a root daemon these pass the kernel's uid-0 owner checks without a capability."""
    out = run(
        plan,
        'v=$(cat /proc/sys/kernel/core_pattern); echo "$v" > /proc/sys/kernel/core_pattern '
        "&& echo CORE-PATTERN-WRITTEN; "
        "for f in /proc/*; do case ${f#/proc/} in [0-9]*|self|thread-self) continue;; esac; "
        "find $f -writable \\( -type f -o -type d \\) 2>/dev/null | head -n 3 "
        "| sed 's/^/WRITABLE /'; done",
        mode,
    )
    assert "CORE-PATTERN-WRITTEN" not in out
    assert "WRITABLE" not in out


def test_no_host_path_in_bwraps_environment_and_kernel_lists_are_masked(
    plan: SandboxPlan, mode: str
) -> None:
    """bwrap is pid 1 inside: as root the cgroup jail's shell starts it and would export its
    PWD (the daemon's directory). The kernel's timer, slab and key lists are the host's."""
    masked = "timer_list slabinfo vmallocinfo keys key-users kcore sched_debug timer_stats"
    out = run(
        plan,
        "od -c /proc/1/environ | head -n 3; echo END-ENV; ls -l /proc/1/cwd | sed 's/.*-> //'; "
        f"for f in {masked}; do test -e /proc/$f || continue; "
        'echo "$f $(head -c 100 /proc/$f 2>/dev/null | wc -c)"; done',
        mode,
    )
    environ, rest = out.split("END-ENV\n", 1)
    assert environ.split() == ["0000000"], environ  # empty: not even PWD=/
    lines = rest.splitlines()
    assert lines[0] in ("/", "/workspace"), lines[0]
    read = dict(line.split() for line in lines[1:] if re.fullmatch(r"\S+ \d+", line))
    assert {"timer_list", "slabinfo", "vmallocinfo", "keys"} <= read.keys()
    assert {name: int(size) for name, size in read.items() if int(size)} == {}


def test_writes_land_only_in_workspace_ipc_and_tmp(plan: SandboxPlan, mode: str) -> None:
    out = run(
        plan,
        "for m in / $(cut -d' ' -f5 /proc/self/mountinfo | sort -u); do "
        "test -d $m || continue; f=$m/.probe-$$; "
        "(echo x > $f) 2>/dev/null && echo WROTE $m && rm -f $f; done",
        mode,
    )
    wrote = sorted(line.split()[1] for line in out.splitlines() if line.startswith("WROTE"))
    assert wrote == ["/ipc", "/tmp", "/workspace"]


def test_ipc_cannot_reach_other_groups(base: Path, mode: str) -> None:
    """The agent owns its /ipc and may plant links there; nothing reaches another group's."""
    other = base / "ipc" / "other"
    for sub in ("input", "outbound"):
        (other / sub).mkdir(parents=True)
        (other / sub / "1700000000000-keep.json").write_text("{}")
    (other / "tasks.json").write_text('{"tasks": []}')
    plan = make_plan(base, mode)
    ipcfs.ensure_dirs(base / "ipc", "probe")
    if mode == "user":
        subprocess.run(["chown", "-R", "65534:65534", str(plan.ipc)], check=True)
    out = run(
        plan,
        "ls -A /ipc/.. | tr '\\n' ' '; echo; ls /ipc/../other 2>/dev/null && echo SEES-OTHER; "
        "rm -f /ipc/llm.sock && echo RM-SOCK; mv /ipc/llm.sock /ipc/x && echo MV-SOCK; "
        "mv /ipc /ipc2 && echo MV-IPC; touch /ipc/errors/x && echo ERRORS; "
        "rm -rf /ipc/input /ipc/outbound && ln -s ../other/input /ipc/input && "
        "ln -s ../other/outbound /ipc/outbound && ln -s ../other/tasks.json /ipc/tasks.json && "
        "echo PLANTED",
        mode,
    )
    assert not re.search(r"SEES-OTHER|RM-SOCK|MV-SOCK|MV-IPC|ERRORS", out)
    assert "other" not in out.splitlines()[0].split()
    assert "PLANTED" in out  # its own directory: allowed; the host must not follow
    root = base / "ipc"
    assert ipcfs.list_names(root, "probe") == []
    steps: list[Callable[[], object]] = [
        lambda: ipcfs.write_input(root, "probe", "1700000000001-x.json", {"prompt": "leak"}),
        lambda: ipcfs.clear_input(root, "probe"),
        lambda: ipcfs.write_tasks(root, "probe", {"tasks": ["leak"]}),
    ]
    for step in steps:
        try:
            step()
        except OSError:
            pass  # refusing is fine: only following the link is not
    ipcfs.ensure_dirs(root, "probe")
    assert sorted(p.name for p in (other / "input").iterdir()) == ["1700000000000-keep.json"]
    assert sorted(p.name for p in (other / "outbound").iterdir()) == ["1700000000000-keep.json"]
    assert (other / "tasks.json").read_text() == '{"tasks": []}'
    assert (root / "probe" / "input").is_dir() and not (root / "probe" / "input").is_symlink()
