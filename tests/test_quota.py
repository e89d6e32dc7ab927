"""The per-group file quota and errors/ retention, pure: a clock the test moves."""

from __future__ import annotations

import pytest

from nanoclaw.ipc.quota import FileLimits, FileQuota, stamp_s, to_prune

LIMITS = FileLimits(files=3, window_s=10, errors_kept=2, errors_age_s=100, prune_every=5)


def test_window_allowance_warning_notice_and_prune_cadence() -> None:
    now = [1000.0]
    quota = FileQuota(LIMITS, clock=lambda: now[0])
    for _ in range(3):
        assert quota.left("a")
        quota.spend("a")
    assert quota.left("a") == 0 and quota.left("b") == 3  # per group
    assert quota.first_excess("a") and not quota.first_excess("a")
    now[0] += 9.9
    assert quota.left("a") == 0
    now[0] += 0.1  # a new window: a new allowance, and one more warning
    assert quota.left("a") == 3 and quota.first_excess("a")
    # the chat notice: once per run (and once while no run is live)
    told = [quota.first_for_run("a", run) for run in (7, 7, 8, None, None, 8)]
    assert told == [True, False, True, True, False, True]
    # errors/ is pruned on the first ask, then after every `prune_every` set-asides
    assert quota.prune_due("a") and not quota.prune_due("a")
    quota.set_aside("a", 4)
    assert not quota.prune_due("a")
    quota.set_aside("a", 1)
    assert quota.prune_due("a") and not quota.prune_due("a")


NOW = 10_000.0


@pytest.mark.parametrize(
    ("entries", "pruned"),
    [
        ([], []),
        ([("x", NOW - 1), ("y", NOW - 2)], []),
        ([("x", NOW - 1), ("y", NOW - 2), ("z", NOW - 3)], ["z"]),  # the oldest past the cap
        ([("x", NOW - 101), ("y", NOW - 2)], ["x"]),  # too old, however few
        ([("old", NOW - 500), ("a", NOW), ("b", NOW - 1), ("c", NOW - 2)], ["old", "c"]),
        # made together: the note saying why is kept before the files it explains
        ([("t-f1", NOW), ("t-f1.reason.txt", NOW), ("t-f2", NOW)], ["t-f1"]),
    ],
)
def test_to_prune(entries: list[tuple[str, float]], pruned: list[str]) -> None:
    assert to_prune(entries, NOW, LIMITS) == pruned


@pytest.mark.parametrize(
    ("name", "made"),
    [
        ("1700000000123-ab12-x.json", 1_700_000_000.123),
        ("1700000000123-ab12-x.json.reason.txt", 1_700_000_000.123),
        ("170000000012-short", None),
        ("x-1700000000123-", None),
        ("١٧٠٠٠٠٠٠٠٠١٢٣-arabic-digits", None),
    ],
)
def test_stamp_of_a_set_aside_name(name: str, made: float | None) -> None:
    assert stamp_s(name) == made
