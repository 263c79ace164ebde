"""PostgreSQL plumbing the PostgreSQL ledger and outbox share: URL checks, pools, start-up, transactions.

* ``postgresql://user:secret@host:5432/db`` (or ``postgres://``) is handed to
  libpq as is; every message names it with the password masked.
* Start-up connects once, directly, and creates the tables: a server that does
  not answer, or a user that may not create tables, stops the app there with a
  :class:`ConfigError` instead of answering every paid request 503.
* Requests borrow connections in autocommit mode, so a single statement costs
  one round trip (no ``BEGIN``/``COMMIT``); work of several statements runs in
  an explicit transaction. Threads share a ``psycopg_pool`` pool, made on first
  use in each process (a pool's threads and sockets do not survive ``fork``);
  coroutines share async connections that belong to the event loop that made
  them, with no background task and no thread hop.
* ``timeout`` bounds a call: waiting for a pooled connection, and each
  statement on the server (``statement_timeout``, lock waits included). A
  broken connection is dropped by the pool, which reconnects in the background.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import threading
import weakref
from collections.abc import AsyncIterator, Callable, Generator, Iterator, Sequence
from typing import Any, ClassVar, TypeVar
from urllib.parse import urlsplit, urlunsplit

from .errors import ConfigError

try:
    import psycopg
    from psycopg import conninfo as _conninfo
    from psycopg import pq
    from psycopg_pool import ConnectionPool
except ImportError:  # pragma: no cover - exercised in a subprocess
    raise ConfigError(
        "missing_driver", "postgresql:// stores need psycopg 3 and psycopg_pool: pip install 'zc-middleware[postgres]'"
    ) from None

__all__ = ["Connection", "Database", "Flow", "PostgresStore", "Rows", "drive", "masked"]

#: the advisory lock that serializes creating the ``zeroclick_`` tables ("ZC", then "schema")
_SCHEMA_LOCK = 0x5A43_0000_5C4E

T = TypeVar("T")
Rows = list[tuple[Any, ...]]
#: a connection as the drivers see it; they import psycopg only through this module and its install hint
Connection = psycopg.Connection[Any]
Params = Sequence[object] | dict[str, object]
#: work of several statements, written once for both drivers: it yields ``(sql, params)``, is sent
#: each statement's rows, and returns its result (httpx's ``auth_flow`` shape)
Flow = Generator[tuple[str, Params], Rows, T]
_SCHEMES = ("postgresql", "postgres")

_instances: weakref.WeakSet[Database] = weakref.WeakSet()


def _after_fork() -> None:
    for database in list(_instances):
        database.forget_process_state()


os.register_at_fork(after_in_child=_after_fork)


def masked(url: str) -> str:
    """``url`` with its password replaced by ``***``, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def check_postgres_url(url: str, kind: str) -> None:
    """:class:`ConfigError` ``invalid_<kind>_url`` for a URL libpq could not parse."""
    if urlsplit(url).scheme not in _SCHEMES:
        raise ConfigError(f"invalid_{kind}_url", f"{masked(url)!r}: write postgresql://user@host:5432/dbname")
    try:
        _conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError as exc:
        raise ConfigError(f"invalid_{kind}_url", f"{masked(url)!r} is not a PostgreSQL URL: {exc}") from None


def _rows(cursor: psycopg.Cursor[Any]) -> Rows:
    return cursor.fetchall() if cursor.description is not None else []


def drive(conn: psycopg.Connection[Any], flow: Flow[T]) -> T:
    """Run ``flow``'s statements on ``conn`` (in the caller's transaction); returns its result."""
    try:
        step = next(flow)
        while True:
            step = flow.send(_rows(conn.execute(*step)))
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]


class _AsyncPool:
    """Connections for one event loop, made on demand. No background task of its own: a loop that
    ends without closing it is not kept waiting (``psycopg_pool``'s async workers would be)."""

    def __init__(self, conninfo: str, size: int, timeout: float) -> None:
        self.conninfo = conninfo
        self.timeout = timeout
        self.idle: list[psycopg.AsyncConnection[Any]] = []
        self.slots = asyncio.Semaphore(size)

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        if self.slots.locked():  # all in use: wait for one, as long as a call may take
            await asyncio.wait_for(self.slots.acquire(), self.timeout)
        else:
            await self.slots.acquire()
        try:
            if self.idle:
                conn = self.idle.pop()
            else:
                connect = psycopg.AsyncConnection.connect(self.conninfo, autocommit=True)
                conn = await asyncio.wait_for(connect, self.timeout)
            try:
                yield conn
            finally:
                # a connection the server ended, or left mid-transaction, is dropped: the next call makes another
                if conn.broken or conn.closed or conn.info.transaction_status != pq.TransactionStatus.IDLE:
                    conn.pgconn.finish()
                    if conn.broken:  # a restart or failover ended the idle ones too: each would fail a request
                        self.close()
                else:
                    self.idle.append(conn)
        finally:
            self.slots.release()

    def close(self) -> None:
        while self.idle:
            conn = self.idle.pop()  # held while it closes: deleted before, it would warn that it was open
            conn.pgconn.finish()

    # a store dropped without close() (its app never shut down) releases its connections quietly
    __del__ = close


