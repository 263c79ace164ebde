"""``sqlite:///path.db``: the durable outbox, shared by every process on one host.

* ``add`` commits before it returns (WAL, ``synchronous=NORMAL``: a process
  crash loses nothing committed). When the ledger lives in the same file, the
  ledger calls :meth:`SQLiteOutbox.insert_in` inside the transaction that
  settles a hold, so a request's debit and its batch events commit together.
* A sender claims rows with **one** ``UPDATE ... WHERE id IN (SELECT ... LIMIT n)
  RETURNING`` that writes its owner id and a lease expiry: SQLite runs it under
  the write lock, so two processes can never claim the same row, and a killed
  sender's rows come back when its lease expires.
* :meth:`SQLiteOutbox.aadd` (an ASGI request's batch events) tries its write without waiting and
  waits for another process's lock only in a thread, as the SQLite ledger's async calls do.
* Delivered rows are kept (state ``sent``) so a re-report of a delivered key is
  still recognised as a no-op; :meth:`SQLiteOutbox.prune` forgets old ones.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Callable, Sequence
from typing import Any

from .._sqlite import Database, SQLiteStore, write_transaction
from .base import DeadLetter, Event, Leased, Outbox, OutboxStatus, conflict, log_conflict

__all__ = ["SQLiteOutbox", "carry_pending", "ensure_schema", "insert_events"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS zc_outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL UNIQUE,
    user_id TEXT NOT NULL, meter TEXT NOT NULL, quantity INTEGER NOT NULL, ts TEXT NOT NULL,
    body TEXT NOT NULL,
    state INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL, next_at REAL NOT NULL DEFAULT 0, attempts INTEGER NOT NULL DEFAULT 0,
    owner TEXT, lease_until REAL, reason TEXT, done_at REAL
);
CREATE INDEX IF NOT EXISTS zc_outbox_pending ON zc_outbox (id) WHERE state = 0;
CREATE INDEX IF NOT EXISTS zc_outbox_done ON zc_outbox (done_at) WHERE state = 1;
CREATE TABLE IF NOT EXISTS zc_outbox_conflicts (
    id INTEGER PRIMARY KEY, key TEXT NOT NULL, body TEXT NOT NULL, at REAL NOT NULL
)
"""
_INSERT = (
    "INSERT INTO zc_outbox (key, user_id, meter, quantity, ts, body, created) VALUES (?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (key) DO NOTHING"
)
_LEASE = """
UPDATE zc_outbox SET owner = :owner, lease_until = :now + :ttl
WHERE id IN (
    SELECT id FROM zc_outbox
    WHERE state = 0 AND next_at <= :now AND (lease_until IS NULL OR lease_until <= :now)
    ORDER BY id LIMIT :limit
)
RETURNING id, key, body, attempts
"""
_IDS = "id IN (SELECT value FROM json_each(?))"
log = logging.getLogger("zc_middleware")


def ensure_schema(conn: sqlite3.Connection) -> None:
    for statement in _SCHEMA.split(";"):
        if statement.strip():
            conn.execute(statement)


def insert_events(conn: sqlite3.Connection, events: Sequence[Event], now: float, *, strict: bool) -> int:
    """Insert ``events`` in the caller's open transaction; returns how many were new."""
    before = conn.total_changes
    conn.executemany(_INSERT, [(e.key, e.user_id, e.meter, e.quantity, e.timestamp, e.body, now) for e in events])
    new = conn.total_changes - before
    if new < len(events):  # some keys were there already: same payload is a no-op, another one a conflict
        keys = [e.key for e in events]
        stored = {
            row[0]: row[1:]
            for row in conn.execute(
                "SELECT key, user_id, meter, quantity, ts, body FROM zc_outbox "
                "WHERE key IN (SELECT value FROM json_each(?))",
                (_json_list(keys),),
            )
        }
        refused = [e for e in events if not e.same_as(*stored[e.key][:4])]
        if refused and strict:
            raise conflict(refused[0])
        for event in refused:
            log_conflict(event, stored[event.key][4])
        conn.executemany(
            "INSERT INTO zc_outbox_conflicts (key, body, at) VALUES (?, ?, ?)", [(e.key, e.body, now) for e in refused]
        )
    return new


def carry_pending(old: sqlite3.Connection, new: sqlite3.Connection) -> None:
    """The file was deleted or replaced and an operator restored the store: events still pending in the
    old file (usage that was served, not yet delivered) are added to the restored one, keys kept."""
    rows = old.execute(
        "SELECT key, user_id, meter, quantity, ts, body, created FROM zc_outbox WHERE state = 0 ORDER BY id"
    ).fetchall()
    if rows:
        added = write_transaction(new, lambda conn: _insert_rows(conn, rows))
        log.warning("zc_middleware: %d pending usage events carried over to the restored outbox file", added)


def _insert_rows(conn: sqlite3.Connection, rows: list[Any]) -> int:
    before = conn.total_changes
    conn.executemany(_INSERT, rows)
    return conn.total_changes - before


