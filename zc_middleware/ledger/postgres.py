"""``postgresql://user@host:5432/db``: a ledger many hosts share, in the seller's own PostgreSQL database.

Why it is fast and safe:

* The common reservation is **one** ``UPDATE ... WHERE used + n <= limit
  RETURNING`` statement. PostgreSQL locks the row it updates and re-checks the
  condition against the latest committed version, so check and debit cannot
  be split by another process. The limits come from this process's settings at
  every call (the plan's limits are passed as parameters; nothing copies them
  into the table), joined with the buyer's account for plan, status and expiry.
* Anything it cannot decide (first request, period rollover, exhausted,
  several meters) falls back to one transaction that locks the buyer's rows
  (``SELECT ... FOR UPDATE``, after a per-buyer advisory lock so that two first
  requests cannot both create the account) and decides with
  :func:`~zc_middleware.ledger.rules.evaluate`, like every other ledger.
* A settle is one ``UPDATE``. Async servers use an async pool
  (:meth:`PostgresLedger.areserve`), with no thread hop.
* An outbox in the same database (:meth:`PostgresLedger.joins`) inserts a
  request's batch events in the transaction that settles its hold.
* An entitlement write is checked, decided and stored in one transaction under the buyer's
  advisory lock; ``zeroclick_plan_history`` keeps every write applied and gives the last version
  (:mod:`._postgres_once`, with journaled settles; the tables are in :mod:`._postgres_tables`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from .._postgres import Connection, Database, Flow, PostgresStore, Rows, masked
from ..errors import ConfigError, ZcError
from . import _postgres_once
from ._postgres_tables import ACCOUNT, LOCK_CLASS, ROWS, UPSERT_ACCOUNT, account_of, prepare, rows_of
from .balance import Balance, make_balance
from .base import Hold, Ledger, check_buyer_id
from .entitlements import Change, Entitlement, Outcome
from .rules import Account, Refusal, Row, evaluate, new_account

if TYPE_CHECKING:
    from ..outbox.base import Event

__all__ = ["PostgresLedger"]

# %(limits)s is {"plan": limit-or-null, ...} for the meter, from this process's settings: a plan
# no longer in settings matches no key, so it is never served from here
_FAST = """
UPDATE zeroclick_balances AS b SET used = b.used + %(n)s
FROM zeroclick_accounts AS a
WHERE b.buyer = %(buyer)s AND b.meter = %(meter)s AND a.buyer = b.buyer AND %(limits)s::jsonb ? a.plan
  AND a.status = 'active' AND a.anchor <= %(now)s AND (a.expires_at IS NULL OR a.expires_at > %(now)s)
  AND b.period_start <= %(now)s AND (b.period_end IS NULL OR b.period_end > %(now)s)
  AND (b.used + %(n)s <= (%(limits)s::jsonb ->> a.plan)::bigint OR %(limits)s::jsonb -> a.plan = 'null')
RETURNING b.period_start
"""
_ADJUST_ONE = (
    "UPDATE zeroclick_balances SET used = GREATEST(0, used + %s) WHERE buyer = %s AND meter = %s AND period_start = %s"
)
_ADJUST = """
UPDATE zeroclick_balances AS b SET used = GREATEST(0, b.used + c.delta)
FROM unnest(%s::text[], %s::bigint[], %s::float8[]) AS c (meter, delta, start)
WHERE b.buyer = %s AND b.meter = c.meter AND b.period_start = c.start
"""
_PEEK = """
SELECT a.plan, a.anchor, a.expires_at, a.status, b.meter, b.period_start, b.period_end, b.used
FROM zeroclick_accounts AS a LEFT JOIN zeroclick_balances AS b ON b.buyer = a.buyer WHERE a.buyer = %s
"""
_UPSERT_ROWS = """
INSERT INTO zeroclick_balances (buyer, meter, period_start, period_end, used)
SELECT %s, * FROM unnest(%s::text[], %s::float8[], %s::float8[], %s::bigint[])
ON CONFLICT (buyer, meter) DO UPDATE SET
    period_start = excluded.period_start, period_end = excluded.period_end, used = excluded.used
