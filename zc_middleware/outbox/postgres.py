"""``postgresql://user@host:5432/db``: the durable outbox in a PostgreSQL database, shared by every host.

* ``add`` commits before it returns. When the ledger lives in the same
  database, the ledger calls :meth:`PostgresOutbox.insert_in` inside the
  transaction that settles a hold, so a request's debit and its batch events
  commit together.
* A sender claims rows with **one** ``UPDATE ... WHERE id IN (SELECT ... FOR
  UPDATE SKIP LOCKED) RETURNING``: senders on other hosts skip the rows one is
  claiming instead of waiting for it, and never claim the same row; a killed
  sender's rows come back when its lease expires.
* Delivered rows are kept (state ``sent``) so a re-report of a delivered key is
  still recognised as a no-op; :meth:`PostgresOutbox.prune` forgets old ones.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from .._postgres import Connection, Database, Flow, PostgresStore, drive, masked
from ..errors import ConfigError
from .base import DeadLetter, Event, Leased, Outbox, OutboxStatus, conflict, log_conflict

__all__ = ["PostgresOutbox"]

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS zeroclick_outbox (
    id BIGSERIAL PRIMARY KEY, key TEXT NOT NULL UNIQUE,
    user_id TEXT NOT NULL, meter TEXT NOT NULL, quantity BIGINT NOT NULL, ts TEXT NOT NULL, body TEXT NOT NULL,
    state SMALLINT NOT NULL DEFAULT 0, created DOUBLE PRECISION NOT NULL,
    next_at DOUBLE PRECISION NOT NULL DEFAULT 0, attempts INTEGER NOT NULL DEFAULT 0,
    owner TEXT, lease_until DOUBLE PRECISION, reason TEXT, done_at DOUBLE PRECISION)""",
    "CREATE INDEX IF NOT EXISTS zeroclick_outbox_pending ON zeroclick_outbox (id) WHERE state = 0",
    "CREATE INDEX IF NOT EXISTS zeroclick_outbox_done ON zeroclick_outbox (done_at) WHERE state = 1",
    """CREATE TABLE IF NOT EXISTS zeroclick_outbox_conflicts (
    id BIGSERIAL PRIMARY KEY, key TEXT NOT NULL, body TEXT NOT NULL, at DOUBLE PRECISION NOT NULL)""",
)
# WITH ORDINALITY ... ORDER BY: ids follow the order of the events, which is the order they are sent in
_INSERT = """
INSERT INTO zeroclick_outbox (key, user_id, meter, quantity, ts, body, created)
SELECT key, user_id, meter, quantity, ts, body, %s
FROM unnest(%s::text[], %s::text[], %s::text[], %s::bigint[], %s::text[], %s::text[])
    WITH ORDINALITY AS e (key, user_id, meter, quantity, ts, body, n)
ORDER BY n
ON CONFLICT (key) DO NOTHING
RETURNING key
"""
_LEASE = """
UPDATE zeroclick_outbox SET owner = %(owner)s, lease_until = %(now)s + %(ttl)s
WHERE id IN (
    SELECT id FROM zeroclick_outbox
    WHERE state = 0 AND next_at <= %(now)s AND (lease_until IS NULL OR lease_until <= %(now)s)
    ORDER BY id LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
RETURNING id, key, body, attempts
"""
_COUNTS = """
SELECT count(*) FILTER (WHERE state = 0), min(created) FILTER (WHERE state = 0),
    count(*) FILTER (WHERE state = 1), count(*) FILTER (WHERE state = 2),
    (SELECT count(*) FROM zeroclick_outbox_conflicts)
FROM zeroclick_outbox
"""
_CONFLICT = (
    "INSERT INTO zeroclick_outbox_conflicts (key, body, at) "
    "SELECT k, b, %s FROM unnest(%s::text[], %s::text[]) AS c (k, b)"
)
_DEAD_LETTERS = "SELECT key, reason, done_at, body FROM zeroclick_outbox WHERE state = 2 ORDER BY id LIMIT %s"


def _insert(events: Sequence[Event], now: float, *, strict: bool) -> Flow[int]:
    """Insert ``events`` in the open transaction; returns how many were new."""
    columns = [[getattr(e, name) for e in events] for name in ("key", "user_id", "meter", "quantity", "timestamp")]
    new = {key for (key,) in (yield _INSERT, (now, *columns, [e.body for e in events]))}
    if len(new) < len(events):  # some keys were there already: same payload is a no-op, another one a conflict
        old = [e.key for e in events if e.key not in new]
        found = yield "SELECT key, user_id, meter, quantity, ts, body FROM zeroclick_outbox WHERE key = ANY(%s)", (old,)
        stored = {row[0]: row[1:] for row in found}
        refused = [e for e in events if e.key in stored and not e.same_as(*stored[e.key][:4])]
        if refused and strict:
            raise conflict(refused[0])
        for event in refused:
            log_conflict(event, stored[event.key][4])
        if refused:
            yield _CONFLICT, (now, [e.key for e in refused], [e.body for e in refused])
    return len(new)