def _json_list(items: Sequence[object]) -> str:
    return json.dumps(list(items))


class SQLiteOutbox(SQLiteStore, Outbox):
    schemes = ("sqlite",)

    def __init__(self, url: str, *, busy_timeout: float = 5.0, **kwargs: Any) -> None:
        super().__init__(url, **kwargs)
        # No checkpoint thread of its own: SQLite's automatic checkpoints stay on for this connection.
        self.database = Database(
            url, kind=self.kind, create=self.create, busy_timeout=busy_timeout, on_move=carry_pending
        )
        self.database.open(ensure_schema)

    def add(self, events: Sequence[Event], *, strict: bool = True) -> int:
        if not events:
            return 0
        now = self.clock()
        return self.database.write(lambda conn: insert_events(conn, events, now, strict=strict))

    async def aadd(self, events: Sequence[Event], *, strict: bool = True) -> int:
        if not events:
            return 0
        now = self.clock()
        return await self.database.awrite(lambda conn: insert_events(conn, events, now, strict=strict))

    def insert_in(self, conn: sqlite3.Connection, events: Sequence[Event]) -> int:
        """Add ``events`` inside a transaction another store opened on this file (``conn``): a
        ledger settling a hold. A key already stored keeps its first report; returns how many were new."""
        return insert_events(conn, events, self.clock(), strict=False)

    def lease(self, owner: str, limit: int, ttl: float) -> list[Leased]:
        rows = self.database.run(_LEASE, {"owner": owner, "now": self.clock(), "ttl": ttl, "limit": limit})
        return sorted((Leased(*row) for row in rows), key=lambda r: r.id)

    def delivered(self, owner: str, ids: Sequence[int]) -> None:
        self.database.run(
            f"UPDATE zc_outbox SET state = 1, owner = NULL, lease_until = NULL, done_at = ? WHERE owner = ? AND {_IDS}",
            (self.clock(), owner, _json_list(ids)),
        )

    def retry(self, owner: str, ids: Sequence[int], delay: float, *, count: bool = True) -> None:
        self.database.run(
            "UPDATE zc_outbox SET owner = NULL, lease_until = NULL, next_at = ?, attempts = attempts + ? "
            f"WHERE owner = ? AND state = 0 AND {_IDS}",
            (self.clock() + delay, int(count), owner, _json_list(ids)),
        )

    def dead(self, owner: str, failures: Sequence[tuple[int, str]]) -> None:
        now = self.clock()
        self.database.write(
            lambda conn: conn.executemany(
                "UPDATE zc_outbox SET state = 2, owner = NULL, lease_until = NULL, reason = ?, done_at = ?, "
                "attempts = attempts + 1 WHERE id = ? AND owner = ? AND state = 0",
                [(reason, now, id_, owner) for id_, reason in failures],
            )
        )

    def reclaim(self, is_gone: Callable[[str], bool]) -> int:
        owners = [
            o
            for (o,) in self.database.run(
                "SELECT DISTINCT owner FROM zc_outbox WHERE state = 0 AND owner IS NOT NULL", ()
            )
        ]
        gone = [o for o in owners if is_gone(o)]
        if not gone:
            return 0
        return self.database.write(
            lambda conn: (
                conn.execute(
                    "UPDATE zc_outbox SET owner = NULL, lease_until = NULL "
                    "WHERE state = 0 AND owner IN (SELECT value FROM json_each(?))",
                    (_json_list(gone),),
                ).rowcount
            )
        )

    def status(self, *, dead_limit: int = 20) -> OutboxStatus:
        def read(conn: sqlite3.Connection) -> OutboxStatus:
            counts = dict(conn.execute("SELECT state, COUNT(*) FROM zc_outbox GROUP BY state").fetchall())
            oldest = conn.execute("SELECT MIN(created) FROM zc_outbox WHERE state = 0").fetchone()[0]
            letters = conn.execute(
                "SELECT key, reason, done_at, body FROM zc_outbox WHERE state = 2 ORDER BY id LIMIT ?", (dead_limit,)
            ).fetchall()
            (conflicts,) = conn.execute("SELECT COUNT(*) FROM zc_outbox_conflicts").fetchone()
            return OutboxStatus(
                pending=counts.get(0, 0),
                oldest_pending=oldest,
                sent=counts.get(1, 0),
                dead=counts.get(2, 0),
                dead_letters=tuple(DeadLetter(k, r or "", d or 0.0, b) for k, r, d, b in letters),
                conflicts=conflicts,
            )

        return self.database.read(read)

    def retry_dead(self) -> int:
        def revive(conn: sqlite3.Connection) -> int:
            cursor = conn.execute(
                "UPDATE zc_outbox SET state = 0, reason = NULL, done_at = NULL, next_at = 0, attempts = 0 "
                "WHERE state = 2"
            )
            return cursor.rowcount

        return self.database.write(revive)

    def prune(self, before: float) -> int:
        return self.database.write(
            lambda conn: conn.execute("DELETE FROM zc_outbox WHERE state = 1 AND done_at < ?", (before,)).rowcount
        )
