"""The SQLite ledger's writes applied at most once, and its plan state: entitlement writes (by version
and key, kept in ``zc_plan_history``), journaled adjusts (by entry id, in ``zc_applied``), plans set
by hand, the history and the balance. The request path is :class:`~zc_middleware.ledger.sqlite.SQLiteLedger`'s.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping

from .._sqlite import SQLiteStore
from ._sqlite_sql import (
    ADJUST,
    APPLIED_TABLE,
    HISTORY,
    LAST_WRITE,
    RECORD,
    REFRESH_ROW,
    UPSERT_ACCOUNT,
    adjustments,
    load_account,
    load_rows,
)
from .balance import Balance, make_balance
from .base import APPLIED_TTL, Hold, Ledger, check_buyer_id
from .entitlements import Change, Entitlement, Outcome, decide
from .rules import Account

__all__ = ["SQLitePlanState"]


class SQLitePlanState(SQLiteStore, Ledger):
    """What :class:`~zc_middleware.ledger.sqlite.SQLiteLedger` writes besides its request path, each in
    one transaction of its :class:`~zc_middleware._sqlite.Database`."""

    def adjust_once(self, entry_id: str, hold: Hold, used: Mapping[str, int]) -> bool:
        """:meth:`adjust` at most once per ``entry_id``: the id is recorded in ``zc_applied`` in the
        transaction that moves the hold, so a replay after a crash finds it and writes nothing. Ids
        are forgotten after :data:`~zc_middleware.ledger.base.APPLIED_TTL`."""
        changes = adjustments(hold, used)
        now = self.clock()

        def body(conn: sqlite3.Connection) -> bool:
            conn.execute(APPLIED_TABLE)  # created on first use: only journaled writes need it
            before = conn.total_changes
            conn.execute("INSERT INTO zc_applied (id, at) VALUES (?, ?) ON CONFLICT (id) DO NOTHING", (entry_id, now))
            if conn.total_changes == before:
                return False
            conn.execute("DELETE FROM zc_applied WHERE at < ?", (now - APPLIED_TTL,))
            if changes:
                conn.executemany(ADJUST, changes)
            return True

        return self.database.write(body)

    # -- administration ----------------------------------------------------
    def _account(self, buyer: str) -> Account | None:
        return self.database.read(lambda conn: load_account(conn, buyer))

    def _store_account(self, buyer: str, account: Account, *, reset: bool) -> None:
        def store(conn: sqlite3.Connection) -> None:
            conn.execute(UPSERT_ACCOUNT, (buyer, account.plan, account.anchor, account.expires_at, account.status))
            if reset:
                conn.execute("DELETE FROM zc_balances WHERE buyer = ?", (buyer,))
            else:
                conn.execute(
                    "UPDATE zc_balances SET live = ?, expires_at = ? WHERE buyer = ?",
                    (int(account.status == "active"), account.expires_at, buyer),
                )

        self.database.write(store)

    # -- plan state pushed by ZeroClick -------------------------------------------------
    def _apply_entitlement(self, write: Entitlement, now: float) -> Outcome:
        return self.database.write(lambda conn: self._entitle(conn, write, now))

    async def aapply_entitlement(self, write: Entitlement) -> Outcome:
        """:meth:`apply_entitlement` from an event loop: inline when no lock is in the way, else in a thread."""
        check_buyer_id(write.buyer)
        self.plans.check(write.plan)
        now = self.clock()
        return await self.database.awrite(lambda conn: self._entitle(conn, write, now))

    def _entitle(self, conn: sqlite3.Connection, write: Entitlement, now: float) -> Outcome:
        """Check, decide and store one write in the caller's ``BEGIN IMMEDIATE`` transaction."""
        last, applied = conn.execute(LAST_WRITE, (write.buyer, write.key, write.buyer)).fetchone()
        if applied:
            return "duplicate"
        if last is not None and write.version <= last:
            return "stale"
        buyer = write.buyer
        account, reset, change = decide(load_account(conn, buyer), write)
        conn.execute(UPSERT_ACCOUNT, (buyer, account.plan, account.anchor, account.expires_at, account.status))
        if reset:
            conn.execute("DELETE FROM zc_balances WHERE buyer = ?", (buyer,))
        else:
            live = int(account.status == "active")
            meters = [m for (m,) in conn.execute("SELECT meter FROM zc_balances WHERE buyer = ?", (buyer,))]
            conn.executemany(
                REFRESH_ROW,
                [
                    (self.plans.sql_limit(account.plan, m), live, account.expires_at, account.plan, buyer, m)
                    for m in meters
                ],
            )
        conn.execute(RECORD, (buyer, write.version, write.key, now, write.kid, change))
        return "applied"

    def history(self, buyer: str) -> tuple[Change, ...]:
        rows = self.database.read(lambda conn: conn.execute(HISTORY, (buyer,)).fetchall())
        return tuple(Change(*row) for row in rows)

    def balance(self, buyer: str) -> Balance:
        account, rows = self.database.read(lambda conn: (load_account(conn, buyer), load_rows(conn, buyer)))
        return make_balance(self.plans, buyer, account, rows, self.clock())
