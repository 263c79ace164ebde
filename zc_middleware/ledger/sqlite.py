"""``sqlite:///path.db``: the embedded default ledger, shared safely by every process on one host.

Why it is fast and safe:

* The common reservation is **one** ``UPDATE ... WHERE used + n <= limit
  RETURNING`` statement: SQLite runs it atomically, so check and debit cannot
  be split by another thread or process. The plan, liveness and expiry are
  copied onto each balance row so that this statement needs no join; the limit
  is the one this process's settings give that plan. Anything
  it cannot decide (first request, period rollover, exhausted, several meters)
  falls back to one ``BEGIN IMMEDIATE`` transaction that recomputes the rows
  with :func:`~zc_middleware.ledger.rules.evaluate`.
* Connections, WAL, checkpoints and fork safety are :class:`~zc_middleware._sqlite.Database`'s;
  this ledger checkpoints from a background thread, so no request pays for one.
* An outbox on the same file (:meth:`SQLiteLedger.joins`) inserts a request's
  batch events in the transaction that settles its hold: both commit or neither.
"""

from __future__ import annotations

import asyncio
import math
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, runtime_checkable

from .._cache import remember
from .._sqlite import BUSY, Database, SQLiteStore, write_transaction
from ..errors import ZcError
from .balance import Balance, make_balance
from .base import APPLIED_TTL, Hold, Ledger, check_buyer_id
from .entitlements import Change, Entitlement, Outcome, decide
from .rules import Account, Refusal, Row, evaluate, new_account

if TYPE_CHECKING:
    from ..outbox.base import Event

__all__ = ["SQLiteLedger"]

T = TypeVar("T")

_SCHEMA = """
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
_FAST = """
UPDATE zc_balances SET used = used + ?
WHERE buyer = ? AND meter = ? AND live = 1
  AND period_start <= ? AND (period_end IS NULL OR period_end > ?)
  AND used + ? <= {limit}
  AND (expires_at IS NULL OR expires_at > ?)
RETURNING period_start
"""
_ADJUST = "UPDATE zc_balances SET used = MAX(0, used + ?) WHERE buyer = ? AND meter = ? AND period_start = ?"
#: the ids of journaled writes applied (:meth:`SQLiteLedger.adjust_once`)
_APPLIED_TABLE = "CREATE TABLE IF NOT EXISTS zc_applied (id TEXT PRIMARY KEY, at REAL NOT NULL) WITHOUT ROWID"
_UPSERT_ROW = """
INSERT INTO zc_balances (buyer, meter, period_start, period_end, used, lim, live, expires_at, plan)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (buyer, meter) DO UPDATE SET
    period_start = excluded.period_start, period_end = excluded.period_end, used = excluded.used,
    lim = excluded.lim, live = excluded.live, expires_at = excluded.expires_at, plan = excluded.plan
"""
_UPSERT_ACCOUNT = """
INSERT INTO zc_accounts (buyer, plan, anchor, expires_at, status) VALUES (?, ?, ?, ?, ?)
ON CONFLICT (buyer) DO UPDATE SET plan = excluded.plan, anchor = excluded.anchor,
    expires_at = excluded.expires_at, status = excluded.status
