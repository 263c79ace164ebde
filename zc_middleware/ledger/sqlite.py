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

This module holds the request path (reserve, adjust, settle with the outbox); the writes applied at
most once and the plan state are :mod:`._sqlite_plans`'s, the tables and statements :mod:`._sqlite_sql`'s.
"""

from __future__ import annotations

import asyncio
import math
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, runtime_checkable

from .._cache import remember
from .._sqlite import BUSY, Database, write_transaction
from ..errors import ZcError
from ._sqlite_plans import SQLitePlanState
from ._sqlite_sql import ADJUST, FAST, SCHEMA, UPSERT_ACCOUNT, UPSERT_ROW, adjustments, load_account, load_rows
from .base import Hold
from .rules import Refusal, evaluate, new_account

if TYPE_CHECKING:
    from ..outbox.base import Event

__all__ = ["SQLiteLedger"]

T = TypeVar("T")


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


class SQLiteLedger(SQLitePlanState):
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
        for statement in SCHEMA.split(";"):
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
                        conn.execute(ADJUST, (-amount, buyer, meter, hit[0]))  # nor kept, if the file is back
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
        sql = self._fast[meter] = FAST.format(limit=f"(CASE plan {cases} ELSE -1 END)" if cases else "-1")
        return sql

    def _reserve_slow(
        self, conn: sqlite3.Connection, buyer: str, amounts: Mapping[str, int], now: float
    ) -> Hold | Refusal:
        stored = load_account(conn, buyer)
        account = stored or new_account(self.plans, now)
        result = evaluate(self.plans, account, load_rows(conn, buyer), amounts, now)
        if isinstance(result, Refusal):
            return result  # nothing was written; the commit is empty
        assert account is not None
        if stored is None:
            conn.execute(UPSERT_ACCOUNT, (buyer, account.plan, account.anchor, account.expires_at, account.status))
        conn.executemany(
            UPSERT_ROW,
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

    def adjust(self, hold: Hold, used: Mapping[str, int]) -> None:
        changes = adjustments(hold, used)
        if len(changes) == 1:
            self.database.run(ADJUST, changes[0])
        elif changes:
            self.database.write(lambda conn: conn.executemany(ADJUST, changes))

    async def aadjust(self, hold: Hold, used: Mapping[str, int]) -> None:
        changes = adjustments(hold, used)
        if changes:
            await self.database.awrite(lambda conn: conn.executemany(ADJUST, changes))

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
        changes = adjustments(hold, used)

        def body(conn: sqlite3.Connection) -> T:
            if changes:
                conn.executemany(ADJUST, changes)
            return also(conn)

        return body
