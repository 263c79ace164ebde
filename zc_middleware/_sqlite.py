"""SQLite plumbing the SQLite ledger and outbox share: URL to path, one connection per process, writes.

* ``sqlite:///rel.db`` is relative to the working directory at start-up and
  ``sqlite:////abs/x.db`` absolute; the path is made absolute once, so every
  message names the file that is really meant.
* A file that cannot be used (no such directory, no permission, not a
  database) stops start-up with a :class:`ConfigError` naming the setting, the
  URL and the absolute path. A directory is never created: a mistyped path
  would otherwise become a fresh, empty ledger that grants every default plan.
* One connection per process, behind a lock: threads queue on the lock instead
  of sleeping in SQLite's busy handler. After ``fork`` the child opens its own.
* WAL with ``synchronous=NORMAL`` commits without fsync (a process crash loses
  nothing committed). With a checkpoint interval, automatic checkpoints are
  off and a daemon thread checkpoints instead, so no request pays for one.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, TypeVar
from urllib.parse import quote

from .errors import ConfigError

__all__ = ["Database", "SQLiteStore", "sqlite_path", "write_transaction"]

log = logging.getLogger("zc_middleware")
T = TypeVar("T")
_PREFIX = "sqlite:///"

_instances: weakref.WeakSet[Database] = weakref.WeakSet()


def _after_fork() -> None:
    for database in list(_instances):
        database.forget_process_state()


os.register_at_fork(after_in_child=_after_fork)


def sqlite_path(url: str, kind: str) -> str:
    """``sqlite:///rel.db`` -> ``rel.db``; ``sqlite:////abs/x.db`` -> ``/abs/x.db``; else
    :class:`ConfigError` ``invalid_<kind>_url``."""
    if not url.startswith(_PREFIX) or len(url) == len(_PREFIX):
        raise ConfigError(f"invalid_{kind}_url", f"{url!r}: write sqlite:///relative.db or sqlite:////absolute.db")
    path = url[len(_PREFIX) :]
    if path == ":memory:":
        raise ConfigError(f"invalid_{kind}_url", "sqlite:///:memory: is private to one connection; use memory://")
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


class Database:
    """One SQLite file as this process uses it: a lazily opened connection behind :attr:`lock`."""

    def __init__(
        self,
        url: str,
        *,
        kind: str,
        create: bool = True,
        busy_timeout: float = 5.0,
        checkpoint_interval: float = 0.0,
    ) -> None:
        self.url = url
        self.kind = kind
        self.path = os.path.abspath(sqlite_path(url, kind))
        #: the file behind links, to tell whether two stores use one file
        self.real_path = os.path.realpath(self.path)
        self.create = create
        self.busy_timeout = busy_timeout
        self.checkpoint_interval = checkpoint_interval
        self.forget_process_state()
        _instances.add(self)

    def forget_process_state(self) -> None:
        """A fresh lock and no connection: what a forked child needs, since a connection and a lock
        taken by another thread at fork time must never be used again."""
        self.lock = threading.Lock()
        #: the open connection, ``None`` until first use; read only with :attr:`lock` held
        self.conn: sqlite3.Connection | None = None
        self._stop = threading.Event()

    # -- opening ----------------------------------------------------------------
    def open(self, prepare: Callable[[sqlite3.Connection], None]) -> None:
        """Connect and run ``prepare`` (the schema) now, at start-up, so a file that cannot be used
        stops the app here with a :class:`ConfigError` rather than failing every request later."""
        self._check_path()
        try:
            self.write(prepare)
        except sqlite3.Error as exc:
            self.close()
            reason = "not an SQLite database" if "not a database" in str(exc) else str(exc)
            raise self._cannot_open(reason) from exc

    def _cannot_open(self, reason: str) -> ConfigError:
        return ConfigError(
            f"cannot_open_{self.kind}", f"settings.{self.kind} {self.url!r}: cannot open {self.path}: {reason}"
        )

    def _check_path(self) -> None:
        folder = os.path.dirname(self.path)
        if not os.path.isdir(folder):
            problem = "is not a directory" if os.path.exists(folder) else "does not exist"
            raise self._cannot_open(f"directory {folder} {problem}")
        if os.path.isdir(self.path):
            raise self._cannot_open("it is a directory")
        if os.path.exists(self.path):
            if not os.access(self.path, os.R_OK | os.W_OK):
                raise self._cannot_open("no permission to read and write it")
        elif not self.create:
            relative = "" if self.url.startswith(_PREFIX + "/") else f" (a relative path starts at {os.getcwd()})"
            raise ConfigError(
                f"no_{self.kind}",
                f"no {self.kind} at {self.path} ({self.url}); check settings.{self.kind}{relative}: "
                "the app creates the file when it first starts",
            )
        elif not os.access(folder, os.W_OK):
            raise self._cannot_open(f"directory {folder} is not writable")

    def connect(self) -> sqlite3.Connection:
        """The process's connection, opened now if need be; call with :attr:`lock` held."""
        if self.conn is None:
            # mode=rw: once the file is expected to exist, never create an empty one in its place
            target = self.path if self.create else f"file:{quote(self.path)}?mode=rw"
            conn = sqlite3.connect(
                target, uri=not self.create, timeout=self.busy_timeout, isolation_level=None, check_same_thread=False
            )
            try:
                conn.execute("PRAGMA journal_mode=WAL").fetchall()
                conn.execute("PRAGMA synchronous=NORMAL")
                if self.checkpoint_interval > 0:
                    conn.execute("PRAGMA wal_autocheckpoint=0")
            except BaseException:
                conn.close()
                raise
            self.conn = conn
            if self.checkpoint_interval > 0:
                threading.Thread(
                    target=self._checkpoint_loop, args=(self._stop,), daemon=True, name="zc-sqlite-checkpoint"
                ).start()
        return self.conn

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

    # -- using ------------------------------------------------------------------
    def write(self, body: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``body`` in one ``BEGIN IMMEDIATE`` transaction (rolled back if it raises)."""
        with self.lock:
            return write_transaction(self.connect(), body)

    def read(self, body: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``body`` in one read transaction: its queries see one snapshot of the file."""
        with self.lock:
            conn = self.connect()
            conn.execute("BEGIN")
            try:
                return body(conn)
            finally:
                conn.execute("COMMIT")

    def run(self, sql: str, params: Sequence[object] | Mapping[str, object] = ()) -> list[Any]:
        """One statement, committed on its own; returns its rows."""
        with self.lock:
            return self.connect().execute(sql, params).fetchall()

    def close(self) -> None:
        """Stop the checkpoint thread and close the connection, checkpointing first if this process
        checkpoints; the store may not be used afterwards."""
        self._stop.set()
        with self.lock:
            if self.conn is not None:
                if self.checkpoint_interval > 0:
                    try:
                        self.conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                    except sqlite3.Error:
                        pass
                self.conn.close()
                self.conn = None
        _instances.discard(self)


class SQLiteStore:
    """What a store kept in one SQLite file adds to its interface (listed first among its bases):
    the ``sqlite:///`` URL rule, its :class:`Database`, its path, and closing it."""

    kind: ClassVar[str]
    database: Database

    @classmethod
    def check_url(cls, url: str) -> None:
        sqlite_path(url, cls.kind)

    @property
    def path(self) -> str:
        """The database file, absolute."""
        return self.database.path

    def close(self) -> None:
        self.database.close()
