"""A sandbox's resource limits, probed by trying to exceed them (SPEC section 5).

Each probe runs twice: the daemon as root (the sandbox user is then host root, which
RLIMIT_NPROC does not bind, so the run's cgroup must) and as an ordinary user. Every
probe is bounded, so a limit that fails makes the test fail, not the machine.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

import pytest
from probe import MODES, Sandbox, alive, descendants, make_plan, peak_processes, plan_dir, run

from nanoclaw.errors import SandboxError
from nanoclaw.sandbox.cgroup import Hierarchy, RunCgroup, find_hierarchies, jail_prefix
from nanoclaw.sandbox.plan import Limits

MiB = 1024 * 1024
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="probes switch users: needs root")
# At most 2**9 shells and as many sleeps, gone after 3 s, should every limit fail.
BOMB = "b() { if [ $1 -gt 0 ]; then b $(($1-1)) & b $(($1-1)) & fi; sleep 3; }; b 8"


@needs_root
@pytest.mark.parametrize("mode", MODES)
def test_fork_bomb_is_stopped(mode: str) -> None:
    limit = 40
    with plan_dir() as base:
        plan = make_plan(base, mode, Limits(processes=limit))
        with Sandbox(plan, f"echo started; sh -c '{BOMB}' 2>&1 | tail -n 3", mode) as bomb:
            assert bomb.readline() == "started\n"
            peak = peak_processes(bomb.proc.pid, 2.0)
            host = subprocess.run(["/bin/true"], check=False).returncode
            _, out = bomb.output()
    # the bomb's tree: its processes, plus bwrap's outer one outside the namespace
    assert peak <= limit + 1, f"{peak} processes with a limit of {limit}"
    assert "fork" in out.lower()  # it hit the limit (dash: "Cannot fork")
    assert host == 0


@needs_root
@pytest.mark.parametrize("mode", MODES)
def test_a_sandbox_full_of_processes_does_not_stop_others(mode: str) -> None:
    """It holds every process it may have; a sandbox with the same limits still starts."""
    limit = 40
    fill = (
        "import os, time\nn = 0\nfor _ in range(300):\n    try:\n"
        "        os.posix_spawn('/bin/sleep', ['sleep', '5'], {}); n += 1\n"
        "    except OSError:\n        pass\nprint('full', n, flush=True); time.sleep(5)"
    )
    with plan_dir() as base:
        full_plan = make_plan(base / "full", mode, Limits(processes=limit))
        other_plan = make_plan(base / "other", mode, Limits(processes=limit))
        with Sandbox(full_plan, f'python3 -c "{fill}"', mode) as full:
            spawned = int(full.readline().split()[1])
            other = run(other_plan, "for i in $(seq 30); do /bin/true || echo FAILED; done", mode)
            held = len(descendants(full.proc.pid))
    assert spawned < limit <= held + 1  # it was stopped at the limit, and stayed there
    assert other.strip().endswith("exit=0") and "FAILED" not in other


@needs_root
def test_memory_hog_process_is_stopped() -> None:
    with plan_dir() as base:
        plan = make_plan(base, "root", Limits(address_space=256 * MiB))
        out = run(plan, 'python3 -c \'x = b"x" * (512 << 20); print("ALLOCATED")\'')
    assert "MemoryError" in out and "ALLOCATED" not in out


@needs_root
def test_memory_of_all_processes_together_is_capped_by_the_cgroup() -> None:
    """Each process stays under RLIMIT_AS; together they exceed the sandbox's memory."""
    hog = 'python3 -c \'import time; x = b"x" * (96 << 20); time.sleep(1); print("HELD")\''
    with plan_dir() as base:
        plan = make_plan(base, "root", Limits(memory_bytes=128 * MiB))
        with Sandbox(plan, f"for i in 1 2 3 4; do {hog} & done; wait") as box:
            if not any(
                (d / "memory.max").exists() or (d / "memory.limit_in_bytes").exists()
                for d in box.cgroup.dirs
            ):
                pytest.skip("no memory cgroup on this machine")
            _, out = box.output()
    assert out.splitlines().count("HELD") < 4  # some were OOM-killed


