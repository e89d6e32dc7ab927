"""The pure task decisions: first and following runs, claims, CLAUDE.md sync plans, actions.

The clock is driven with explicit `now_ms` values; every expectation is an exact instant.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from nanoclaw.schedule.claudemd import parse_tasks
from nanoclaw.schedule.tasks import (
    AGENT,
    CLAUDE_MD,
    LATE_MS,
    Claim,
    Schedule,
    Task,
    apply_action,
    claim,
    claude_md_id,
    first_run,
    following,
    from_claude_md,
    plan_sync,
    task_json,
)

UTC_ZONE = ZoneInfo("UTC")
BERLIN = "Europe/Berlin"
HOUR = 3_600_000
MINUTE = 60_000
DAY = 24 * HOUR


def ms(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> int:
    """An instant in UTC, as epoch milliseconds."""
    return int(datetime(year, month, day, hour, minute, tzinfo=UTC).timestamp() * 1000)


def cron(expr: str, tz: str | None = None) -> Schedule:
    return Schedule("cron", cron=expr, tz=tz)


def fires(schedule: Schedule, start: int, end: int, zone: ZoneInfo = UTC_ZONE) -> list[int]:
    """Every instant the schedule fires in [start, end), each counted from the one before."""
    out: list[int] = []
    t = first_run(schedule, zone, start - 1)
    while t is not None and t < end:
        out.append(t)
        t = following(schedule, zone, t, t)
    return out


def hourly(start: int, count: int) -> list[int]:
    return [start + i * HOUR for i in range(count)]


def agent_task(schedule: Schedule, next_run_ms: int | None, **kw: object) -> Task:
    return Task(
        id=str(kw.pop("id", "t1")),
        folder="work",
        source=AGENT,
        prompt="do it",
        schedule=schedule,
        next_run_ms=next_run_ms,
        **kw,  # type: ignore[arg-type]
    )


# timezones


def test_kolkata_eight_am_fires_at_0230_utc() -> None:
    """`0 8 * * *` in Asia/Kolkata (UTC+05:30, no DST) is 02:30 UTC every day."""
    schedule = cron("0 8 * * *", "Asia/Kolkata")
    first = first_run(schedule, UTC_ZONE, ms(2026, 11, 22, 0, 0))
    assert first == ms(2026, 11, 22, 2, 30)
    assert following(schedule, UTC_ZONE, first, first) == ms(2026, 11, 23, 2, 30)
    # created just after today's run: the first run is tomorrow's
    assert first_run(schedule, UTC_ZONE, ms(2026, 11, 22, 2, 31)) == ms(2026, 11, 23, 2, 30)
    assert fires(schedule, ms(2026, 11, 22), ms(2026, 11, 25)) == [
        ms(2026, 11, 22, 2, 30),
        ms(2026, 11, 23, 2, 30),
        ms(2026, 11, 24, 2, 30),
    ]


def test_the_default_zone_applies_when_a_cron_has_no_tz() -> None:
    schedule = cron("0 8 * * *")
    now = ms(2026, 11, 22, 0, 0)
    assert first_run(schedule, ZoneInfo("Asia/Kolkata"), now) == ms(2026, 11, 22, 2, 30)
    assert first_run(schedule, UTC_ZONE, now) == ms(2026, 11, 22, 8, 0)
    # the task's own tz wins over the default
    assert first_run(cron("0 8 * * *", "UTC"), ZoneInfo("Asia/Kolkata"), now) == ms(
        2026, 11, 22, 8, 0
    )


# daylight saving time: Europe/Berlin 2026-03-29 (02:00 CET -> 03:00 CEST) and
# 2026-10-25 (03:00 CEST -> 02:00 CET)


def test_hourly_on_spring_forward_day_runs_23_times() -> None:
    """The local day 2026-03-29 has 23 hours (23:00Z to 22:00Z): 23 runs, one per real hour.

    02:00 does not exist that day; 01:00 CET (00:00Z) is followed by 03:00 CEST (01:00Z).
    """
    got = fires(cron("0 * * * *", BERLIN), ms(2026, 3, 28, 23), ms(2026, 3, 29, 22))
    assert got == hourly(ms(2026, 3, 28, 23), 23)


def test_hourly_on_fall_back_day_runs_25_times() -> None:
    """The local day 2026-10-25 has 25 hours (22:00Z to 23:00Z): an hourly cron runs in each.

    02:00 comes twice (00:00Z as CEST, 01:00Z as CET). An hourly (or finer) cron runs by real
    time, as vixie cron does: both 02:00s fire, so no real hour goes by without a run.
    """
    got = fires(cron("0 * * * *", BERLIN), ms(2026, 10, 24, 22), ms(2026, 10, 25, 23))
    assert got == hourly(ms(2026, 10, 24, 22), 25)
    assert ms(2026, 10, 25, 0) in got and ms(2026, 10, 25, 1) in got  # both 02:00s


def test_hourly_over_48_hours_around_each_change() -> None:
    """48 real hours hold 48 hourly runs whatever the clocks do; nothing fires twice."""
    for start in (ms(2026, 3, 28, 12), ms(2026, 10, 24, 12)):
        got = fires(cron("0 * * * *", BERLIN), start, start + 48 * HOUR)
        assert got == hourly(start, 48)


def test_every_quarter_hour_has_no_gap_in_the_repeated_hour() -> None:
    """`*/15` (like the spec's alert watch) keeps firing every 15 real minutes at fall-back."""
    start, end = ms(2026, 10, 24, 23), ms(2026, 10, 25, 3)
    got = fires(cron("*/15 * * * *", BERLIN), start, end)
    assert got == list(range(start, end, 15 * MINUTE))
    assert len(got) == 16
    spring = fires(cron("*/15 * * * *", BERLIN), ms(2026, 3, 29, 0), ms(2026, 3, 29, 2))
    assert spring == list(range(ms(2026, 3, 29, 0), ms(2026, 3, 29, 2), 15 * MINUTE))


def test_hourly_at_fall_back_in_a_zone_whose_winter_offset_is_zero() -> None:
    """Europe/London falls back from +01:00 to +00:00 (2026-10-25): 25 runs that local day."""
    got = fires(cron("0 * * * *", "Europe/London"), ms(2026, 10, 24, 23), ms(2026, 10, 26, 0))
    assert got == hourly(ms(2026, 10, 24, 23), 25)


def test_daily_0230_on_spring_forward_day_runs_once_after_the_gap() -> None:
    """02:30 does not exist on 2026-03-29; the run moves forward by the gap, to 03:30 CEST
    (01:30Z), once. The days around it run at 02:30 local (01:30Z CET, 00:30Z CEST)."""
    got = fires(cron("30 2 * * *", BERLIN), ms(2026, 3, 27), ms(2026, 3, 31))
    assert got == [
        ms(2026, 3, 27, 1, 30),
        ms(2026, 3, 28, 1, 30),
        ms(2026, 3, 29, 1, 30),
        ms(2026, 3, 30, 0, 30),
    ]


def test_daily_0230_on_fall_back_day_runs_once() -> None:
    """02:30 happens twice on 2026-10-25; a cron with a fixed hour runs at the first (CEST,
    00:30Z) only, then at 02:30 CET (01:30Z) the next day."""
    got = fires(cron("30 2 * * *", BERLIN), ms(2026, 10, 24), ms(2026, 10, 27))
    assert got == [ms(2026, 10, 24, 0, 30), ms(2026, 10, 25, 0, 30), ms(2026, 10, 26, 1, 30)]
    # counted from a due time inside the repeated hour, it still does not fire again
    assert following(
        cron("30 2 * * *", BERLIN), UTC_ZONE, ms(2026, 10, 25, 0, 30), ms(2026, 10, 25, 1, 10)
    ) == ms(2026, 10, 26, 1, 30)


def test_every_two_hours_on_fall_back_day_keeps_its_wall_clock_hours() -> None:
    """`0 */2` names hours: 00, 02 (first one), 04 ... 22 local: 12 runs in the 25-hour day."""
    got = fires(cron("0 */2 * * *", BERLIN), ms(2026, 10, 24, 22), ms(2026, 10, 25, 23))
    assert got == [ms(2026, 10, 24, 22), ms(2026, 10, 25, 0)] + [
        ms(2026, 10, 25, h) for h in range(3, 23, 2)
    ]
    assert len(got) == 12


# no drift


def test_cron_next_run_counts_from_the_schedule_not_from_the_finish() -> None:
    schedule = cron("0 8 * * *")
    due = ms(2026, 11, 22, 8)
    for late in (0, 1, 17 * MINUTE, 5 * HOUR):
        assert following(schedule, UTC_ZONE, due, due + late) == ms(2026, 11, 23, 8)
    # a whole day late: the slot after now, still at 08:00
    assert following(schedule, UTC_ZONE, due, due + DAY + 1) == ms(2026, 11, 24, 8)


def test_every_stays_on_its_grid_however_late_the_tick() -> None:
    schedule = Schedule("every", every_s=600)
    step = 600_000
    due = ms(2026, 11, 22, 8)
    assert following(schedule, UTC_ZONE, due, due) == due + step
    assert following(schedule, UTC_ZONE, due, due + 1) == due + step
    assert following(schedule, UTC_ZONE, due, due + step - 1) == due + step
    assert following(schedule, UTC_ZONE, due, due + step) == due + 2 * step
    assert following(schedule, UTC_ZONE, due, due + 3 * step + 7_000) == due + 4 * step
    # a day of ticks that each come 0..9 s late never moves the grid
    t = due
    for i in range(144):
        now = t + (i % 10) * 1000
        t = following(schedule, UTC_ZONE, t, now)  # type: ignore[assignment]
        assert t == due + (i + 1) * step


def test_every_first_run_is_one_period_after_creation() -> None:
    now = ms(2026, 11, 22, 8, 3)
    assert first_run(Schedule("every", every_s=3600), UTC_ZONE, now) == now + HOUR


def test_at_runs_once_at_its_time() -> None:
    at = Schedule("at", at_ms=ms(2026, 12, 1, 9))
    assert first_run(at, UTC_ZONE, ms(2026, 11, 22)) == ms(2026, 12, 1, 9)
    assert following(at, UTC_ZONE, ms(2026, 12, 1, 9), ms(2026, 12, 1, 9)) is None


# claim


def test_claim_nothing_before_due_or_when_not_active() -> None:
    due = ms(2026, 11, 22, 8)
    task = agent_task(cron("0 8 * * *"), due)
    assert claim(task, UTC_ZONE, due - 1) is None
    assert claim(replace(task, status="paused"), UTC_ZONE, due + 1) is None
    assert claim(replace(task, status="cancelled"), UTC_ZONE, due + 1) is None
    assert claim(replace(task, next_run_ms=None), UTC_ZONE, due + 1) is None
    assert claim(task, UTC_ZONE, due) == Claim(due, True, ms(2026, 11, 23, 8))


def test_catch_up_once_after_downtime_runs_once_and_moves_to_the_future() -> None:
    """Down from 08:00 on the 22nd to 10:00 on the 25th: one run (for the first missed due
    time), and the next is the 26th at 08:00, not the missed 23rd, 24th or 25th."""
    due = ms(2026, 11, 22, 8)
    now = ms(2026, 11, 25, 10)
    task = agent_task(cron("0 8 * * *"), due)
    decision = claim(task, UTC_ZONE, now)
    assert decision == Claim(due, True, ms(2026, 11, 26, 8))
    # the store moves next_run_ms; the same tick then finds nothing more
    assert claim(replace(task, next_run_ms=decision.next_run_ms), UTC_ZONE, now) is None


def test_catch_up_once_for_every_tasks_lands_on_the_grid() -> None:
    due = ms(2026, 11, 22, 8)
    task = agent_task(Schedule("every", every_s=900), due)
    decision = claim(task, UTC_ZONE, due + 5 * HOUR + 1)
    assert decision == Claim(due, True, due + 5 * HOUR + 15 * MINUTE)


def test_catch_up_skip_logs_a_missed_run_when_60s_late() -> None:
    due = ms(2026, 11, 22, 8)
    task = agent_task(cron("0 8 * * *"), due, catch_up="skip")
    assert claim(task, UTC_ZONE, due + LATE_MS - 1) == Claim(due, True, ms(2026, 11, 23, 8))
    late = claim(task, UTC_ZONE, due + LATE_MS)
    assert late == Claim(
        due, False, ms(2026, 11, 23, 8), "missed by 60s while down; catch_up is skip"
    )
    days = claim(task, UTC_ZONE, ms(2026, 11, 24, 9))
    assert days is not None and not days.run and days.next_run_ms == ms(2026, 11, 25, 8)
    assert days.reason == "missed by 176400s while down; catch_up is skip"


def test_at_one_shot_claim_has_no_next_run() -> None:
    at_ms = ms(2026, 12, 1, 9)
    task = agent_task(Schedule("at", at_ms=at_ms), at_ms)
    assert claim(task, UTC_ZONE, at_ms + 5) == Claim(at_ms, True, None)
    missed = claim(replace(task, catch_up="skip"), UTC_ZONE, at_ms + HOUR)
    assert missed == Claim(at_ms, False, None, "missed by 3600s while down; catch_up is skip")


# schedules as JSON


@pytest.mark.parametrize(
    "schedule",
    [
        cron("0 8 * * 1-5", "Asia/Kolkata"),
        cron("*/15 * * * *"),
        Schedule("every", every_s=3600),
        Schedule("at", at_ms=ms(2026, 12, 1, 9)),
        Schedule("at", at_ms=2_192_070_117_482),  # float ms arithmetic made this ...481
        Schedule("at", at_ms=1_092_557_016_722),
    ],
)
def test_schedule_json_round_trip(schedule: Schedule) -> None:
    assert Schedule.from_json(schedule.to_json()) == schedule


def test_schedule_json_shapes() -> None:
    assert cron("0 8 * * *", "Asia/Kolkata").to_json() == {
        "cron": "0 8 * * *",
        "tz": "Asia/Kolkata",
    }
    assert cron("0 8 * * *").to_json() == {"cron": "0 8 * * *"}
    assert Schedule("every", every_s=60).to_json() == {"every_s": 60}
    assert Schedule("at", at_ms=ms(2026, 12, 1, 9)).to_json() == {"at": "2026-12-01T09:00:00+00:00"}
    at = Schedule.from_json({"at": "2026-12-01T14:30:00+05:30"})
    assert at.at_ms == ms(2026, 12, 1, 9)
    assert at.describe() == "at 2026-12-01T09:00:00+00:00"
    assert cron("0 8 * * *", "Asia/Kolkata").describe() == "cron 0 8 * * * (Asia/Kolkata)"
    assert Schedule("every", every_s=60).describe() == "every 60s"


def test_task_json_gives_times_in_the_zone() -> None:
    task = agent_task(cron("0 8 * * *", "Asia/Kolkata"), ms(2026, 11, 22, 2, 30))
    data = task_json(task, ZoneInfo("Asia/Kolkata"))
    assert data["next_run"] == "2026-11-22T08:00:00+05:30"
    assert data["last_run"] is None
    assert data["schedule"] == {"cron": "0 8 * * *", "tz": "Asia/Kolkata"}
    assert (data["id"], data["group"], data["source"], data["status"]) == (
        "t1",
        "work",
        AGENT,
        "active",
    )


# CLAUDE.md tasks

FILE = """# Work

## Scheduled Tasks
# Cron: 0 8 * * 1-5
# TZ: Asia/Kolkata
Summarise the feeds.

# Cron: */15 * * * *
Check the alerts.
"""


def md_tasks(text: str, folder: str = "work") -> list[Task]:
    entries, errors = parse_tasks(text)
    assert errors == []
    return [from_claude_md(folder, e) for e in entries]


def test_claude_md_entries_become_group_context_cron_tasks() -> None:
    summary, alerts = md_tasks(FILE)
    assert summary.source == CLAUDE_MD and summary.folder == "work"
    assert summary.schedule == cron("0 8 * * 1-5", "Asia/Kolkata")
    assert (summary.prompt, summary.line, summary.context) == ("Summarise the feeds.", 4, "group")
    assert alerts.schedule == cron("*/15 * * * *") and alerts.line == 8
    assert summary.id.startswith("md-") and len(summary.id) == 15
    assert summary.id != alerts.id
    # the id depends on folder, cron, tz and prompt, and on nothing else
    assert md_tasks(FILE, "other")[0].id != summary.id
    assert md_tasks("\n\n\n" + FILE)[0].id == summary.id


def test_plan_sync_adds_everything_into_an_empty_store() -> None:
    wanted = md_tasks(FILE)
    plan = plan_sync({}, wanted)
    assert plan.add == tuple(wanted)
    assert plan.keep == () and plan.remove == () and plan.duplicates == ()


def test_plan_sync_keeps_unchanged_tasks_and_follows_their_line() -> None:
    summary, alerts = md_tasks(FILE)
    moved = md_tasks(FILE.replace("# Work\n", "# Work\n\nmore notes\n"))
    plan = plan_sync({summary.id: "active", alerts.id: "paused"}, moved)
    assert plan.add == () and plan.remove == ()
    assert plan.keep == ((summary.id, 6), (alerts.id, 10))


@pytest.mark.parametrize(
    "edit",
    [
        ("Check the alerts.", "Check the alerts twice."),  # prompt
        ("*/15 * * * *", "*/30 * * * *"),  # cron
        ("# Cron: */15 * * * *\n", "# Cron: */15 * * * *\n# TZ: Europe/Berlin\n"),  # tz
    ],
)
def test_plan_sync_an_edited_task_is_a_new_one_and_the_old_goes(edit: tuple[str, str]) -> None:
    summary, alerts = md_tasks(FILE)
    _, edited = md_tasks(FILE.replace(*edit))
    assert edited.id != alerts.id
    plan = plan_sync({summary.id: "active", alerts.id: "active"}, md_tasks(FILE.replace(*edit)))
    assert plan.add == (edited,)
    assert plan.keep == ((summary.id, 4),)
    assert plan.remove == (alerts.id,)


def test_plan_sync_removes_deleted_tasks_once_and_brings_back_restored_ones() -> None:
    summary, alerts = md_tasks(FILE)
    only_summary = FILE.split("# Cron: */15")[0]
    plan = plan_sync({summary.id: "active", alerts.id: "active"}, md_tasks(only_summary))
    assert plan.remove == (alerts.id,) and plan.add == ()
    # already removed: not removed again
    again = plan_sync({summary.id: "active", alerts.id: "removed"}, md_tasks(only_summary))
    assert again.remove == ()
    # written back into the file: added again
    back = plan_sync({summary.id: "active", alerts.id: "removed"}, md_tasks(FILE))
    assert back.add == (alerts,) and back.remove == ()
    # an emptied section removes everything
    empty = plan_sync({summary.id: "paused", alerts.id: "active"}, [])
    assert empty.remove == (summary.id, alerts.id)


def test_plan_sync_reports_duplicates_with_the_first_line() -> None:
    text = FILE + "\n# Cron: */15 * * * *\nCheck the alerts.\n"
    wanted = md_tasks(text)
    assert [t.line for t in wanted] == [4, 8, 11]
    plan = plan_sync({}, wanted)
    assert [t.line for t in plan.add] == [4, 8]
    assert plan.duplicates == ((11, 8),)


def test_broken_cron_and_unknown_tz_lines_are_reported_and_good_ones_load() -> None:
    text = """## Scheduled Tasks
# Cron: 0 8 * * *
good morning
# Cron: 61 * * * *
bad minute
# Cron: 0 9 * * *
# TZ: Mars/Olympus
bad zone
# Cron: 0 18 * * *
# TZ: Europe/Berlin
good evening
"""
    entries, errors = parse_tasks(text)
    assert [(e.line, e.message) for e in errors] == [
        (4, "not a 5-field cron expression: '61 * * * *'"),
        (7, "unknown timezone 'Mars/Olympus'"),
    ]
    wanted = [from_claude_md("work", e) for e in entries]
    assert [(t.line, t.prompt, t.schedule) for t in wanted] == [
        (2, "good morning", cron("0 8 * * *")),
        (9, "good evening", cron("0 18 * * *", "Europe/Berlin")),
    ]
    plan = plan_sync({}, wanted)
    assert [t.prompt for t in plan.add] == ["good morning", "good evening"]
    assert first_run(wanted[1].schedule, UTC_ZONE, ms(2026, 11, 22)) == ms(2026, 11, 22, 17)


def test_claude_md_id_is_stable() -> None:
    entries, _ = parse_tasks(FILE)
    assert claude_md_id("work", entries[0]) == claude_md_id("work", entries[0])
    assert claude_md_id("work", entries[0]) == from_claude_md("work", entries[0]).id


# actions


def test_pause_resume_cancel() -> None:
    due = ms(2026, 11, 22, 8)
    task = agent_task(cron("0 8 * * *"), due)
    paused = apply_action(task, "pause", UTC_ZONE, due - HOUR)
    assert paused == replace(task, status="paused")
    # resumed two days later: the next run is counted from then, not the stale due time
    resumed = apply_action(paused, "resume", UTC_ZONE, ms(2026, 11, 24, 9))
    assert resumed == replace(task, status="active", next_run_ms=ms(2026, 11, 25, 8))
    cancelled = apply_action(resumed, "cancel", UTC_ZONE, due)
    assert cancelled == replace(task, status="cancelled", next_run_ms=None)
    with pytest.raises(ValueError, match="task t1 is cancelled"):
        apply_action(cancelled, "resume", UTC_ZONE, due)
    with pytest.raises(ValueError, match="unknown action 'stop'"):
        apply_action(task, "stop", UTC_ZONE, due)


def test_claude_md_tasks_pause_but_do_not_cancel() -> None:
    md = replace(md_tasks(FILE)[0], next_run_ms=ms(2026, 11, 23, 2, 30))
    assert apply_action(md, "pause", UTC_ZONE, 0).status == "paused"
    with pytest.raises(ValueError, match=r"comes from CLAUDE\.md"):
        apply_action(md, "cancel", UTC_ZONE, 0)
    with pytest.raises(ValueError, match="is removed"):
        apply_action(replace(md, status="removed"), "pause", UTC_ZONE, 0)
