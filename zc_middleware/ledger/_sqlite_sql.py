"""The SQLite ledger's tables and statements, and the reads and changes both its request path and its
plan-state writes run on a connection.

``zc_accounts`` holds each buyer's plan, ``zc_balances`` one row per (buyer, meter) with the plan, limit,
liveness and expiry copied on it, ``zc_plan_history`` the entitlement writes applied, and ``zc_applied``
(made on first use) the ids of the journaled writes applied.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Mapping

from .base import Hold
from .rules import Account, Row

__all__ = [
    "ADJUST",
    "APPLIED_TABLE",
    "FAST",
    "HISTORY",
    "LAST_WRITE",
    "RECORD",
    "REFRESH_ROW",
    "SCHEMA",
    "UPSERT_ACCOUNT",
    "UPSERT_ROW",
    "adjustments",
    "load_account",
    "load_rows",
]

SCHEMA = """
CREATE TABLE IF NOT EXISTS zc_accounts (
    buyer TEXT PRIMARY KEY, plan TEXT NOT NULL, anchor REAL NOT NULL,
    expires_at REAL, status TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS zc_balances (
    buyer TEXT NOT NULL, meter TEXT NOT NULL,
    period_start REAL NOT NULL, period_end REAL, used INTEGER NOT NULL,
    lim INTEGER, live INTEGER NOT NULL, expires_at REAL,
    PRIMARY KEY (buyer, meter)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS zc_plan_history (
    buyer TEXT NOT NULL, version INTEGER NOT NULL, idem_key TEXT NOT NULL,
    applied_at REAL NOT NULL, kid TEXT NOT NULL, change TEXT NOT NULL,
    PRIMARY KEY (buyer, version), UNIQUE (buyer, idem_key)
) WITHOUT ROWID;
"""
# Plain ``?`` placeholders, each value given once per use: Python 3.12.0-3.12.3 warn that numbered
# ``?NNN`` placeholders bound from a sequence are deprecated (they are not; the warning was withdrawn).
# The limit is this process's: a CASE over the plans of its settings (one statement per meter) on the
# plan the row was debited under, so that a changed limit applies at the next check of every process
# started with it, whatever limit another process copied onto the row (``lim``, kept for older
# versions). A row without a plan (written by an older version), or of a plan these settings do not
# declare, gets -1: no fast debit, and the slow path decides (and writes the plan).
FAST = """
UPDATE zc_balances SET used = used + ?
WHERE buyer = ? AND meter = ? AND live = 1
  AND period_start <= ? AND (period_end IS NULL OR period_end > ?)
  AND used + ? <= {limit}
  AND (expires_at IS NULL OR expires_at > ?)
RETURNING period_start
"""
ADJUST = "UPDATE zc_balances SET used = MAX(0, used + ?) WHERE buyer = ? AND meter = ? AND period_start = ?"
#: the ids of journaled writes applied (:meth:`SQLiteLedger.adjust_once`)
APPLIED_TABLE = "CREATE TABLE IF NOT EXISTS zc_applied (id TEXT PRIMARY KEY, at REAL NOT NULL) WITHOUT ROWID"
UPSERT_ROW = """
INSERT INTO zc_balances (buyer, meter, period_start, period_end, used, lim, live, expires_at, plan)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (buyer, meter) DO UPDATE SET
    period_start = excluded.period_start, period_end = excluded.period_end, used = excluded.used,
    lim = excluded.lim, live = excluded.live, expires_at = excluded.expires_at, plan = excluded.plan
"""
UPSERT_ACCOUNT = """
INSERT INTO zc_accounts (buyer, plan, anchor, expires_at, status) VALUES (?, ?, ?, ?, ?)
ON CONFLICT (buyer) DO UPDATE SET plan = excluded.plan, anchor = excluded.anchor,
    expires_at = excluded.expires_at, status = excluded.status
"""
# Entitlement writes: the history is also where the last version applied is read from (versions only
# grow per buyer, so its primary key orders it), which leaves the older tables as they were.
LAST_WRITE = """
SELECT max(version), EXISTS (SELECT 1 FROM zc_plan_history WHERE buyer = ? AND idem_key = ?)
FROM zc_plan_history WHERE buyer = ?
"""
RECORD = "INSERT INTO zc_plan_history (buyer, version, idem_key, applied_at, kid, change) VALUES (?, ?, ?, ?, ?, ?)"
HISTORY = "SELECT applied_at, kid, version, idem_key, change FROM zc_plan_history WHERE buyer = ? ORDER BY version"
# without a reset the rows keep what was used, and take the new plan's limit, status and end at once
REFRESH_ROW = "UPDATE zc_balances SET lim = ?, live = ?, expires_at = ?, plan = ? WHERE buyer = ? AND meter = ?"


def load_account(conn: sqlite3.Connection, buyer: str) -> Account | None:
    row = conn.execute("SELECT plan, anchor, expires_at, status FROM zc_accounts WHERE buyer = ?", (buyer,)).fetchone()
    return None if row is None else Account(*row)


def load_rows(conn: sqlite3.Connection, buyer: str) -> dict[str, Row]:
    return {
        meter: Row(start, math.inf if end is None else end, used)
        for meter, start, end, used in conn.execute(
            "SELECT meter, period_start, period_end, used FROM zc_balances WHERE buyer = ?", (buyer,)
        )
    }


def adjustments(hold: Hold, used: Mapping[str, int]) -> list[tuple[int, str, str, float]]:
    """The :data:`ADJUST` parameters that move ``hold``'s debits to ``used``: one per meter that changes."""
    return [
        (used.get(meter, 0) - amount, hold.buyer, meter, start)
        for meter, amount, start in hold.debits
        if used.get(meter, 0) != amount
    ]
