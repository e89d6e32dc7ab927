"""A command run on a pseudo-terminal, as a person at a terminal runs it: lines typed,
^C as a SIGINT, output read with a deadline; and the processes it started, to see them go."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

# Run first in the child, a session leader: the pty becomes its terminal (so ^C is a
# SIGINT for it), then the command replaces it. Not preexec_fn: unsafe beside threads.
CONTROLLING_TTY = (
    "import fcntl, os, sys, termios; fcntl.ioctl(0, termios.TIOCSCTTY, 0); "
    "os.execv(sys.argv[1], sys.argv[1:])"
)


class Pty:
    def __init__(self, argv: list[str], cwd: Path, env: dict[str, str]) -> None:
        self.master, slave = pty.openpty()
        self.proc = subprocess.Popen(
            [sys.executable, "-c", CONTROLLING_TTY, *argv],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            cwd=cwd,
            env=env,
            start_new_session=True,
        )
        os.close(slave)
        self.buffer = ""

    def expect(self, needle: str, timeout: float = 60, start: int = 0) -> str:
        deadline = time.monotonic() + timeout
        while needle not in self.buffer[start:]:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{needle!r} not seen; got:\n{self.buffer[-2000:]}")
            ready, _, _ = select.select([self.master], [], [], left)
            if ready:
                try:
                    data = os.read(self.master, 65536).decode(errors="replace")
                    self.buffer = (self.buffer + data).replace("\r\n", "\n")  # the tty's ONLCR
                except OSError:
                    break
        return self.buffer

    def send(self, line: str) -> None:
        os.write(self.master, (line + "\n").encode())

    def ctrl_c(self) -> None:
        os.write(self.master, b"\x03")

    def ctrl_d(self) -> None:
        os.write(self.master, b"\x04")

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()
        os.close(self.master)


def descendants(pid: int) -> set[int]:
    """Every process below `pid` (the sandboxes lead sessions of their own but stay children)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, todo = set(), [pid]
    while todo:
        parent = todo.pop()
        children = {child for child, ppid in parents.items() if ppid == parent}
        found |= children
        todo.extend(children)
    return found


def alive(pids: set[int]) -> set[int]:
    """Those of `pids` still running (a zombie waiting for its reaper counts as gone)."""
    running = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            running.add(pid)
    return running


def until(check: Callable[[], object], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(0.05)
