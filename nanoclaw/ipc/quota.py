"""What one group's IPC files may cost the host: files handled per window, errors/ kept.

A group past its window's allowance has the rest of its files set aside unread; errors/
keeps a bounded number of entries for a bounded time. Decisions only: ipc and ipcfs act.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

STAMP_RE = re.compile(r"^([0-9]{13})-")  # errors/ names start with the set-aside time in ms
NOTE_SUFFIX = ".reason.txt"


@dataclass(frozen=True)
class FileLimits:
    # Files of one group handled (read, parsed, acted on) per window. 50 a second is past
    # what any chat network carries (Telegram: about 20 messages a minute in a group) and
    # past a busy agent's pace (the load bench answers about 35 messages a second), so
    # only a flood reaches it.
    files: int = 500
    window_s: float = 10.0
    errors_kept: int = 1000  # entries errors/ keeps, the newest
    errors_age_s: float = 7 * 24 * 3600
    prune_every: int = 100  # set-asides between two prunes of a group's errors/


DEFAULT_LIMITS = FileLimits()


@dataclass
class _Window:
    start: float
    used: int = 0
    warned: bool = False


class FileQuota:
    """Per-group counters against `FileLimits`; the clock is injected for tests."""

    def __init__(self, limits: FileLimits, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        self._clock = clock
        self._windows: dict[str, _Window] = {}
        self._since_prune: dict[str, int] = {}
        self._pruned: set[str] = set()
        self._told: dict[str, int | None] = {}  # folder -> the run last told of the cap

    def _window(self, folder: str) -> _Window:
        now = self._clock()
        window = self._windows.get(folder)
        if window is None or now - window.start >= self.limits.window_s:
            window = self._windows[folder] = _Window(now)
        return window

    def left(self, folder: str) -> int:
        """Files the group may still have handled in the current window."""
        return max(0, self.limits.files - self._window(folder).used)

    def spend(self, folder: str) -> None:
        self._window(folder).used += 1

    def first_excess(self, folder: str) -> bool:
        """True the first time in a window that the group goes over (to warn once)."""
        window = self._window(folder)
        first, window.warned = not window.warned, True
        return first

    def first_for_run(self, folder: str, run_id: int | None) -> bool:
        """True the first time the group goes over during this run (or with no run live)."""
        if folder in self._told and self._told[folder] == run_id:
            return False
        self._told[folder] = run_id
        return True

    def set_aside(self, folder: str, count: int) -> None:
        """Count files moved to the group's errors/."""
        self._since_prune[folder] = self._since_prune.get(folder, 0) + count

    def prune_due(self, folder: str) -> bool:
        """Whether the group's errors/ is due for pruning: the first time it is asked since
        start, then after every `prune_every` set-asides (a listing per file would not be
        cheap)."""
        if folder in self._pruned and self._since_prune[folder] < self.limits.prune_every:
            return False
        self._pruned.add(folder)
        self._since_prune[folder] = 0
        return True


def stamp_s(name: str) -> float | None:
    """The time (unix seconds) a set-aside entry was made, from its name."""
    found = STAMP_RE.match(name)
    return int(found.group(1)) / 1000 if found else None


def to_prune(entries: Iterable[tuple[str, float]], now_s: float, limits: FileLimits) -> list[str]:
    """Entries (name, unix time made) errors/ no longer keeps: too old, then the oldest
    beyond `errors_kept`. Of entries made together, the notes saying why are kept first."""
    ordered = sorted(  # newest first
        entries, key=lambda e: (e[1], e[0].endswith(NOTE_SUFFIX), e[0]), reverse=True
    )
    young = [name for name, made in ordered if now_s - made <= limits.errors_age_s]
    old = [name for name, made in ordered if now_s - made > limits.errors_age_s]
    return old + young[limits.errors_kept :]
