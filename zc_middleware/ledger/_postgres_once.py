"""Writes the PostgreSQL ledger applies at most once: entitlement writes, and journaled settles.

* An entitlement write is checked, decided and stored in one transaction under the buyer's advisory
  lock; ``zeroclick_plan_history`` keeps every write applied and gives the last version.
* A journaled settle records its entry id in ``zeroclick_applied`` in the transaction that moves the
  hold, so a replay after a crash writes nothing.
"""

from __future__ import annotations

from .._postgres import Flow, Rows
from ._postgres_tables import ACCOUNT, LOCK_CLASS, UPSERT_ACCOUNT, account_of
from .base import APPLIED_TTL
from .entitlements import Change, Entitlement, Outcome, decide

__all__ = ["HISTORY", "adjust_once", "changes_of", "entitle"]

#: the ids of journaled writes applied (:func:`adjust_once`), and the lock that serializes those
#: writes (ours: a seller's one-key advisory locks use other numbers)
_APPLIED_TABLE = "CREATE TABLE IF NOT EXISTS zeroclick_applied (id TEXT PRIMARY KEY, at DOUBLE PRECISION NOT NULL)"
_APPLIED_INSERT = "INSERT INTO zeroclick_applied (id, at) VALUES (%s, %s) ON CONFLICT (id) DO NOTHING RETURNING id"
_APPLIED_LOCK = 0x5A43_0000_A991
_LAST_WRITE = """
SELECT (SELECT max(version) FROM zeroclick_plan_history WHERE buyer = %s),
    EXISTS (SELECT 1 FROM zeroclick_plan_history WHERE buyer = %s AND idem_key = %s)
"""
_RECORD = """
INSERT INTO zeroclick_plan_history (buyer, version, idem_key, applied_at, kid, change) VALUES (%s, %s, %s, %s, %s, %s)
"""
HISTORY = """
SELECT applied_at, kid, version, idem_key, change FROM zeroclick_plan_history WHERE buyer = %s ORDER BY version
"""


def adjust_once(entry_id: str, settle: tuple[str, tuple[object, ...]] | None, now: float) -> Flow[bool]:
    """Record ``entry_id`` and run ``settle`` (the statement that moves the hold), unless the id was
    recorded before: ``False`` then, and nothing written. Ids are forgotten after
    :data:`~zc_middleware.ledger.base.APPLIED_TTL`."""
    # created on first use (only journaled writes need it), one process at a time: concurrent
    # CREATE TABLE IF NOT EXISTS can fail one of them
    yield "SELECT pg_advisory_xact_lock(%s)", (_APPLIED_LOCK,)
    yield _APPLIED_TABLE, ()
    rows = yield _APPLIED_INSERT, (entry_id, now)
    if not rows:
        return False
    yield "DELETE FROM zeroclick_applied WHERE at < %s", (now - APPLIED_TTL,)
    if settle is not None:
        yield settle
    return True


def entitle(write: Entitlement, now: float) -> Flow[Outcome]:
    """Check, decide and store one write in one transaction. The buyer's advisory lock (the one
    the slow reservation takes) queues writes for one buyer, so two of one version cannot both
    read the same last version and apply; the fast reservation reads the new account at once."""
    buyer = write.buyer
    yield "SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (LOCK_CLASS, buyer)
    stored = account_of((yield ACCOUNT + " FOR UPDATE", (buyer,)))
    [(last, applied)] = yield _LAST_WRITE, (buyer, buyer, write.key)
    if applied:
        return "duplicate"
    if last is not None and write.version <= last:
        return "stale"
    account, reset, change = decide(stored, write)
    yield UPSERT_ACCOUNT, (buyer, account.plan, account.anchor, account.expires_at, account.status)
    if reset:
        yield "DELETE FROM zeroclick_balances WHERE buyer = %s", (buyer,)
    yield _RECORD, (buyer, write.version, write.key, now, write.kid, change)
    return "applied"


def changes_of(rows: Rows) -> tuple[Change, ...]:
    """The plan history :data:`HISTORY` read, oldest first."""
    return tuple(Change(*row) for row in rows)
