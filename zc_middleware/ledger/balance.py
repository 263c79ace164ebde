"""What a ledger reports of a buyer: per meter limit, used, remaining and period, and as a table."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Literal

from .._text import table
from .rules import Account, Plans, Row, current_row

__all__ = ["Balance", "MeterBalance", "make_balance"]


@dataclass(frozen=True, slots=True)
class MeterBalance:
    meter: str
    limit: int | None
    used: int
    remaining: int | None
    percent_used: float | None
    period_start: datetime
    period_end: datetime | None


@dataclass(frozen=True, slots=True)
class Balance:
    buyer: str
    plan: str | None
    #: ``not_started``: assigned with ``starts_at`` in the future (requests get ``402 plan_expired``
    #: until then, the contract's reason for "no plan serving now")
    status: Literal["active", "not_started", "expired", "capped", "none"]
    expires_at: datetime | None
    meters: tuple[MeterBalance, ...]

    def meter(self, name: str) -> MeterBalance:
        for item in self.meters:
            if item.meter == name:
                return item
        raise KeyError(name)

    def as_table(self) -> str:
        """A plain-text table for terminals: one row per meter."""
        head = ("meter", "limit", "used", "remaining", "% used", "period start", "period end")
        rows = [head] + [
            (
                m.meter,
                "unlimited" if m.limit is None else str(m.limit),
                str(m.used),
                "-" if m.remaining is None else str(m.remaining),
                "-" if m.percent_used is None else f"{m.percent_used:g}",
                m.period_start.strftime("%Y-%m-%d %H:%M"),
                "never" if m.period_end is None else m.period_end.strftime("%Y-%m-%d %H:%M"),
            )
            for m in self.meters
        ]
        state = self.status.replace("_", " ")
        if self.expires_at is not None:
            state += f", expires {self.expires_at.astimezone(timezone.utc):%Y-%m-%d %H:%M} UTC"
        return f"buyer {self.buyer}: plan {self.plan or '-'} ({state})\n{table(rows)}"


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, timezone.utc)


def make_balance(plans: Plans, buyer: str, account: Account | None, rows: Mapping[str, Row], now: float) -> Balance:
    """Per-meter limit, used, remaining, percent used and period bounds, reset lazily."""
    if account is None:
        if plans.default is None:
            return Balance(buyer, None, "none", None, ())
        account = Account(plans.default, now, None)
    status: Literal["active", "not_started", "expired", "capped"] = account.status
    if status == "active" and account.expires_at is not None and now >= account.expires_at:
        status = "expired"
    elif status == "active" and now < account.anchor:
        status = "not_started"
    config = plans.configs.get(account.plan)
    meters: list[MeterBalance] = []
    for meter in config.includes if config else ():
        limit_f, _ = plans.allowance(account.plan, meter)
        row = current_row(plans, account, meter, rows.get(meter), now)
        limit = None if limit_f == math.inf else int(limit_f)
        remaining = None if limit is None else max(0, limit - row.used)
        percent = None if not limit else round(100.0 * row.used / limit, 2)
        end = None if row.period_end == math.inf else _utc(row.period_end)
        meters.append(MeterBalance(meter, limit, row.used, remaining, percent, _utc(row.period_start), end))
    expires = None if account.expires_at is None else _utc(account.expires_at)
    return Balance(buyer, account.plan, status, expires, tuple(meters))