class PostgresOutbox(PostgresStore, Outbox):
    schemes = ("postgresql", "postgres")

    def __init__(self, url: str, *, timeout: float = 0.5, max_connections: int = 4, **kwargs: Any) -> None:
        super().__init__(url, **kwargs)
        # the sender's work is batches off the request path: a call may wait longer than a request's
        self.database = Database(url, kind=self.kind, timeout=max(timeout, 5.0), max_size=max_connections)
        self.database.open(self._prepare)

    def _prepare(self, conn: Connection) -> None:
        if not self.create and conn.execute("SELECT to_regclass('zeroclick_outbox')").fetchone() == (None,):
            # an admin command pointed at the wrong database must not start a new, empty outbox there
            raise ConfigError("no_outbox", f"no outbox in {masked(self.url)}; check settings.outbox")
        for statement in _SCHEMA:
            conn.execute(statement)

    def add(self, events: Sequence[Event], *, strict: bool = True) -> int:
        if not events:
            return 0
        return self.database.play(_insert(events, self.clock(), strict=strict))

    def insert_in(self, conn: Connection, events: Sequence[Event]) -> int:
        """Add ``events`` inside a transaction another store opened on this database (``conn``): a
        ledger settling a hold. A key already stored keeps its first report; returns how many were new."""
        return drive(conn, self.insert_flow(events))

    def insert_flow(self, events: Sequence[Event]) -> Flow[int]:
        """:meth:`insert_in` as statements, for a ledger that plays them in its own transaction, sync
        or async."""
        return _insert(events, self.clock(), strict=False)

    def lease(self, owner: str, limit: int, ttl: float) -> list[Leased]:
        rows = self.database.run(_LEASE, {"owner": owner, "now": self.clock(), "ttl": ttl, "limit": limit})
        return sorted((Leased(*row) for row in rows), key=lambda r: r.id)

    def delivered(self, owner: str, ids: Sequence[int]) -> None:
        self.database.run(
            "UPDATE zeroclick_outbox SET state = 1, owner = NULL, lease_until = NULL, done_at = %s "
            "WHERE owner = %s AND id = ANY(%s)",
            (self.clock(), owner, list(ids)),
        )

    def retry(self, owner: str, ids: Sequence[int], delay: float, *, count: bool = True) -> None:
        self.database.run(
            "UPDATE zeroclick_outbox SET owner = NULL, lease_until = NULL, next_at = %s, attempts = attempts + %s "
            "WHERE owner = %s AND state = 0 AND id = ANY(%s)",
            (self.clock() + delay, int(count), owner, list(ids)),
        )

    def dead(self, owner: str, failures: Sequence[tuple[int, str]]) -> None:
        self.database.run(
            "UPDATE zeroclick_outbox AS o SET state = 2, owner = NULL, lease_until = NULL, reason = f.reason, "
            "done_at = %s, attempts = o.attempts + 1 FROM unnest(%s::bigint[], %s::text[]) AS f (id, reason) "
            "WHERE o.id = f.id AND o.owner = %s AND o.state = 0",
            (self.clock(), [i for i, _ in failures], [r for _, r in failures], owner),
        )

    def reclaim(self, is_gone: Callable[[str], bool]) -> int:
        owners = self.database.run("SELECT DISTINCT owner FROM zeroclick_outbox WHERE state = 0 AND owner IS NOT NULL")
        gone = [owner for (owner,) in owners if is_gone(owner)]
        if not gone:
            return 0
        rows = self.database.run(
            "UPDATE zeroclick_outbox SET owner = NULL, lease_until = NULL "
            "WHERE state = 0 AND owner = ANY(%s) RETURNING id",
            (gone,),
        )
        return len(rows)

    def status(self, *, dead_limit: int = 20) -> OutboxStatus:
        def read() -> Flow[OutboxStatus]:
            ((pending, oldest, sent, dead, conflicts),) = yield _COUNTS, ()
            letters = yield _DEAD_LETTERS, (dead_limit,)
            found = tuple(DeadLetter(key, reason or "", at or 0.0, body) for key, reason, at, body in letters)
            return OutboxStatus(pending, oldest, sent, dead, dead_letters=found, conflicts=conflicts)

        return self.database.play(read())

    def retry_dead(self) -> int:
        rows = self.database.run(
            "UPDATE zeroclick_outbox SET state = 0, reason = NULL, done_at = NULL, next_at = 0, attempts = 0 "
            "WHERE state = 2 RETURNING id"
        )
        return len(rows)

    def prune(self, before: float) -> int:
        sql = "DELETE FROM zeroclick_outbox WHERE state = 1 AND done_at < %s RETURNING id"
        return len(self.database.run(sql, (before,)))
