"""Anchored reset periods: period k spans ``[anchor + k*interval, anchor + (k+1)*interval)``.

Periods are computed from the anchor every time, never chained from the previous
period, so they cannot drift; month and year steps clamp to the last day of a
short month (an anchor on Jan 31 gives Feb 28, then Mar 31 again).
"""

from __future__ import annotations

import calendar
import math
from datetime import datetime, timezone
from typing import Literal

__all__ = ["RESETS", "Reset", "period_bounds"]

Reset = Literal["minute", "hour", "day", "week", "month", "year", "never"]
RESETS: tuple[str, ...] = ("minute", "hour", "day", "week", "month", "year", "never")

_FIXED = {"minute": 60.0, "hour": 3600.0, "day": 86400.0, "week": 604800.0}
_MONTHS = {"month": 1, "year": 12}


def _add_months(anchor: datetime, months: int) -> datetime:
    index = anchor.month - 1 + months
    year, month = anchor.year + index // 12, index % 12 + 1
    day = min(anchor.day, calendar.monthrange(year, month)[1])
    return anchor.replace(year=year, month=month, day=day)


def period_bounds(anchor: float, reset: str, now: float) -> tuple[float, float]:
    """Return ``(start, end)`` epoch seconds of the period containing ``now``.

    ``end`` is ``math.inf`` for ``"never"``.
    """
    if reset == "never":
        return anchor, math.inf
    step = _FIXED.get(reset)
    if step is not None:
        k = math.floor((now - anchor) / step)
        start = anchor + k * step
        return start, start + step
    months = _MONTHS[reset]
    base = datetime.fromtimestamp(anchor, timezone.utc)
    current = datetime.fromtimestamp(now, timezone.utc)
    k = ((current.year - base.year) * 12 + current.month - base.month) // months
    first = _add_months(base, k * months)
    if first > current:  # compare datetimes: both carry the same microsecond rounding
        k -= 1
        first = _add_months(base, k * months)
    end = _add_months(base, (k + 1) * months)
    return first.timestamp(), end.timestamp()