"""
# Entitlement writes: the history is also where the last version applied is read from (versions only
# grow per buyer, so its primary key orders it), which leaves the older tables as they were.
_LAST_WRITE = """
SELECT max(version), EXISTS (SELECT 1 FROM zc_plan_history WHERE buyer = ? AND idem_key = ?)
FROM zc_plan_history WHERE buyer = ?
"""
_RECORD = "INSERT INTO zc_plan_history (buyer, version, idem_key, applied_at, kid, change) VALUES (?, ?, ?, ?, ?, ?)"
_HISTORY = "SELECT applied_at, kid, version, idem_key, change FROM zc_plan_history WHERE buyer = ? ORDER BY version"
# without a reset the rows keep what was used, and take the new plan's limit, status and end at once
_REFRESH_ROW = "UPDATE zc_balances SET lim = ?, live = ?, expires_at = ?, plan = ? WHERE buyer = ? AND meter = ?"


def _limit_literal(limit: int | None) -> str:
    return "9e18" if limit is None else str(int(limit))  # unlimited: past any sum of debits


def _end(value: float) -> float | None:
    return None if value == math.inf else value


@runtime_checkable
class _JoinableOutbox(Protocol):
    """What this ledger needs of an outbox to queue events in its own transaction: the outbox's
    :class:`Database` (to tell it is the same file) and an insert that runs on a given connection."""

    database: Database

    def insert_in(self, conn: sqlite3.Connection, events: Sequence[Event]) -> int: ...


class SQLiteLedger(SQLiteStore, Ledger):
    schemes = ("sqlite",)

    def __init__(
        self,
        url: str,
        *,
        busy_timeout: float = 5.0,
        checkpoint_interval: float = 1.0,
        adopt: bool = False,
        **kwargs: Any,
    ) -> None:
        """``adopt``: make the file at the path (a new one if there is none and ``create``) the ledger
        its processes use, whatever its identity record says: ``zc-middleware ledger-restore``."""
        super().__init__(url, **kwargs)
        self.database = Database(
            url, kind=self.kind, create=self.create, busy_timeout=busy_timeout, checkpoint_interval=checkpoint_interval
        )
        #: the last hold granted per (buyer, meter): the same debit in the same period is the same value
        self._holds: dict[tuple[str, str], Hold] = {}
        #: meter -> its fast debit, with this process's limits in it
        self._fast: dict[str, str] = {}
        self.database.open(self._prepare, adopt=adopt)

    def _prepare(self, conn: sqlite3.Connection) -> None:
        for statement in _SCHEMA.split(";"):
            if statement.strip():
                conn.execute(statement)
        columns = {name for _, name, *_ in conn.execute("PRAGMA table_info(zc_balances)")}
        if "plan" not in columns:  # a file from an older version: its rows get their plan when next written
            conn.execute("ALTER TABLE zc_balances ADD COLUMN plan TEXT")

    # -- the request path ------------------------------------------------
    # Each call is written once, on a given connection (``_*_on``): the sync method runs it on the
    # process's connection behind its lock; the async one first on the connection that never waits
    # (Database.attempt), and only if that would wait, in a thread as the sync method. An event loop
    # thus never sleeps in SQLite's busy handler, and the uncontended call costs no thread hop.
    def reserve(self, buyer: str, amounts: Mapping[str, int]) -> Hold | Refusal:
        database = self.database
        lock = database.lock
        lock.acquire()  # acquire/release rather than ``with``: measurably cheaper on this hot path
        try:
            conn = database.conn if database.conn is not None and database.gone is None else database.usable()
            return self._reserve_on(conn, buyer, amounts)
        finally:
            lock.release()

    async def areserve(self, buyer: str, amounts: Mapping[str, int]) -> Hold | Refusal:
        result = self.database.attempt(lambda conn: self._reserve_on(conn, buyer, amounts))
        if result is BUSY:
            return await asyncio.to_thread(self.reserve, buyer, amounts)
        return result

    def _reserve_on(self, conn: sqlite3.Connection, buyer: str, amounts: Mapping[str, int]) -> Hold | Refusal:
        now = self.clock()
        if len(amounts) == 1:
            for meter, amount in amounts.items():
                fast = self._fast.get(meter) or self._fast_debit(meter)
                rows = conn.execute(fast, (amount, buyer, meter, now, now, amount, now)).fetchall()  # all: commits
                if rows:
                    hit = rows[0]
                    try:
                        self.database.written()  # a debit in a deleted or replaced file is never granted
                    except ZcError:
                        conn.execute(_ADJUST, (-amount, buyer, meter, hit[0]))  # nor kept, if the file is back
                        raise
                    # the same debit in the same period is the same immutable hold: reuse the last one
                    key = (buyer, meter)
                    hold = self._holds.get(key)
                    if hold is None or hold.debits[0][1:] != (amount, hit[0]):
                        hold = remember(self._holds, key, Hold(buyer, ((meter, amount, hit[0]),)))
                    return hold
        return write_transaction(conn, lambda c: self._reserve_slow(c, buyer, amounts, now), self.database.written)

    def _fast_debit(self, meter: str) -> str:
        cases = " ".join(
            f"WHEN '{plan.replace(chr(39), chr(39) * 2)}' THEN {_limit_literal(self.plans.sql_limit(plan, meter))}"
            for plan in self.plans.configs
        )
        sql = self._fast[meter] = _FAST.format(limit=f"(CASE plan {cases} ELSE -1 END)" if cases else "-1")
        return sql

    def _reserve_slow(
        self, conn: sqlite3.Connection, buyer: str, amounts: Mapping[str, int], now: float
    ) -> Hold | Refusal:
        stored = self._load_account(conn, buyer)
        account = stored or new_account(self.plans, now)
        result = evaluate(self.plans, account, self._load_rows(conn, buyer), amounts, now)
        if isinstance(result, Refusal):
            return result  # nothing was written; the commit is empty
        assert account is not None
        if stored is None:
            conn.execute(_UPSERT_ACCOUNT, (buyer, account.plan, account.anchor, account.expires_at, account.status))
        conn.executemany(
            _UPSERT_ROW,
            [
                (
                    buyer,
                    m,
                    r.period_start,
                    _end(r.period_end),
                    r.used,
                    self.plans.sql_limit(account.plan, m),
                    1,
                    account.expires_at,
                    account.plan,
                )
                for m, r in result.items()
            ],
        )
        return Hold(buyer, tuple((m, amounts[m], r.period_start) for m, r in result.items()))

    @staticmethod
    def _changes(hold: Hold, used: Mapping[str, int]) -> list[tuple[int, str, str, float]]:
        return [
            (used.get(meter, 0) - amount, hold.buyer, meter, start)
            for meter, amount, start in hold.debits
            if used.get(meter, 0) != amount
        ]

    def adjust(self, hold: Hold, used: Mapping[str, int]) -> None:
        changes = self._changes(hold, used)
        if len(changes) == 1:
            self.database.run(_ADJUST, changes[0])
        elif changes:
            self.database.write(lambda conn: conn.executemany(_ADJUST, changes))

    async def aadjust(self, hold: Hold, used: Mapping[str, int]) -> None:
        changes = self._changes(hold, used)
        if changes:
            await self.database.awrite(lambda conn: conn.executemany(_ADJUST, changes))

    def adjust_once(self, entry_id: str, hold: Hold, used: Mapping[str, int]) -> bool:
        """:meth:`adjust` at most once per ``entry_id``: the id is recorded in ``zc_applied`` in the
        transaction that moves the hold, so a replay after a crash finds it and writes nothing. Ids
        are forgotten after :data:`~zc_middleware.ledger.base.APPLIED_TTL`."""
        changes = self._changes(hold, used)
        now = self.clock()

        def body(conn: sqlite3.Connection) -> bool:
            conn.execute(_APPLIED_TABLE)  # created on first use: only journaled writes need it
            before = conn.total_changes
            conn.execute("INSERT INTO zc_applied (id, at) VALUES (?, ?) ON CONFLICT (id) DO NOTHING", (entry_id, now))
            if conn.total_changes == before:
                return False
            conn.execute("DELETE FROM zc_applied WHERE at < ?", (now - APPLIED_TTL,))
            if changes:
                conn.executemany(_ADJUST, changes)
            return True

        return self.database.write(body)

    # -- settling together with the outbox -------------------------------------
    def _joined(self, outbox: object) -> _JoinableOutbox | None:
        if isinstance(outbox, _JoinableOutbox) and outbox.database.real_path == self.database.real_path:
            return outbox
        return None

    def joins(self, outbox: object) -> bool:
        """True for an outbox that queues into this ledger's own file: its events can then commit in
        the transaction that settles a hold."""
        return self._joined(outbox) is not None

    def _joint_body(
        self, hold: Hold, used: Mapping[str, int], outbox: object, events: Sequence[Event]
    ) -> Callable[[sqlite3.Connection], int]:
        joined = self._joined(outbox)
        if joined is None:
            raise ZcError("not_joined", f"the outbox does not use this ledger's file {self.path}")
        return self._with(hold, used, lambda conn: joined.insert_in(conn, events))

    def adjust_with_events(self, hold: Hold, used: Mapping[str, int], outbox: object, events: Sequence[Event]) -> int:
        return self.database.write(self._joint_body(hold, used, outbox, events))

    async def aadjust_with_events(
        self, hold: Hold, used: Mapping[str, int], outbox: object, events: Sequence[Event]
    ) -> int:
        return await self.database.awrite(self._joint_body(hold, used, outbox, events))

    def adjust_with(self, hold: Hold, used: Mapping[str, int], also: Callable[[sqlite3.Connection], T]) -> T:
        """:meth:`adjust`, and ``also`` on the same connection in the same transaction."""
        return self.database.write(self._with(hold, used, also))

    def _with(
        self, hold: Hold, used: Mapping[str, int], also: Callable[[sqlite3.Connection], T]
    ) -> Callable[[sqlite3.Connection], T]:
        changes = self._changes(hold, used)

        def body(conn: sqlite3.Connection) -> T:
            if changes:
                conn.executemany(_ADJUST, changes)
            return also(conn)

        return body

    # -- administration ----------------------------------------------------
    @staticmethod
    def _load_account(conn: sqlite3.Connection, buyer: str) -> Account | None:
        row = conn.execute(
            "SELECT plan, anchor, expires_at, status FROM zc_accounts WHERE buyer = ?", (buyer,)
        ).fetchone()
        return None if row is None else Account(*row)

    @staticmethod
    def _load_rows(conn: sqlite3.Connection, buyer: str) -> dict[str, Row]:
        return {
            meter: Row(start, math.inf if end is None else end, used)
            for meter, start, end, used in conn.execute(
                "SELECT meter, period_start, period_end, used FROM zc_balances WHERE buyer = ?", (buyer,)
            )
        }

    def _account(self, buyer: str) -> Account | None:
        return self.database.read(lambda conn: self._load_account(conn, buyer))

    def _store_account(self, buyer: str, account: Account, *, reset: bool) -> None:
        def store(conn: sqlite3.Connection) -> None:
            conn.execute(_UPSERT_ACCOUNT, (buyer, account.plan, account.anchor, account.expires_at, account.status))
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
        last, applied = conn.execute(_LAST_WRITE, (write.buyer, write.key, write.buyer)).fetchone()
        if applied:
            return "duplicate"
        if last is not None and write.version <= last:
            return "stale"
        buyer = write.buyer
        account, reset, change = decide(self._load_account(conn, buyer), write)
        conn.execute(_UPSERT_ACCOUNT, (buyer, account.plan, account.anchor, account.expires_at, account.status))
        if reset:
            conn.execute("DELETE FROM zc_balances WHERE buyer = ?", (buyer,))
        else:
            live = int(account.status == "active")
            meters = [m for (m,) in conn.execute("SELECT meter FROM zc_balances WHERE buyer = ?", (buyer,))]
            conn.executemany(
                _REFRESH_ROW,
                [
                    (self.plans.sql_limit(account.plan, m), live, account.expires_at, account.plan, buyer, m)
                    for m in meters
                ],
            )
        conn.execute(_RECORD, (buyer, write.version, write.key, now, write.kid, change))
        return "applied"

    def history(self, buyer: str) -> tuple[Change, ...]:
        rows = self.database.read(lambda conn: conn.execute(_HISTORY, (buyer,)).fetchall())
        return tuple(Change(*row) for row in rows)

    def balance(self, buyer: str) -> Balance:
        account, rows = self.database.read(lambda conn: (self._load_account(conn, buyer), self._load_rows(conn, buyer)))
        return make_balance(self.plans, buyer, account, rows, self.clock())
