"""``sqlite:///path.db``: the embedded default, shared safely by every process on one host.

Why it is fast and safe:

* The common reservation is **one** ``UPDATE ... WHERE used + n <= lim
  RETURNING`` statement: SQLite runs it atomically, so check and debit cannot
  be split by another thread or process. Plan limits, liveness and expiry are
  copied onto each balance row so that this statement needs no join. Anything
  it cannot decide (first request, period rollover, exhausted, several meters)
  falls back to one ``BEGIN IMMEDIATE`` transaction that recomputes the rows
  with :func:`~zc_middleware.ledger.rules.evaluate`.
* WAL with ``synchronous=NORMAL`` commits without fsync; automatic
  checkpoints are switched off so no request ever pays for one, and a daemon
  thread checkpoints in the background. A process crash loses nothing
  committed; an OS crash may lose the last commits (as with any NORMAL WAL).
* One connection per process, behind a lock: threads queue on the lock
  instead of sleeping in SQLite's busy handler. After ``fork`` the child opens
  its own connection.
"""

from __future__ import annotations

import logging
import math
import os
import sqlite3
import threading
import weakref
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from ..errors import ConfigError
from .balance import Balance, make_balance
from .base import Hold, Ledger
from .rules import Account, Refusal, Row, evaluate, new_account

__all__ = ["SQLiteLedger", "sqlite_path", "write_transaction"]

log = logging.getLogger("zc_middleware")
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
"""
# Plain ``?`` placeholders, each value given once per use: Python 3.12.0-3.12.3 warn that numbered
# ``?NNN`` placeholders bound from a sequence are deprecated (they are not; the warning was withdrawn).
_FAST = """
UPDATE zc_balances SET used = used + ?
WHERE buyer = ? AND meter = ? AND live = 1
  AND period_start <= ? AND (period_end IS NULL OR period_end > ?)
  AND (lim IS NULL OR used + ? <= lim)
  AND (expires_at IS NULL OR expires_at > ?)
