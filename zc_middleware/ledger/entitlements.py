"""Plan state as ZeroClick states it: entitlement writes, and what one does to a buyer's account.

ZeroClick pushes a buyer's plan to the seller as a signed write (see :mod:`zc_middleware.access`).
Each write names the plan, the period it serves and its status; this module decides, the same way
for every backend, what a write changes. A backend stores the account, the last version applied
and the write's record in one transaction, so a write applies atomically with checks.

* ``stateVersion`` orders writes: one older than or equal to the last applied is acknowledged and
  ignored (``stale``), and an idempotency key already applied is ignored too (``duplicate``).
* ``active`` serves the plan from the period's start (which anchors its meters' periods); ``end``
  ``None`` renews, otherwise the plan expires at ``end``. A write with another period start begins
  a new period with fresh included units; a write for the current period (a suspension lifted, a
  plan changed mid-period) keeps what was used.
* ``suspended`` is the spend cap (``402 spend_cap_reached``); ``closed`` ends the plan
  (``402 plan_expired``), each until an active write arrives.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Literal

from .rules import Account, Status

__all__ = ["Change", "Entitlement", "Outcome", "WriteStatus", "decide"]

WriteStatus = Literal["active", "suspended", "closed"]
Outcome = Literal["applied", "stale", "duplicate"]

_STATUS: dict[str, Status] = {"active": "active", "suspended": "capped", "closed": "expired"}


@dataclass(frozen=True, slots=True)
class Entitlement:
    """One write: ``buyer`` (the ``agentId``, the identity paid routes see) is on ``plan`` (a slug of
    ``settings.plans``) for the period ``[period_start, period_end)`` (epoch seconds; ``None``: renews)."""

    buyer: str
    plan: str
    status: WriteStatus
    period_start: float
    period_end: float | None
    version: int
    key: str
    #: the signing key id the write came with, for the history
    kid: str = ""

    def account(self) -> Account:
        return Account(self.plan, self.period_start, self.period_end, _STATUS[self.status])


@dataclass(frozen=True, slots=True)
class Change:
    """One applied write in a buyer's plan history: when, under which key id and version, and what it changed."""

    at: float
    kid: str
    version: int
    key: str
    change: str

    def as_line(self) -> str:
        when = datetime.fromtimestamp(self.at, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
        return f"{when} UTC  v{self.version}  kid {self.kid or '-'}  {self.change}  ({self.key})"


def decide(stored: Account | None, write: Entitlement) -> tuple[Account, bool, str]:
    """``(account, reset, change)``: the account ``write`` leaves, whether the meters start afresh
    (another period, or no account before), and a line saying what changed. The caller has already
    checked the version and the idempotency key."""
    account = write.account()
    reset = stored is None or stored.anchor != account.anchor
    return account, reset, describe(stored, account)


def describe(before: Account | None, after: Account) -> str:
    """What changed between two accounts, in words: ``plan starter -> pro, suspended``."""
    if before is None:
        return f"plan {after.plan}, {_words(after)}, from {_day(after.anchor)}"
    parts: list[str] = []
    if before.plan != after.plan:
        parts.append(f"plan {before.plan} -> {after.plan}")
    if before.anchor != after.anchor:
        parts.append(f"new period from {_day(after.anchor)}")
    if before.expires_at != after.expires_at:
        parts.append("renews" if after.expires_at is None else f"ends {_day(after.expires_at)}")
    if before.status != after.status:
        parts.append(_words(after))
    return ", ".join(parts) or "no change"


def _words(account: Account) -> str:
    return {"active": "active", "capped": "suspended (spend cap)", "expired": "closed"}[account.status]


def _day(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M")
