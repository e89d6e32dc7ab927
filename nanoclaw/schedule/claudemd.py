"""Scheduled tasks written in a group's CLAUDE.md, and when a cron task runs next.

Pure: `parse_tasks` reads the "## Scheduled Tasks" section (SPEC section 8) and reports each
line it cannot use; `next_run` turns a cron expression in a timezone into the next instant.
Cron is wall-clock time: a time skipped by a spring-forward runs shifted by the gap (02:30
becomes 03:30), a time repeated by a fall-back runs once (its first occurrence), as classic
cron does. `tasks.following` adds the other half of cron's rule: a cron that runs every hour
or more often follows real time, so the repeated hour runs too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from nanoclaw.memory import MARKER

SECTION_RE = re.compile(r"^##\s+Scheduled Tasks\s*$", re.IGNORECASE)
CRON_RE = re.compile(r"^#\s*Cron:\s*(.*)$", re.IGNORECASE)
TZ_RE = re.compile(r"^#\s*TZ:\s*(.*)$", re.IGNORECASE)
COMMENT_RE = re.compile(r"<!--.*?-->", re.S)
PROMPT_CAP = 8_000
# Any fixed instant: a cron that names a time names one within croniter's search window of it.
CRON_PROBE_FROM = datetime(2000, 1, 1)


@dataclass(frozen=True)
class CronTask:
    line: int  # 1-based line of its "# Cron:" in CLAUDE.md
    cron: str
    tz: str | None
    prompt: str


@dataclass(frozen=True)
class ParseError:
    line: int
    message: str


def _blank_comments(text: str) -> str:
    """HTML comments become blank lines, so line numbers stay true."""
    return COMMENT_RE.sub(lambda m: "\n" * m.group(0).count("\n"), text)


def cron_problem(expr: str) -> str | None:
    """What is wrong with a cron expression, or None for five fields naming some time."""
    if len(expr.split()) != 5 or not croniter.is_valid(expr):
        return f"not a 5-field cron expression: {expr!r}"
    try:
        croniter(expr, CRON_PROBE_FROM).get_next(datetime)
    except (ValueError, KeyError, IndexError, OverflowError):  # CroniterError is a ValueError
        return f"cron expression {expr!r} names no time that exists (like 30 February)"
    return None


def valid_cron(expr: str) -> bool:
    return cron_problem(expr) is None


def valid_zone(name: str) -> bool:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # "America" is a directory of zones
        return False
    return True


@dataclass
class _Draft:
    line: int
    cron: str
    bad: bool
    tz: str | None = None
    lines: list[str] = field(default_factory=list)

    def finish(self, tasks: list[CronTask], errors: list[ParseError]) -> None:
        prompt = "\n".join(self.lines).strip()
        if self.bad:
            return
        if not prompt:
            errors.append(ParseError(self.line, "task has no prompt below its # Cron: line"))
            return
        tasks.append(CronTask(self.line, self.cron, self.tz, prompt[:PROMPT_CAP]))


def parse_tasks(markdown: str) -> tuple[list[CronTask], list[ParseError]]:
    """The tasks of the "## Scheduled Tasks" section; bad entries are reported, not fatal."""
    tasks: list[CronTask] = []
    errors: list[ParseError] = []
    in_section = False
    draft: _Draft | None = None
    # The agent's own entries below the memory marker are never read as tasks.
    owner_part = markdown.split(MARKER, 1)[0]
    # Lines as an editor counts them: "\n" only, not str.splitlines' \f, \x85 or U+2028.
    for number, raw in enumerate(_blank_comments(owner_part).split("\n"), start=1):
        raw = raw.removesuffix("\r")
        line = raw.rstrip()
        if line.startswith("## ") or line == "##":
            if draft is not None:
                draft.finish(tasks, errors)
            draft = None
            in_section = bool(SECTION_RE.match(line))
            continue
        if not in_section:
            continue
        cron = CRON_RE.match(line)
        if cron:
            if draft is not None:
                draft.finish(tasks, errors)
            expr = cron.group(1).strip()
            problem = cron_problem(expr)
            draft = _Draft(number, expr, bad=problem is not None)
            if problem is not None:
                errors.append(ParseError(number, problem))
            continue
        tz = TZ_RE.match(line)
        if tz and draft is not None and not any(x.strip() for x in draft.lines):
            name = tz.group(1).strip()
            if valid_zone(name):
                draft.tz = name
            else:
                errors.append(ParseError(number, f"unknown timezone {name!r}"))
                draft.bad = True
            continue
        if draft is not None:
            draft.lines.append(raw)
    if draft is not None:
        draft.finish(tasks, errors)
    return tasks, errors


def next_run(expr: str, zone: ZoneInfo, after: datetime) -> datetime:
    """The first instant strictly after `after` (aware) that the cron names, in UTC."""
    local = after.astimezone(zone).replace(tzinfo=None, second=0, microsecond=0)
    it = croniter(expr, local - timedelta(minutes=1))
    for _ in range(10_000):
        wall: datetime = it.get_next(datetime)
        # fold=0: a skipped wall time maps to just after the gap, a repeated one to its first
        instant = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
        if instant > after:
            return instant
    raise ValueError(f"cron {expr!r} names no time after {after.isoformat()}")
