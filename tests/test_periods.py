from __future__ import annotations

import math
from datetime import datetime, timezone

import pytest

from zc_middleware.periods import period_bounds


def ts(*args: int) -> float:
    return datetime(*args, tzinfo=timezone.utc).timestamp()  # type: ignore[misc]


def day(value: float) -> str:
    return datetime.fromtimestamp(value, timezone.utc).strftime("%Y-%m-%d %H:%M")


def test_month_periods_are_anchored_and_clamped() -> None:
    anchor = ts(2026, 1, 31, 12)
    starts = [day(period_bounds(anchor, "month", ts(2026, m, 27 if m == 2 else 30, 13))[0]) for m in (2, 3, 4, 5)]
    # Mar 30 is still in the period that began Feb 28; Apr 30 is the clamped Apr 31
    assert starts == ["2026-01-31 12:00", "2026-02-28 12:00", "2026-04-30 12:00", "2026-04-30 12:00"]
    assert day(period_bounds(anchor, "month", ts(2026, 5, 31, 12))[0]) == "2026-05-31 12:00"


def test_year_period_from_a_leap_day() -> None:
    start, end = period_bounds(ts(2024, 2, 29), "year", ts(2025, 3, 1))
    assert (day(start), day(end)) == ("2025-02-28 00:00", "2026-02-28 00:00")


@pytest.mark.parametrize(("reset", "seconds"), [("minute", 60), ("hour", 3600), ("day", 86400), ("week", 604800)])
def test_fixed_periods_do_not_drift(reset: str, seconds: int) -> None:
    anchor = ts(2026, 1, 1, 0) + 0.123456
    start, end = period_bounds(anchor, reset, anchor + 1000.5 * seconds)
    assert start == anchor + 1000 * seconds
    assert end - start == seconds


def test_never_resets() -> None:
    assert period_bounds(10.0, "never", 1e12) == (10.0, math.inf)


def test_the_anchor_itself_starts_the_first_period() -> None:
    anchor = datetime.now(timezone.utc).timestamp()
    assert period_bounds(anchor, "month", anchor)[0] <= anchor
    assert period_bounds(anchor, "month", anchor)[1] > anchor
