"""The SQLite file the ledger and outbox use: opened and checked at start-up, then written (:class:`Database`).

The URL rule and the write transaction are :mod:`._sqlite_sql`'s, the connection, checkpoints and the
watch on the file :mod:`._sqlite_file`'s; together:

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
* An event loop never waits for another process's lock: :meth:`Database.attempt` runs a call on a
  second connection whose busy timeout is 0, and says :data:`BUSY` instead of waiting; the caller
  then hands the same call to a thread, where the normal busy timeout applies.
* The file is watched (:mod:`._sqlite_identity`): a file deleted or replaced while in use stops being
  written to as if it were the store within :data:`WATCH_INTERVAL`, and a process never creates a
  fresh store where one was and vanished. The path is looked at by the writes themselves, at most
  once per interval: a ``stat`` next to every write cost 10-20 µs per paid request (with automatic
  checkpoints off, every system call there does), many times the rest of the check.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, Literal, TypeVar

from ._sqlite_file import WATCH_INTERVAL, StoreFile
from ._sqlite_identity import Record, file_id, inode, read_record, write_record
from ._sqlite_sql import BUSY, PREFIX, _Busy, is_busy, sqlite_path, write_transaction
from .errors import ConfigError

__all__ = ["BUSY", "WATCH_INTERVAL", "Database", "SQLiteStore", "is_busy", "sqlite_path", "write_transaction"]

log = logging.getLogger("zc_middleware")
T = TypeVar("T")


class Database(StoreFile):
    """One SQLite file as this process uses it: opened and checked at start-up, written under
    :attr:`lock`, and through a second connection that never waits (:meth:`attempt`)."""

    # -- opening ----------------------------------------------------------------
    def open(self, prepare: Callable[[sqlite3.Connection], None], *, adopt: bool = False) -> None:
        """Connect and run ``prepare`` (the schema) now, at start-up, so a file that cannot be used
        stops the app here with a :class:`ConfigError` rather than failing every request later.

        The file is checked against its identity record: where a store was and vanished, or another
        file took its place, nothing is created or adopted, and every call raises ``<kind>_gone``
        until an operator restores it. ``adopt``: that operator, making the file at the path (or a
        new one) the store."""
        self._prepare = prepare
        self._check_path()
        record = read_record(self.path)
        here = inode(self.path)
        if record is not None and not adopt:
            if here is None:
                self.gone = f"it was there (id {record.id}) and is missing"
                return
            if here[1] != record.inode:  # not even opened: the -wal beside it is the recorded file's
                self.gone = f"another file is at its place (inode {here[1]}; recorded: {record.inode})"
                return
        try:
            self.write(prepare)
            found = self.write(file_id)
        except sqlite3.Error as exc:
            self.close()
            reason = "not an SQLite database" if "not a database" in str(exc) else str(exc)
            raise self._cannot_open(reason) from exc
        assert self.identity is not None
        mine = Record(found, self.identity[1])
        if record is None or adopt:
            try:
                write_record(self.path, mine)
            except OSError as exc:
                log.warning("zc_middleware: cannot record the identity of %s: %s", self.path, exc)
        elif record != mine:  # the same inode number, another file: the recorded one was deleted
            self.gone = f"another file is at its place (id {found}; recorded: {record.id})"
            self.identity = None  # not this process's file: only a restore makes it the store
            self._disconnect()

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
            relative = "" if self.url.startswith(PREFIX + "/") else f" (a relative path starts at {os.getcwd()})"
            record = read_record(self.path)
            why = (
                "the app creates the file when it first starts"
                if record is None
                else f"it was there (id {record.id}) and is missing: see zc-middleware ledger-restore"
            )
            where = f"no {self.kind} at {self.path} ({self.url}); check settings.{self.kind}{relative}"
            raise ConfigError(f"no_{self.kind}", f"{where}: {why}")
        elif not os.access(folder, os.W_OK):
            raise self._cannot_open(f"directory {folder} is not writable")

    # -- using ------------------------------------------------------------------
    def write(self, body: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``body`` in one ``BEGIN IMMEDIATE`` transaction (rolled back if it raises)."""
        with self.lock:
            return write_transaction(self.usable(), body, self.written)

    def attempt(self, body: Callable[[sqlite3.Connection], T]) -> T | Literal[_Busy.BUSY]:
        """Run ``body`` on the connection that never waits: :data:`BUSY` instead of waiting for another
        thread (this process) or process (SQLite's lock), so that an event loop can hand the call to a
        thread then. ``body`` commits what it writes and calls :meth:`written` itself (best before
        its commit: ``write_transaction(conn, ..., database.written)``)."""
        if self.gone is not None or not self.nowait_lock.acquire(blocking=False):
            return BUSY  # a thread restores a gone store; an event loop does not wait for one
        try:
            conn = self.nowait_conn
            if conn is None or self._nowait_generation != self.generation:
                if conn is not None:
                    self.nowait_conn = None
                    conn.close()
                generation = self.generation
                conn = self.nowait_conn = self._new_connection(0)
                self._nowait_generation = generation
            return body(conn)
        except sqlite3.OperationalError as exc:
            if is_busy(exc):
                return BUSY
            raise
        finally:
            self.nowait_lock.release()

    async def awrite(self, body: Callable[[sqlite3.Connection], T]) -> T:
        """:meth:`write` from an event loop: inline when no lock is in the way, else in a thread."""
        result = self.attempt(lambda conn: write_transaction(conn, body, self.written))
        if result is BUSY:
            return await asyncio.to_thread(self.write, body)
        return result

    def read(self, body: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``body`` in one read transaction: its queries see one snapshot of the file."""
        with self.lock:
            conn = self.usable()
            conn.execute("BEGIN")
            try:
                return body(conn)
            finally:
                conn.execute("COMMIT")

    def run(self, sql: str, params: Sequence[object] | Mapping[str, object] = ()) -> list[Any]:
        """One statement, committed on its own; returns its rows."""
        with self.lock:
            rows = self.usable().execute(sql, params).fetchall()
            self.written()
            return rows


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
