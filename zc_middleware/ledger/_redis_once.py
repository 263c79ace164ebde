"""Writes the Redis ledger applies at most once (entitlement writes, journaled settles), and its account hash decoded.

* An entitlement write is decided in Python from the account read first, then one script checks its
  idempotency key and version and stores it only if the account is still the one decided from. The
  last version applied lives in the account hash and is never trimmed; the plan history keeps the
  last :data:`~._redis_lua.HISTORY_KEPT` writes.
* A journaled settle sets a marker key in the buyer's hash slot, with a TTL of
  :data:`~zc_middleware.ledger.base.APPLIED_TTL`, only if it was not there, and moves the hold in
  the same script.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any, cast

from ..errors import ZcError
from . import _redis_lua
from ._redis_scripts import ADJUST_ONCE, ENTITLE, READ, Call, Flow
from .base import APPLIED_TTL
from .entitlements import Change, Entitlement, Outcome, decide
from .rules import Account

__all__ = ["TRIES", "adjust_once", "as_account", "as_float", "changes_of", "contended", "entitle", "history_keys"]

#: how often a write may find the account changed under it before it gives up
TRIES = 3


def history_keys(keys: tuple[str, str, str]) -> tuple[str, str, str, str]:
    """A buyer's account, rows and leases keys, then the plan history's list, in the same hash slot."""
    account, rows, leases = keys
    return account, rows, leases, account[:-1] + "h"


def adjust_once(keys: tuple[str, str, str], entry_id: str, adjustments: Sequence[str]) -> Call:
    """The call that makes ``adjustments`` unless ``entry_id`` was applied before (its reply: 1 if it ran)."""
    marker = keys[0][:-1] + "once:" + entry_id
    return ADJUST_ONCE, (*keys, marker), (str(int(APPLIED_TTL)), *adjustments)


def entitle(keys: tuple[str, str, str], write: Entitlement, now: float) -> Flow[Outcome]:
    """Read the account, decide, and have one script check the key and the version and store the
    write, if the account is still the one decided from (else decide again)."""
    keys4 = history_keys(keys)
    for _ in range(TRIES):
        stored = (yield READ, keys, ())[0]
        before = ("", "", "", "") if not stored[0] else tuple(stored)
        account, reset, change = decide(as_account(stored), write)
        expires = "" if account.expires_at is None else repr(account.expires_at)
        entry = json.dumps([now, write.kid, write.version, write.key, change])
        args = [write.key, str(write.version), *before, account.plan, repr(account.anchor), expires]
        args += (account.status, "1" if reset else "0", entry, str(_redis_lua.HISTORY_KEPT))
        outcome = (yield ENTITLE, keys4, args)[0]
        if outcome != "changed":
            return cast("Outcome", outcome)
    raise contended(write.buyer)


def changes_of(entries: Sequence[str]) -> tuple[Change, ...]:
    """The plan history the HISTORY script read, oldest first."""
    return tuple(Change(*json.loads(entry)) for entry in entries)


def as_account(stored: list[Any]) -> Account | None:
    """The account from its hash's plan, anchor, expires and status (``plan`` empty: none)."""
    if not stored[0]:
        return None
    return Account(stored[0], float(stored[1]), as_float(stored[2], None), stored[3])


def as_float(text: str, never: float | None = math.inf) -> Any:
    return never if text == "" else float(text)


def contended(buyer: str) -> ZcError:
    return ZcError("ledger_contention", f"the account of {buyer!r} kept changing during a reservation")
