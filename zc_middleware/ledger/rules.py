"""The plan arithmetic every ledger shares: what a plan allows, when a period resets, what fits.

Backends differ only in storage; whether a reservation fits, and the rows it
leaves behind, are decided here by :func:`evaluate`, so that every backend
decides the same way.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import TypeAdapter

from .._text import did_you_mean
from ..errors import ZcError
from ..periods import period_bounds
from ..plans import PlanConfig

__all__ = ["Account", "Plans", "Reason", "Refusal", "Row", "Status", "current_row", "evaluate", "new_account"]

Reason = Literal["usage_exhausted", "spend_cap_reached", "plan_expired"]
Status = Literal["active", "expired", "capped"]
_PLANS: TypeAdapter[dict[str, PlanConfig]] = TypeAdapter(dict[str, PlanConfig])


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a plan cannot cover an action; ``retry_after`` is seconds until the meter resets."""

    reason: Reason
    meter: str | None = None
    retry_after: int | None = None


@dataclass(frozen=True, slots=True)
class Account:
    plan: str
    anchor: float
    expires_at: float | None
    status: Status = "active"


@dataclass(frozen=True, slots=True)
class Row:
    """One meter's state for one buyer; ``period_end`` is ``inf`` when it never resets."""

    period_start: float
    period_end: float
    used: int


class Plans:
    """Plan configuration as the ledger needs it: limits and resets by plan and meter."""

    def __init__(self, plans: Mapping[str, PlanConfig | Mapping[str, Any]]) -> None:
        self.configs: dict[str, PlanConfig] = _PLANS.validate_python(dict(plans))
        self.default = next((name for name, plan in self.configs.items() if plan.default), None)

    def allowance(self, plan: str, meter: str) -> tuple[float, str]:
        """``(limit, reset)``; a meter the plan does not include has limit 0."""
        config = self.configs[plan]
        allowance = config.includes.get(meter)
        if allowance is None:
            return 0, "never"
        return (math.inf if allowance.limit is None else allowance.limit), allowance.reset

    def sql_limit(self, plan: str, meter: str) -> int | None:
        limit = self.allowance(plan, meter)[0]
        return None if limit == math.inf else int(limit)

    def check(self, plan: str) -> None:
        """:class:`ZcError` ``unknown_plan`` unless ``plan`` is declared, naming the closest one."""
        if plan not in self.configs:
            hint = did_you_mean(plan, self.configs) or f"; declared: {', '.join(self.configs) or 'none'}"
            raise ZcError("unknown_plan", f"plan {plan!r} is not declared in settings.plans{hint}")


#: Seconds a plan's start may lie ahead of a check's clock and still count as started. The buyer's
#: first requests race: one creates the account anchored at its own clock, and a check that read the
#: clock a moment earlier (another thread, or a host whose clock is a little behind) must not answer
#: ``plan_expired`` for a plan that starts "in the future" by that moment.
START_SKEW = 2.0


def as_of(anchor: float, now: float) -> float:
    """The time a check counts at: ``now``, or the plan's start when that is only ``START_SKEW`` ahead."""
    return anchor if anchor - START_SKEW <= now < anchor else now


def _account_refusal(account: Account | None, plans: Plans, now: float) -> Refusal | None:
    if account is None or account.plan not in plans.configs:
        return Refusal("plan_expired")
    if account.status == "capped":
        return Refusal("spend_cap_reached")
    if account.status == "expired" or (account.expires_at is not None and now >= account.expires_at):
        return Refusal("plan_expired")
    if now < account.anchor:
        return Refusal("plan_expired")  # not started yet
    return None


def current_row(plans: Plans, account: Account, meter: str, row: Row | None, now: float) -> Row:
    """The row as it stands at ``now``: reset lazily when its period has ended. A ``now`` before the
    row's period (read before another thread rolled it over, or a clock stepped back) keeps the row:
    a balance never goes back to an earlier period with nothing used."""
    if row is not None and now < row.period_end:
        return row
    _, reset = plans.allowance(account.plan, meter)
    start, end = period_bounds(account.anchor, reset, now)
    return Row(start, end, 0)


def evaluate(
    plans: Plans,
    account: Account | None,
    rows: Mapping[str, Row],
    amounts: Mapping[str, int],
    now: float,
) -> Refusal | dict[str, Row]:
    """Decide a reservation; on success return the new rows (amounts debited)."""
    if account is not None:
        now = as_of(account.anchor, now)
    refusal = _account_refusal(account, plans, now)
    if refusal is not None:
        return refusal
    assert account is not None
    new: dict[str, Row] = {}
    for meter, amount in amounts.items():
        limit, _ = plans.allowance(account.plan, meter)
        row = current_row(plans, account, meter, rows.get(meter), now)
        if row.used + amount > limit:
            retry = None if row.period_end == math.inf else max(1, math.ceil(row.period_end - now))
            return Refusal("usage_exhausted", meter, retry)
        new[meter] = Row(row.period_start, row.period_end, row.used + amount)
    return new


def new_account(plans: Plans, now: float) -> Account | None:
    """The account a first-time buyer gets: the default plan, anchored now."""
    return Account(plans.default, now, None) if plans.default else None