@needs_root
@pytest.mark.parametrize("mode", MODES)
def test_cpu_time_is_capped(mode: str) -> None:
    with plan_dir() as base:
        plan = make_plan(base, mode, Limits(cpu_seconds=1))
        started = time.monotonic()
        out = run(plan, "bash -c 'while :; do :; done'", mode)
    assert out.strip().endswith(("exit=137", "exit=152"))  # SIGKILL, or SIGXCPU first
    assert time.monotonic() - started < 30


@needs_root
@pytest.mark.parametrize("mode", MODES)
def test_tmp_is_size_limited(mode: str) -> None:
    with plan_dir() as base:
        plan = make_plan(base, mode, Limits(tmp_bytes=4 * MiB))
        out = run(
            plan, "dd if=/dev/zero of=/tmp/fill bs=1M count=32; stat -c size=%s /tmp/fill", mode
        )
    assert "No space left on device" in out
    assert int(re.findall(r"size=(\d+)", out)[-1]) <= 4 * MiB


@needs_root
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("inside", ["/workspace", "/ipc"])
def test_a_file_cannot_outgrow_the_file_size_limit(mode: str, inside: str) -> None:
    with plan_dir() as base:
        plan = make_plan(base, mode, Limits(file_bytes=4 * MiB))
        out = run(plan, f"dd if=/dev/zero of={inside}/fill bs=1M count=32", mode)
        host = (plan.workspace if inside == "/workspace" else plan.ipc) / "fill"
        size = host.stat().st_size
    assert "exit=0" not in out  # dd got SIGXFSZ ("File size limit exceeded")
    assert size <= 4 * MiB


@needs_root
@pytest.mark.parametrize("mode", MODES)
def test_open_files_are_capped(mode: str) -> None:
    code = (
        "import os\nfds = []\ntry:\n    for _ in range(500): fds.append(os.open('/dev/null', 0))\n"
        "except OSError as e:\n    print('STOPPED', e.errno, len(fds))"
    )
    with plan_dir() as base:
        plan = make_plan(base, mode, Limits(open_files=64))
        out = run(plan, f'python3 -c "{code}"', mode)
    stopped = re.search(r"STOPPED 24 (\d+)", out)  # EMFILE
    assert stopped and int(stopped.group(1)) < 64


@needs_root
@pytest.mark.parametrize("mode", MODES)
def test_limits_cannot_be_raised_inside(mode: str) -> None:
    code = (
        "import resource as r\n"
        "for n in ('NPROC', 'FSIZE', 'NOFILE', 'AS', 'CPU'):\n"
        "    k = getattr(r, 'RLIMIT_' + n); soft, hard = r.getrlimit(k)\n"
        "    print(n, hard)\n"
        "    try: r.setrlimit(k, (hard + 1, hard + 1)); print('RAISED', n)\n"
        "    except (ValueError, OSError): pass"
    )
    with plan_dir() as base:
        plan = make_plan(base, mode, Limits(processes=99, cpu_seconds=77, open_files=55))
        out = run(plan, f'python3 -c "{code}"; prlimit --pid $$ --nofile=100:100', mode)
    assert "RAISED" not in out
    assert "NPROC 99" in out and "CPU 77" in out and "NOFILE 55" in out
    assert "exit=0" not in out  # prlimit could not raise the shell's limit either