class Database:
    """One PostgreSQL database as this process uses it: a sync pool, an async one, both lazy."""

    def __init__(self, url: str, *, kind: str, timeout: float = 0.5, max_size: int = 10) -> None:
        self.url = url
        self.kind = kind
        self.timeout = timeout
        self.max_size = max_size
        params = _conninfo.conninfo_to_dict(url)
        #: who and where, to tell whether two stores use one database
        self.identity = (params.get("host"), params.get("port") or "5432", params.get("dbname"), params.get("user"))
        # statement_timeout also bounds lock waits: a call never hangs on a row another one holds
        options = f"{params.get('options', '')} -c statement_timeout={max(1, int(timeout * 1000))}".strip()
        self.conninfo = _conninfo.make_conninfo(url, options=options, connect_timeout=max(2, math.ceil(timeout)))
        self.forget_process_state()
        _instances.add(self)

    def forget_process_state(self) -> None:
        """No pools: what a forked child needs, since its parent's sockets and threads are not its own."""
        self._lock = threading.Lock()
        self._pool: ConnectionPool | None = None
        self._apool: _AsyncPool | None = None
        self._aloop: asyncio.AbstractEventLoop | None = None

    # -- opening ----------------------------------------------------------------
    def open(self, prepare: Callable[[psycopg.Connection[Any]], None]) -> None:
        """Connect once and run ``prepare`` (the schema) now, at start-up, so that a server that
        does not answer, or a user without the rights, stops the app with a :class:`ConfigError`."""
        try:
            with psycopg.connect(self.conninfo, autocommit=True) as conn, conn.transaction():
                # Workers start together on a first deploy: CREATE TABLE IF NOT EXISTS run at once in two
                # sessions can still fail in one (a unique violation in the catalogue), so they take turns.
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
                prepare(conn)
        except psycopg.errors.InsufficientPrivilege as exc:
            user = self.identity[3] or "this user"
            raise self.cannot_open(f"{user} may not create the zeroclick_ tables ({exc}); grant CREATE") from None
        except psycopg.Error as exc:
            raise self.cannot_open(str(exc).strip()) from None

    def cannot_open(self, reason: str) -> ConfigError:
        return ConfigError(f"cannot_open_{self.kind}", f"settings.{self.kind} {masked(self.url)!r}: {reason}")

    def _pool_options(self, name: str) -> dict[str, Any]:
        # autocommit: a single statement is one round trip, with no BEGIN or COMMIT of its own
        return {
            "min_size": min(4, self.max_size),
            "max_size": self.max_size,
            "kwargs": {"autocommit": True},
            "timeout": self.timeout,
            "open": False,
            "name": name,
        }

    def pool(self) -> ConnectionPool:
        pool = self._pool
        if pool is None:
            with self._lock:
                if self._pool is None:
                    fresh = ConnectionPool(self.conninfo, **self._pool_options(f"zc-{self.kind}"))
                    fresh.open(wait=False)
                    self._pool = fresh  # only once open: another thread takes it without the lock
                pool = self._pool
        return pool

    def apool(self) -> _AsyncPool:
        loop = asyncio.get_running_loop()
        if self._apool is None or self._aloop is not loop:
            # a pool belongs to the loop that made it: a new loop (a test, a restarted server) gets its own
            if self._apool is not None:
                self._apool.close()
            self._apool, self._aloop = _AsyncPool(self.conninfo, self.max_size, self.timeout), loop
        return self._apool

    # -- using ------------------------------------------------------------------
    @contextlib.contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[Any]]:
        pool, conn = self.pool(), None
        try:
            with pool.connection() as conn:
                yield conn
        except psycopg.OperationalError:
            if conn is not None and conn.broken:  # a restart or failover ended the idle ones too: replaced
                pool.check()  # now, instead of each failing one more request
            raise

    def run(self, sql: str, params: Params = ()) -> Rows:
        """One statement, committed on its own; returns its rows."""
        with self._connection() as conn:
            return _rows(conn.execute(sql, params))

    async def arun(self, sql: str, params: Params = ()) -> Rows:
        async with self.apool().connection() as conn:
            cursor = await conn.execute(sql, params)
            return await cursor.fetchall() if cursor.description is not None else []

    def play(self, flow: Flow[T]) -> T:
        """Run ``flow`` in one transaction (rolled back if it raises)."""
        with self._connection() as conn, conn.transaction():
            return drive(conn, flow)

    async def aplay(self, flow: Flow[T]) -> T:
        async with self.apool().connection() as conn, conn.transaction():
            try:
                step = next(flow)
                while True:
                    cursor = await conn.execute(*step)
                    step = flow.send(await cursor.fetchall() if cursor.description is not None else [])
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]

    def transaction(self, body: Callable[[psycopg.Connection[Any]], T]) -> T:
        """Run ``body`` in one transaction (rolled back if it raises)."""
        with self._connection() as conn, conn.transaction():
            return body(conn)

    def close(self) -> None:
        """Close the pools; the store may not be used afterwards."""
        if self._pool is not None:
            self._pool.close()
        if self._apool is not None:
            self._apool.close()
        self.forget_process_state()
        _instances.discard(self)


class PostgresStore:
    """What a store kept in a PostgreSQL database adds to its interface (listed first among its
    bases): the URL rule, its :class:`Database`, and closing it."""

    kind: ClassVar[str]
    database: Database

    @classmethod
    def check_url(cls, url: str) -> None:
        check_postgres_url(url, cls.kind)

    def close(self) -> None:
        self.database.close()
