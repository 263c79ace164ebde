"""The ledger interface and the pure plan arithmetic every backend shares.

A ledger answers one question atomically: can this buyer's plan cover these
amounts right now, and if so, debit them (a *hold*). The debit is provisional:
:meth:`Ledger.adjust` later moves it to what was actually used (settle) or
back to zero (release). Backends differ only in storage; the decision rules
live in :func:`evaluate` so that every backend decides the same way.
"""

from __future__ import annotations

import math
import re
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Literal

from pydantic import TypeAdapter

from .._text import table
from ..errors import ZcError
from ..periods import period_bounds
from ..plans import PlanConfig

__all__ = [
    "Account",
    "Balance",
    "Clock",
    "Hold",
    "Ledger",
    "MeterBalance",
    "Plans",
    "Reason",
    "Refusal",
    "Row",
    "evaluate",
]

Reason = Literal["usage_exhausted", "spend_cap_reached", "plan_expired"]
Status = Literal["active", "expired", "capped"]
Clock = Callable[[], float]
_PLANS: TypeAdapter[dict[str, PlanConfig]] = TypeAdapter(dict[str, PlanConfig])


@dataclass(frozen=True, slots=True)
class Hold:
    """A granted, provisional debit: ``(meter, amount, period_start)`` per meter."""

    buyer: str
    debits: tuple[tuple[str, int, float], ...]


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
        if plan not in self.configs:
            raise ZcError("unknown_plan", f"plan {plan!r} is not declared in settings.plans")


#: What a buyer id may be (``fullmatch``): 1 to 256 printable ASCII characters, without spaces or
#: commas. A comma is what servers join a repeated header with (``zc-agent-id: a, b``), so a request
#: naming two buyers is refused (401) by every adapter instead of billing a made-up third one.
BUYER_ID = re.compile(r"[\x21-\x2b\x2d-\x7e]{1,256}")


def check_buyer_id(buyer: object) -> str:
    """``buyer`` if it is a valid id (:data:`BUYER_ID`), else :class:`ZcError` ``invalid_buyer``."""
    if not isinstance(buyer, str) or not BUYER_ID.fullmatch(buyer):
        raise ZcError(
            "invalid_buyer",
            f"{buyer!r} is not a buyer id: 1 to 256 printable ASCII characters, no spaces or commas",
        )
    return buyer


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


def _epoch(value: datetime | None, default: float | None) -> float | None:
    if value is None:
        return default
    if value.tzinfo is None:
        raise ZcError("naive_datetime", "datetimes must be timezone-aware (e.g. datetime.now(timezone.utc))")
    return value.timestamp()


class Ledger(ABC):
    """Where plan state lives. Every backend passes ``tests/ledger/test_contract.py``."""

    def __init__(self, *, plans: Mapping[str, Any], clock: Clock = time.time) -> None:
        self.plans = Plans(plans)
        self.clock = clock

    # -- the request path -------------------------------------------------
    @abstractmethod
    def reserve(self, buyer: str, amounts: Mapping[str, int]) -> Hold | Refusal:
        """Atomically check that ``amounts`` are covered and debit them."""

    @abstractmethod
    def adjust(self, hold: Hold, used: Mapping[str, int]) -> None:
        """Move a hold's debits to ``used`` (missing meters: 0). Idempotence is the caller's job."""

    def settle(self, hold: Hold, used: Mapping[str, int]) -> None:
        self.adjust(hold, used)

    def release(self, hold: Hold) -> None:
        self.adjust(hold, {})

    async def areserve(self, buyer: str, amounts: Mapping[str, int]) -> Hold | Refusal:
        return self.reserve(buyer, amounts)

    async def aadjust(self, hold: Hold, used: Mapping[str, int]) -> None:
        self.adjust(hold, used)

    # -- administration -----------------------------------------------------
    def assign_plan(
        self,
        buyer: str,
        plan: str,
        *,
        starts_at: datetime | None = None,
        expires_at: datetime | None = None,
    ) -> None:
        """Put ``buyer`` on ``plan`` with fresh allowances, periods anchored at ``starts_at``."""
        check_buyer_id(buyer)
        self.plans.check(plan)
        anchor = _epoch(starts_at, None) or self.clock()
        expires = _epoch(expires_at, None)
        if starts_at is not None and expires is not None and expires <= anchor:
            raise ZcError("invalid_dates", "the plan would expire before it starts: give expires_at after starts_at")
        self._store_account(buyer, Account(plan, anchor, expires), reset=True)

    def expire_plan(self, buyer: str) -> None:
        self._set_status(buyer, "expired")

    def mark_spend_cap_reached(self, buyer: str) -> None:
        """Stop serving paid actions to ``buyer`` until a plan is assigned again."""
        self._set_status(buyer, "capped")

    def _set_status(self, buyer: str, status: Status) -> None:
        check_buyer_id(buyer)
        account = self._account(buyer) or new_account(self.plans, self.clock())
        if account is None:
            return  # no plan to expire
        self._store_account(buyer, Account(account.plan, account.anchor, account.expires_at, status), reset=False)

    @abstractmethod
    def _account(self, buyer: str) -> Account | None: ...

    @abstractmethod
    def _store_account(self, buyer: str, account: Account, *, reset: bool) -> None: ...

    @abstractmethod
    def balance(self, buyer: str) -> Balance:
        """The buyer's per-meter balance now."""

    def close(self) -> None:
        """Release connections; the ledger may not be used afterwards."""