@needs_root
@pytest.mark.parametrize("mode", MODES)
def test_kill_on_timeout_leaves_no_process_behind(mode: str) -> None:
    """Daemonized, signal-ignoring processes die with the sandbox (runner.kill's way)."""
    script = (
        "setsid sh -c 'trap \"\" HUP TERM INT; sleep 300' & (sleep 300 &); "
        "nohup sleep 300 >/dev/null 2>&1 & sleep 0.3; echo ready; wait"
    )
    with plan_dir() as base:
        plan = make_plan(base, mode)
        with Sandbox(plan, script, mode) as box:
            assert box.readline() == "ready\n"
            before = descendants(box.proc.pid)
            box.kill()
            box.proc.wait(10)
            deadline = time.monotonic() + 10
            while any(alive(pid) for pid in before) and time.monotonic() < deadline:
                time.sleep(0.05)
            left = [pid for pid in before if alive(pid)]
    assert len(before) >= 6
    assert left == []


def test_find_hierarchies_v1_and_v2() -> None:
    cgroup = "8:pids:/\n4:memory:/jobs/7\n1:name=systemd:/\n0::/\n"
    mountinfo = (
        "39 31 0:36 / /sys/fs/cgroup/pids rw,relatime shared:9 - cgroup cgroup rw,pids\n"
        "35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n"
        "40 31 0:37 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,name=systemd\n"
        "41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n"
    )
    found = find_hierarchies(cgroup, mountinfo)
    assert found[:2] == [
        Hierarchy(Path("/sys/fs/cgroup/pids"), frozenset({"pids"}), False),
        Hierarchy(Path("/sys/fs/cgroup/memory/jobs/7"), frozenset({"memory"}), False),
    ]
    assert found[2].v2 and found[2].base == Path("/sys/fs/cgroup/unified")
    v2_only = "0::/system.slice/nanoclaw.service\n"
    assert find_hierarchies(v2_only, "29 23 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n") == [
        Hierarchy(Path("/sys/fs/cgroup"), frozenset({"pids", "memory"}), True)
    ]
    assert find_hierarchies("", "") == []


def test_jail_joins_every_cgroup_before_anything_runs(tmp_path: Path) -> None:
    """Plain files stand in for cgroup.procs: each gets the pid the command then runs as."""
    assert jail_prefix([]) == []
    procs = [tmp_path / "a b" / "cgroup.procs", tmp_path / "x" / "cgroup.procs"]
    for path in procs:
        path.parent.mkdir()
    out = subprocess.run(
        [*jail_prefix(procs), "/bin/sh", "-c", "echo $$"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert [p.read_text() for p in procs] == [out.stdout] * 2
    jailed = [*jail_prefix(procs), "/usr/bin/env"]
    env = subprocess.run(jailed, env={}, cwd=tmp_path, capture_output=True, text=True, check=True)
    assert env.stdout == ""  # the shell's PWD (a host path) does not reach bwrap
    ran = tmp_path / "ran"
    missing = [procs[0], tmp_path / "gone" / "cgroup.procs"]
    failed = subprocess.run(
        [*jail_prefix(missing), "/usr/bin/touch", str(ran)], capture_output=True
    )
    assert failed.returncode != 0 and not ran.exists()  # never runs outside its cgroups


def test_root_without_a_pids_cgroup_refuses_to_start() -> None:
    with pytest.raises(SandboxError, match="pids cgroup"):
        RunCgroup.create(Limits(), "x", required=True, hierarchies=[])
    assert RunCgroup.create(Limits(), "x", required=False, hierarchies=[]).prefix() == []


@needs_root
def test_run_cgroup_is_removed_with_what_was_left_in_it() -> None:
    group = RunCgroup.create(Limits(processes=7), "removal")
    if not group.dirs:
        pytest.skip("no cgroup can be made here")
    proc = subprocess.Popen([*group.prefix(), "sleep", "300"])
    try:
        deadline = time.monotonic() + 10
        pids = next(d for d in group.dirs if (d / "pids.max").exists())
        while str(proc.pid) not in (pids / "cgroup.procs").read_text():
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert (pids / "pids.max").read_text().strip() == "7"
        group.remove()
        assert proc.wait(10) == -9
        assert not any(d.exists() for d in group.dirs)
    finally:
        proc.kill()
        proc.wait()
