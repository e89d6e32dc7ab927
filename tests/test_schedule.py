"""Scheduled tasks in CLAUDE.md and cron next-run times across timezones and DST."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from nanoclaw.schedule.claudemd import CronTask, ParseError, next_run, parse_tasks

SPEC_EXAMPLE = """# Work

Owner notes.

## Scheduled Tasks
# Cron: 0 8 * * 1-5
# TZ: Asia/Kolkata
Summarise the top 10 stories from the feeds in /workspace/feeds.txt.
Keep it under 10 lines.

# Cron: */15 * * * *
Read /workspace/alerts.json. If any item has "severity": "P1", tell me now.
Otherwise stay silent.

## Other section
# Cron: 0 0 * * *
not a task: outside the section
"""


def test_spec_example_parses() -> None:
    tasks, errors = parse_tasks(SPEC_EXAMPLE)
    assert errors == []
    assert tasks == [
        CronTask(
            6,
            "0 8 * * 1-5",
            "Asia/Kolkata",
            "Summarise the top 10 stories from the feeds in /workspace/feeds.txt.\n"
            "Keep it under 10 lines.",
        ),
        CronTask(
            11,
            "*/15 * * * *",
            None,
            'Read /workspace/alerts.json. If any item has "severity": "P1", tell me now.\n'
            "Otherwise stay silent.",
        ),
    ]


def test_broken_lines_are_reported_and_the_rest_load() -> None:
    text = """## Scheduled Tasks
# Cron: 61 * * * *
bad minute
# Cron: 0 9 * * *
# TZ: Mars/Olympus
bad zone
# Cron: 0 7 * * *
good one
# Cron: 0 6 * * *
"""
    tasks, errors = parse_tasks(text)
    assert [t.prompt for t in tasks] == ["good one"]
    assert errors == [
        ParseError(2, "not a 5-field cron expression: '61 * * * *'"),
        ParseError(5, "unknown timezone 'Mars/Olympus'"),
        ParseError(9, "task has no prompt below its # Cron: line"),
    ]


def test_commented_out_tasks_do_not_count_and_lines_stay_true() -> None:
    text = "## Scheduled Tasks\n<!--\n# Cron: 0 8 * * *\nexample\n-->\n# Cron: 5 4 * * *\nreal\n"
    tasks, errors = parse_tasks(text)
    assert errors == [] and [(t.line, t.prompt) for t in tasks] == [(6, "real")]


def test_the_shipped_template_schedules_nothing() -> None:
    template = Path(__file__).resolve().parents[1] / "groups" / "main" / "CLAUDE.md"
    assert parse_tasks(template.read_text()) == ([], [])


def test_kolkata_eight_is_two_thirty_utc() -> None:
    after = datetime(2026, 11, 23, 0, 0, tzinfo=UTC)  # a Monday
    assert next_run("0 8 * * 1-5", ZoneInfo("Asia/Kolkata"), after) == datetime(
        2026, 11, 23, 2, 30, tzinfo=UTC
    )


def runs(expr: str, zone: str, start: datetime, end: datetime) -> list[datetime]:
    """Drive the clock: every instant the cron fires in [start, end)."""
    out: list[datetime] = []
    t = start
    while (t := next_run(expr, ZoneInfo(zone), t)) < end:
        out.append(t)
    return out


BERLIN = "Europe/Berlin"


def test_daily_across_spring_forward_runs_once_right_after_the_gap() -> None:
    # 2026-03-29: 02:00 CET jumps to 03:00 CEST; 02:30 does not exist that day.
    got = runs(
        "30 2 * * *", BERLIN, datetime(2026, 3, 28, tzinfo=UTC), datetime(2026, 3, 31, tzinfo=UTC)
    )
    assert got == [
        datetime(2026, 3, 28, 1, 30, tzinfo=UTC),  # 02:30 CET
        datetime(2026, 3, 29, 1, 30, tzinfo=UTC),  # = 03:30 CEST, just after the gap
        datetime(2026, 3, 30, 0, 30, tzinfo=UTC),  # 02:30 CEST
    ]


def test_daily_across_fall_back_runs_once_at_the_first_occurrence() -> None:
    # 2026-10-25: 03:00 CEST falls back to 02:00 CET; 02:30 happens twice.
    got = runs(
        "30 2 * * *", BERLIN, datetime(2026, 10, 24, tzinfo=UTC), datetime(2026, 10, 27, tzinfo=UTC)
    )
    assert got == [
        datetime(2026, 10, 24, 0, 30, tzinfo=UTC),  # 02:30 CEST
        datetime(2026, 10, 25, 0, 30, tzinfo=UTC),  # the first 02:30 (CEST) only
        datetime(2026, 10, 26, 1, 30, tzinfo=UTC),  # 02:30 CET
    ]


def test_hourly_over_the_dst_days_counts() -> None:
    minute = timedelta(minutes=1)  # each window: a local day, from just before its midnight
    spring = runs(
        "0 * * * *",
        BERLIN,
        datetime(2026, 3, 28, 23, tzinfo=UTC) - minute,
        datetime(2026, 3, 29, 22, tzinfo=UTC),
    )
    assert len(spring) == 23  # a 23-hour local day
    fall = runs(
        "0 * * * *",
        BERLIN,
        datetime(2026, 10, 24, 22, tzinfo=UTC) - minute,
        datetime(2026, 10, 25, 23, tzinfo=UTC),
    )
    assert len(fall) == 24  # 25 real hours; the repeated 02:00 fires once
    assert len(set(fall)) == len(fall) and fall == sorted(fall)


def test_next_run_counts_from_the_schedule_not_from_now() -> None:
    """No drift: the run after one due at 08:00 is 08:00 tomorrow, whenever it finished."""
    zone = ZoneInfo("UTC")
    due = next_run("0 8 * * *", zone, datetime(2026, 11, 22, 7, tzinfo=UTC))
    finished_late = due + timedelta(minutes=17)
    assert next_run("0 8 * * *", zone, due) == next_run("0 8 * * *", zone, finished_late)
    assert next_run("0 8 * * *", zone, due) == datetime(2026, 11, 23, 8, tzinfo=UTC)


@pytest.mark.parametrize("expr", ["* * * *", "0 0 * * * *", "every day", "0 25 * * *"])
def test_invalid_cron_is_reported(expr: str) -> None:
    tasks, errors = parse_tasks(f"## Scheduled Tasks\n# Cron: {expr}\nprompt\n")
    assert tasks == [] and errors and "cron" in errors[0].message