"""


@runtime_checkable
class _JoinableOutbox(Protocol):
    """What this ledger needs of an outbox to queue events in its own transaction: the outbox's
    database (to tell it is the same one) and its insert as statements (a :data:`Flow`)."""

    database: object

    def insert_flow(self, events: Sequence[Event]) -> Flow[int]: ...


class PostgresLedger(PostgresStore, Ledger):
    schemes = ("postgresql", "postgres")

    def __init__(self, url: str, *, timeout: float = 0.5, max_connections: int = 10, **kwargs: Any) -> None:
        super().__init__(url, timeout=timeout, **kwargs)
        self.database = Database(url, kind=self.kind, timeout=timeout, max_size=max_connections)
        #: meter -> its limit in each plan, as the fast statement takes them (JSON; ``null``: unlimited)
        self._limits: dict[str, str] = {}
        self.database.open(self._prepare)

    def _prepare(self, conn: Connection) -> None:
        if not self.create and conn.execute("SELECT to_regclass('zeroclick_accounts')").fetchone() == (None,):
            # an admin command pointed at the wrong database must not start a new, empty ledger there
            raise ConfigError("no_ledger", f"no ledger in {masked(self.url)}; check settings.ledger")
        prepare(conn)

    # -- the request path ------------------------------------------------
    def _fast(self, buyer: str, amounts: Mapping[str, int], now: float) -> dict[str, object] | None:
        """The one-statement reservation's parameters, or ``None`` when it cannot apply."""
        if len(amounts) != 1:
            return None
        ((meter, amount),) = amounts.items()
        limits = self._limits.get(meter)
        if limits is None:
            limits = self._limits[meter] = json.dumps({p: self.plans.sql_limit(p, meter) for p in self.plans.configs})
        return {"n": amount, "limits": limits, "buyer": buyer, "meter": meter, "now": now}

    @staticmethod
    def _hit(buyer: str, amounts: Mapping[str, int], rows: Rows) -> Hold:
        ((meter, amount),) = amounts.items()
        return Hold(buyer, ((meter, amount, rows[0][0]),))

    def reserve(self, buyer: str, amounts: Mapping[str, int]) -> Hold | Refusal:
        now = self.clock()
        fast = self._fast(buyer, amounts, now)
        if fast is not None:
            if rows := self.database.run(_FAST, fast):
                return self._hit(buyer, amounts, rows)
            if refusal := self._refusal(amounts, now, self.database.run(_PEEK, (buyer,))):
                return refusal
        return self.database.play(self._reserve_slow(buyer, amounts, now))

    async def areserve(self, buyer: str, amounts: Mapping[str, int]) -> Hold | Refusal:
        now = self.clock()
        fast = self._fast(buyer, amounts, now)
        if fast is not None:
            if rows := await self.database.arun(_FAST, fast):
                return self._hit(buyer, amounts, rows)
            if refusal := self._refusal(amounts, now, await self.database.arun(_PEEK, (buyer,))):
                return refusal
        return await self.database.aplay(self._reserve_slow(buyer, amounts, now))

    def _refusal(self, amounts: Mapping[str, int], now: float, peek: Rows) -> Refusal | None:
        """A refusal :func:`evaluate` reads off one committed snapshot of the buyer (a plan that is
        used up stays refused without taking a lock), or ``None``: the locked slow path decides."""
        if not peek:
            return None  # no account yet: the slow path creates it
        rows = rows_of([row[4:] for row in peek if row[4] is not None])
        result = evaluate(self.plans, Account(*peek[0][:4]), rows, amounts, now)
        return result if isinstance(result, Refusal) else None

    def _reserve_slow(self, buyer: str, amounts: Mapping[str, int], now: float) -> Flow[Hold | Refusal]:
        # one buyer's slow paths queue here: two first requests cannot both create the account
        # (the two-key form, under a class of its own: never the same lock as a seller's one-key locks)
        yield "SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (LOCK_CLASS, buyer)
        stored = account_of((yield ACCOUNT + " FOR UPDATE", (buyer,)))
        account = stored or new_account(self.plans, now)
        rows = rows_of((yield ROWS + " ORDER BY meter FOR UPDATE", (buyer,)))  # one lock order: no deadlock
        result = evaluate(self.plans, account, rows, amounts, now)
        if isinstance(result, Refusal):
            return result  # nothing was written
        assert account is not None
        if stored is None:
            yield UPSERT_ACCOUNT, (buyer, account.plan, account.anchor, account.expires_at, account.status)
        meters = list(result)
        starts = [result[m].period_start for m in meters]
        ends = [None if result[m].period_end == math.inf else result[m].period_end for m in meters]
        yield _UPSERT_ROWS, (buyer, meters, starts, ends, [result[m].used for m in meters])
        return Hold(buyer, tuple((m, amounts[m], result[m].period_start) for m in meters))

    @staticmethod
    def _settle(hold: Hold, used: Mapping[str, int]) -> tuple[str, tuple[object, ...]] | None:
        """The one statement that moves ``hold`` to ``used``, or ``None`` when nothing changes."""
        # by meter, the order the slow path locks rows in
        changes = sorted(
            (m, used.get(m, 0) - amount, start) for m, amount, start in hold.debits if used.get(m, 0) != amount
        )
        if not changes:
            return None
        if len(changes) == 1:
            meter, delta, start = changes[0]
            return _ADJUST_ONE, (delta, hold.buyer, meter, start)
        meters, deltas, starts = (list(column) for column in zip(*changes, strict=True))
        return _ADJUST, (meters, deltas, starts, hold.buyer)

    def adjust(self, hold: Hold, used: Mapping[str, int]) -> None:
        statement = self._settle(hold, used)
        if statement is not None:
            self.database.run(*statement)

    async def aadjust(self, hold: Hold, used: Mapping[str, int]) -> None:
        statement = self._settle(hold, used)
        if statement is not None:
            await self.database.arun(*statement)

    def adjust_once(self, entry_id: str, hold: Hold, used: Mapping[str, int]) -> bool:
        """:meth:`adjust` at most once per ``entry_id``: the id is recorded in ``zeroclick_applied``
        in the transaction that moves the hold, so a replay after a crash writes nothing. Ids are
        forgotten after :data:`~zc_middleware.ledger.base.APPLIED_TTL`."""
        return self.database.play(_postgres_once.adjust_once(entry_id, self._settle(hold, used), self.clock()))

    # -- settling together with the outbox -------------------------------------
    def _joined(self, outbox: object) -> _JoinableOutbox | None:
        if (
            isinstance(outbox, _JoinableOutbox)
            and isinstance(outbox.database, Database)
            and outbox.database.identity == self.database.identity
        ):
            return outbox
        return None

    def joins(self, outbox: object) -> bool:
        """True for an outbox in this ledger's own database: its events can then commit in the
        transaction that settles a hold."""
        return self._joined(outbox) is not None

    def adjust_with_events(self, hold: Hold, used: Mapping[str, int], outbox: object, events: Sequence[Event]) -> int:
        return self.database.play(self._joint(hold, used, outbox, events))

    async def aadjust_with_events(
        self, hold: Hold, used: Mapping[str, int], outbox: object, events: Sequence[Event]
    ) -> int:
        """:meth:`adjust_with_events` on the async pool: an ASGI server never waits for it on its loop."""
        return await self.database.aplay(self._joint(hold, used, outbox, events))

    def _joint(self, hold: Hold, used: Mapping[str, int], outbox: object, events: Sequence[Event]) -> Flow[int]:
        """The settle's statement, then the outbox's insert: one transaction's statements."""
        joined = self._joined(outbox)
        if joined is None:
            raise ZcError("not_joined", "the outbox does not use this ledger's database")
        statement = self._settle(hold, used)

        def flow() -> Flow[int]:
            if statement is not None:
                yield statement
            return (yield from joined.insert_flow(events))

        return flow()

    # -- administration ----------------------------------------------------
    def _account(self, buyer: str) -> Account | None:
        return account_of(self.database.run(ACCOUNT, (buyer,)))

    def _store_account(self, buyer: str, account: Account, *, reset: bool) -> None:
        def store() -> Flow[None]:
            yield UPSERT_ACCOUNT, (buyer, account.plan, account.anchor, account.expires_at, account.status)
            if reset:
                yield "DELETE FROM zeroclick_balances WHERE buyer = %s", (buyer,)

        self.database.play(store())

    # -- plan state pushed by ZeroClick -------------------------------------------------
    def _apply_entitlement(self, write: Entitlement, now: float) -> Outcome:
        return self.database.play(_postgres_once.entitle(write, now))

    async def aapply_entitlement(self, write: Entitlement) -> Outcome:
        """:meth:`apply_entitlement` on the async pool."""
        check_buyer_id(write.buyer)
        self.plans.check(write.plan)
        return await self.database.aplay(_postgres_once.entitle(write, self.clock()))

    def history(self, buyer: str) -> tuple[Change, ...]:
        return _postgres_once.changes_of(self.database.run(_postgres_once.HISTORY, (buyer,)))

    def balance(self, buyer: str) -> Balance:
        def read() -> Flow[tuple[Account | None, dict[str, Row]]]:
            return account_of((yield ACCOUNT, (buyer,))), rows_of((yield ROWS, (buyer,)))

        account, rows = self.database.play(read())
        return make_balance(self.plans, buyer, account, rows, self.clock())
