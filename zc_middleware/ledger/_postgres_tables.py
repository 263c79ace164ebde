"""The PostgreSQL ledger's tables, and the statements and row readers its request path and its writes share.

``zeroclick_accounts`` holds a buyer's plan, anchor, expiry and status; ``zeroclick_balances`` one row
per buyer and meter (period and units used, holds included); ``zeroclick_plan_history`` every
entitlement write applied. A buyer's writes queue on one advisory lock (:data:`LOCK_CLASS`).
"""

from __future__ import annotations

import math

from .._postgres import Connection, Rows
from .rules import Account, Row

__all__ = ["ACCOUNT", "LOCK_CLASS", "ROWS", "UPSERT_ACCOUNT", "account_of", "prepare", "rows_of"]

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS zeroclick_accounts (
    buyer TEXT PRIMARY KEY, plan TEXT NOT NULL, anchor DOUBLE PRECISION NOT NULL,
    expires_at DOUBLE PRECISION, status TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS zeroclick_balances (
    buyer TEXT NOT NULL, meter TEXT NOT NULL, period_start DOUBLE PRECISION NOT NULL,
    period_end DOUBLE PRECISION, used BIGINT NOT NULL, PRIMARY KEY (buyer, meter))""",
    # the entitlement writes applied per buyer; the last version is read from here (versions only
    # grow per buyer), which leaves the older tables as they were
    """CREATE TABLE IF NOT EXISTS zeroclick_plan_history (
    buyer TEXT NOT NULL, version BIGINT NOT NULL, idem_key TEXT NOT NULL,
    applied_at DOUBLE PRECISION NOT NULL, kid TEXT NOT NULL, change TEXT NOT NULL,
    PRIMARY KEY (buyer, version), UNIQUE (buyer, idem_key))""",
)
#: the class of the per-buyer advisory locks ("ZC"), taken in the two-key form: never the same lock
#: as a seller's one-key locks
LOCK_CLASS = 0x5A43
ACCOUNT = "SELECT plan, anchor, expires_at, status FROM zeroclick_accounts WHERE buyer = %s"
ROWS = "SELECT meter, period_start, period_end, used FROM zeroclick_balances WHERE buyer = %s"
UPSERT_ACCOUNT = """
INSERT INTO zeroclick_accounts (buyer, plan, anchor, expires_at, status) VALUES (%s, %s, %s, %s, %s)
ON CONFLICT (buyer) DO UPDATE SET plan = excluded.plan, anchor = excluded.anchor,
    expires_at = excluded.expires_at, status = excluded.status
"""


def prepare(conn: Connection) -> None:
    """Create the ledger's tables where they are missing."""
    for statement in _SCHEMA:
        conn.execute(statement)


def account_of(rows: Rows) -> Account | None:
    """The account :data:`ACCOUNT` read, or ``None`` when the buyer has none."""
    return Account(*rows[0]) if rows else None


def rows_of(rows: Rows) -> dict[str, Row]:
    """The balances :data:`ROWS` read, by meter (a period without an end ends at infinity)."""
    return {meter: Row(start, math.inf if end is None else end, used) for meter, start, end, used in rows}
