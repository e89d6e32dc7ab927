"""What processes use, read from /proc: one process's CPU and memory, and a live sandbox's.

A sandbox's processes are found below the bench's own, the runner by its command line; each
has VmRSS and RssAnon (status) and Pss (smaps_rollup: shared pages split among their users).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")


@dataclass(frozen=True)
class Memory:
    """One process's memory in KiB."""

    rss_kib: int
    anon_kib: int
    pss_kib: int


@dataclass(frozen=True)
class SandboxMemory:
    runner: Memory
    processes: tuple[Memory, ...]  # every process of the sandbox, the runner among them

    @property
    def rss_kib(self) -> int:
        return sum(m.rss_kib for m in self.processes)

    @property
    def pss_kib(self) -> int:
        return sum(m.pss_kib for m in self.processes)


@dataclass(frozen=True)
class Usage:
    """One process's seconds on CPU (all threads), RSS and its peak (MB)."""

    cpu_s: float
    rss_mb: float
    peak_mb: float


def _stat_fields(text: str) -> list[str]:
    """The fields of /proc/PID/stat after the name, which may hold spaces or parentheses
    (hence counted from its last ')'): state first, then the parent pid."""
    return text[text.rindex(")") + 2 :].split()


def parse_stat(text: str) -> tuple[int, str]:
    """(parent pid, state letter) from /proc/PID/stat."""
    fields = _stat_fields(text)
    return int(fields[1]), fields[0]


def kib_fields(text: str, keys: tuple[str, ...]) -> dict[str, int]:
    """`Key:   1234 kB` lines of status or smaps_rollup, the wanted keys only."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key in keys:
            out[key] = int(value.split()[0])
    return out


def descendants(root: int, parents: Mapping[int, int]) -> list[int]:
    """Every pid below `root` in the tree given as pid -> parent pid, nearest first."""
    children: dict[int, list[int]] = {}
    for pid, ppid in parents.items():
        children.setdefault(ppid, []).append(pid)
    out: list[int] = []
    todo = sorted(children.get(root, []))
    while todo:
        pid = todo.pop(0)
        out.append(pid)
        todo += sorted(children.get(pid, []))
    return out


def usage(pid: int) -> Usage:
    """The process's own use, not its children's: the agents' CPU is not even in cutime, as
    bwrap with its own pid namespace exits without reaping the agent."""
    fields = _stat_fields((PROC / str(pid) / "stat").read_text())
    tick = os.sysconf("SC_CLK_TCK")
    utime, stime = (int(x) / tick for x in fields[11:13])
    kib = kib_fields((PROC / str(pid) / "status").read_text(), ("VmRSS", "VmHWM"))
    return Usage(utime + stime, kib["VmRSS"] / 1024, kib["VmHWM"] / 1024)


def _parents() -> dict[int, int]:
    table: dict[int, int] = {}
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            try:
                table[int(entry.name)] = parse_stat((entry / "stat").read_text())[0]
            except (OSError, ValueError):  # gone meanwhile
                continue
    return table


def cmdline(pid: int) -> list[str]:
    raw = (PROC / str(pid) / "cmdline").read_bytes()
    return [part.decode(errors="replace") for part in raw.split(b"\0")[:-1]]


def memory(pid: int) -> Memory:
    status = kib_fields((PROC / str(pid) / "status").read_text(), ("VmRSS", "RssAnon"))
    rollup = kib_fields((PROC / str(pid) / "smaps_rollup").read_text(), ("Pss",))
    return Memory(status.get("VmRSS", 0), status.get("RssAnon", 0), rollup.get("Pss", 0))


def find_runner(parent: int, runner_argv: list[str]) -> tuple[int, list[int]]:
    """The runner's pid and all the pids of its sandbox: the subtree of `parent`'s child
    that holds the process whose command line is `runner_argv` (one sandbox at a time)."""
    parents = _parents()
    for top in sorted(pid for pid, ppid in parents.items() if ppid == parent):
        tree = [top, *descendants(top, parents)]
        for pid in tree:
            try:
                if cmdline(pid) == runner_argv:
                    return pid, tree
            except OSError:
                continue
    raise RuntimeError(f"no process below pid {parent} runs {runner_argv[:4]}")


def wait_sleeping(pid: int, timeout_s: float) -> None:
    """Until the process is blocked (state S): an idle runner waits in select()."""
    deadline = time.monotonic() + timeout_s
    while parse_stat((PROC / str(pid) / "stat").read_text())[1] != "S":
        if time.monotonic() > deadline:
            raise TimeoutError(f"pid {pid} never went to sleep")
        time.sleep(0.005)


def sandbox_memory(parent: int, runner_argv: list[str], idle_timeout_s: float) -> SandboxMemory:
    """The runner's memory once it sleeps, and that of every process of its sandbox."""
    runner, tree = find_runner(parent, runner_argv)
    wait_sleeping(runner, idle_timeout_s)
    return SandboxMemory(memory(runner), tuple(memory(pid) for pid in tree))