RETURNING period_start
"""
_ADJUST = "UPDATE zc_balances SET used = MAX(0, used + ?) WHERE buyer = ? AND meter = ? AND period_start = ?"
_UPSERT_ROW = """
INSERT INTO zc_balances (buyer, meter, period_start, period_end, used, lim, live, expires_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (buyer, meter) DO UPDATE SET
    period_start = excluded.period_start, period_end = excluded.period_end, used = excluded.used,
    lim = excluded.lim, live = excluded.live, expires_at = excluded.expires_at
"""
_UPSERT_ACCOUNT = """
INSERT INTO zc_accounts (buyer, plan, anchor, expires_at, status) VALUES (?, ?, ?, ?, ?)
ON CONFLICT (buyer) DO UPDATE SET plan = excluded.plan, anchor = excluded.anchor,
    expires_at = excluded.expires_at, status = excluded.status
"""

_instances: weakref.WeakSet[SQLiteLedger] = weakref.WeakSet()


def _after_fork() -> None:
    for ledger in list(_instances):
        ledger._forget_process_state()


os.register_at_fork(after_in_child=_after_fork)


def sqlite_path(url: str) -> str:
    """``sqlite:///rel.db`` -> ``rel.db``; ``sqlite:////abs/x.db`` -> ``/abs/x.db``."""
    if not url.startswith("sqlite:///") or len(url) == len("sqlite:///"):
        raise ConfigError("invalid_ledger_url", f"{url!r}: write sqlite:///relative.db or sqlite:////absolute.db")
    path = url[len("sqlite:///") :]
    if path == ":memory:":
        raise ConfigError("invalid_ledger_url", "sqlite:///:memory: is private to one connection; use memory://")
    return path


def write_transaction(conn: sqlite3.Connection, body: Callable[[sqlite3.Connection], T]) -> T:
    """Run ``body`` in one ``BEGIN IMMEDIATE`` transaction on ``conn``, rolled back if it raises.

    IMMEDIATE takes the write lock up front, so a read inside ``body`` cannot be
    invalidated by another process before its write (no SQLITE_BUSY upgrade deadlock).
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = body(conn)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return result


def _end(value: float) -> float | None:
    return None if value == math.inf else value


class SQLiteLedger(Ledger):
    def __init__(
        self,
        url: str,
        *,
        busy_timeout: float = 5.0,
        checkpoint_interval: float = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.path = sqlite_path(url)
        self.busy_timeout = busy_timeout
        self.checkpoint_interval = checkpoint_interval
        self._forget_process_state()
        _instances.add(self)
        self._write(self._prepare)

    # -- connection handling ---------------------------------------------
    def _forget_process_state(self) -> None:
        self._lock = threading.Lock()
        self._holds: dict[tuple[str, str], Hold] = {}
        self._conn: sqlite3.Connection | None = None
        self._stop = threading.Event()

    def _open(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL").fetchall()
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA wal_autocheckpoint=0")
        return conn

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = self._open()
            if self.checkpoint_interval > 0:
                threading.Thread(
                    target=self._checkpoint_loop, args=(self._stop,), daemon=True, name="zc-sqlite-checkpoint"
                ).start()
        return self._conn

    def _checkpoint_loop(self, stop: threading.Event) -> None:
        conn = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None)
        try:
            while not stop.wait(self.checkpoint_interval):
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error as exc:  # busy or gone: the next round tries again
                    log.debug("sqlite checkpoint skipped: %s", exc)
        finally:
            conn.close()

    def _write(self, body: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``body`` in one ``BEGIN IMMEDIATE`` transaction (rolled back if it raises)."""
        with self._lock:
            return write_transaction(self._db(), body)

    def _prepare(self, conn: sqlite3.Connection) -> None:
        for statement in _SCHEMA.split(";"):
            if statement.strip():
                conn.execute(statement)
        # Settings may have changed since the rows were written: refresh the copied limits.
        pairs = conn.execute(
            "SELECT DISTINCT a.plan, b.meter FROM zc_balances b JOIN zc_accounts a USING (buyer)"
        ).fetchall()
        for plan, meter in pairs:
            known = plan in self.plans.configs
            lim = self.plans.sql_limit(plan, meter) if known else 0
            conn.execute(
                "UPDATE zc_balances SET lim = ?, live = CASE WHEN ? THEN live ELSE 0 END "
                "WHERE meter = ? AND buyer IN (SELECT buyer FROM zc_accounts WHERE plan = ?)",
                (lim, known, meter, plan),
            )

    def close(self) -> None:
        self._stop.set()
        with self._lock:
            if self._conn is not None:
                try:
                    self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error:
                    pass
                self._conn.close()
                self._conn = None
        _instances.discard(self)

    # -- the request path ------------------------------------------------
    def reserve(self, buyer: str, amounts: Mapping[str, int]) -> Hold | Refusal:
        now = self.clock()
        if len(amounts) == 1:
            for meter, amount in amounts.items():
                lock = self._lock
                lock.acquire()  # acquire/release rather than ``with``: measurably cheaper on this hot path
                try:
                    conn = self._conn if self._conn is not None else self._db()
                    params = (amount, buyer, meter, now, now, amount, now)
                    rows = conn.execute(_FAST, params).fetchall()  # all: completes the commit
                finally:
                    lock.release()
                if rows:
                    hit = rows[0]
                    # the same debit in the same period is the same immutable hold: reuse the last one
                    key = (buyer, meter)
                    hold = self._holds.get(key)
                    if hold is None or hold.debits[0][1:] != (amount, hit[0]):
                        if len(self._holds) >= 4096:
                            self._holds.clear()
                        hold = self._holds[key] = Hold(buyer, ((meter, amount, hit[0]),))
                    return hold
        return self._write(lambda conn: self._reserve_slow(conn, buyer, amounts, now))

    def _reserve_slow(
        self, conn: sqlite3.Connection, buyer: str, amounts: Mapping[str, int], now: float
    ) -> Hold | Refusal:
        stored = self._load_account(conn, buyer)
        account = stored or new_account(self.plans, now)
        rows = {
            meter: Row(start, math.inf if end is None else end, used)
            for meter, start, end, used in conn.execute(
                "SELECT meter, period_start, period_end, used FROM zc_balances WHERE buyer = ?", (buyer,)
            )
        }
        result = evaluate(self.plans, account, rows, amounts, now)
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

    def adjust_with(self, hold: Hold, used: Mapping[str, int], also: Callable[[sqlite3.Connection], T]) -> T:
        """:meth:`adjust`, and ``also`` in the same transaction (the outbox's events when it shares this file)."""
        changes = self._changes(hold, used)

        def body(conn: sqlite3.Connection) -> T:
            if changes:
                conn.executemany(_ADJUST, changes)
            return also(conn)

        return self._write(body)

    def adjust(self, hold: Hold, used: Mapping[str, int]) -> None:
        changes = self._changes(hold, used)
        if len(changes) == 1:
            with self._lock:
                self._db().execute(_ADJUST, changes[0])
        elif changes:
            self._write(lambda conn: conn.executemany(_ADJUST, changes))

    # -- administration ----------------------------------------------------
    @staticmethod
    def _load_account(conn: sqlite3.Connection, buyer: str) -> Account | None:
        row = conn.execute(
            "SELECT plan, anchor, expires_at, status FROM zc_accounts WHERE buyer = ?", (buyer,)
        ).fetchone()
        return None if row is None else Account(*row)

    def _account(self, buyer: str) -> Account | None:
        with self._lock:
            return self._load_account(self._db(), buyer)

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

        self._write(store)

    def balance(self, buyer: str) -> Balance:
        def read(conn: sqlite3.Connection) -> tuple[Account | None, dict[str, Row]]:
            rows = {
                meter: Row(start, math.inf if end is None else end, used)
                for meter, start, end, used in conn.execute(
                    "SELECT meter, period_start, period_end, used FROM zc_balances WHERE buyer = ?", (buyer,)
                )
            }
            return self._load_account(conn, buyer), rows

        with self._lock:
            conn = self._db()
            conn.execute("BEGIN")
            try:
                account, rows = read(conn)
            finally:
                conn.execute("COMMIT")
        return make_balance(self.plans, buyer, account, rows, self.clock())
