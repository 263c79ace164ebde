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
import enum
import logging
import math
import os
import sqlite3
import threading
import weakref
from collections.abc import Callable, Mapping, Sequence
from time import monotonic
from typing import Any, ClassVar, Final, Literal, TypeVar
from urllib.parse import parse_qs, quote

from ._sqlite_identity import Record, file_id, inode, read_record, write_record
from .errors import ConfigError, ZcError

__all__ = ["BUSY", "Database", "SQLiteStore", "is_busy", "sqlite_path", "write_transaction"]

log = logging.getLogger("zc_middleware")
T = TypeVar("T")
_PREFIX = "sqlite:///"
#: seconds between two looks of a process's writes at whether the path still names the store's file
WATCH_INTERVAL: Final = 0.05

_instances: weakref.WeakSet[Database] = weakref.WeakSet()


def _after_fork() -> None:
    for database in list(_instances):
        database.forget_process_state()


os.register_at_fork(after_in_child=_after_fork)


def sqlite_path(url: str, kind: str) -> str:
    """``sqlite:///rel.db`` -> ``rel.db``; ``sqlite:////abs/x.db`` -> ``/abs/x.db``; else
    :class:`ConfigError` ``invalid_<kind>_url``."""
    return _parse(url, kind)[0]


def _parse(url: str, kind: str) -> tuple[str, dict[str, float]]:
    """The path and the options of a ``sqlite:///path.db[?busy_timeout=SECONDS]`` URL."""
    if not url.startswith(_PREFIX) or len(url) == len(_PREFIX):
        raise ConfigError(f"invalid_{kind}_url", f"{url!r}: write sqlite:///relative.db or sqlite:////absolute.db")
    path, _, query = url[len(_PREFIX) :].partition("?")
    if path == ":memory:":
        raise ConfigError(f"invalid_{kind}_url", "sqlite:///:memory: is private to one connection; use memory://")
    options: dict[str, float] = {}
    for name, values in parse_qs(query, keep_blank_values=True).items():
        try:
            value = float(values[-1])
        except ValueError:
            value = math.nan
        if name != "busy_timeout" or len(values) > 1 or not 0 <= value <= 600:
            raise ConfigError(
                f"invalid_{kind}_url",
                f"{url!r}: the one option is busy_timeout=SECONDS (0 to 600), how long a write waits for "
                "another process's lock",
            )
        options[name] = value
    return path, options


def write_transaction(
    conn: sqlite3.Connection, body: Callable[[sqlite3.Connection], T], check: Callable[[], None] | None = None
) -> T:
    """Run ``body`` in one ``BEGIN IMMEDIATE`` transaction on ``conn``, rolled back if it (or ``check``,
    called before the commit) raises.

    IMMEDIATE takes the write lock up front, so a read inside ``body`` cannot be
    invalidated by another process before its write (no SQLITE_BUSY upgrade deadlock).
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = body(conn)
        if check is not None:
            check()
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return result


def is_busy(error: BaseException) -> bool:
    """Whether ``error`` is SQLite saying another connection holds a lock (SQLITE_BUSY, SQLITE_LOCKED)."""
    if not isinstance(error, sqlite3.OperationalError):
        return False
    code = getattr(error, "sqlite_errorcode", None)  # Python 3.11+
    if code is not None:
        return code & 0xFF in (5, 6)
    return "locked" in str(error) or "busy" in str(error)


class _Busy(enum.Enum):
    BUSY = "busy"


#: what :meth:`Database.attempt` returns when the call would have to wait for a lock
BUSY: Final = _Busy.BUSY


class Database:
    """One SQLite file as this process uses it: a lazily opened connection behind :attr:`lock`, and
    a second one that never waits (:meth:`attempt`)."""

    def __init__(
        self,
        url: str,
        *,
        kind: str,
        create: bool = True,
        busy_timeout: float = 5.0,
        checkpoint_interval: float = 0.0,
        on_move: Callable[[sqlite3.Connection, sqlite3.Connection], None] | None = None,
    ) -> None:
        """``on_move(old, new)``: called when the store moves to a restored file, with a connection to
        the file it was using and one to the new file (in no transaction), to carry data over."""
        self.url = url
        self.on_move = on_move
        self._prepare: Callable[[sqlite3.Connection], None] | None = None
        self.kind = kind
        path, options = _parse(url, kind)
        self.path = os.path.abspath(path)
        #: the file behind links, to tell whether two stores use one file
        self.real_path = os.path.realpath(self.path)
        self.create = create
        #: seconds a write waits for another process's lock (the URL's ``busy_timeout`` wins)
        self.busy_timeout = options.get("busy_timeout", busy_timeout)
        self.checkpoint_interval = checkpoint_interval
        #: ``(st_dev, st_ino)`` of the file this process's connections use (set by :meth:`open`)
        self.identity: tuple[int, int] | None = None
        #: why the file cannot be used (deleted, replaced, vanished), ``None`` while it can
        self.gone: str | None = None
        #: when (``time.monotonic``) a write next looks whether the path still names the file
        self._look_at = 0.0
        #: bumped whenever the connections move to another file, so that older ones are replaced
        self.generation = 0
        self.forget_process_state()
        _instances.add(self)

    def forget_process_state(self) -> None:
        """Fresh locks and no connection: what a forked child needs, since a connection and a lock
        taken by another thread at fork time must never be used again."""
        self.lock = threading.Lock()
        #: the open connection, ``None`` until first use; read only with :attr:`lock` held
        self.conn: sqlite3.Connection | None = None
        self.nowait_lock = threading.Lock()
        #: the connection :meth:`attempt` uses (busy timeout 0) and the generation it was opened at
        self.nowait_conn: sqlite3.Connection | None = None
        self._nowait_generation = -1
        self._stop = threading.Event()

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
            relative = "" if self.url.startswith(_PREFIX + "/") else f" (a relative path starts at {os.getcwd()})"
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

    def _new_connection(self, timeout: float) -> sqlite3.Connection:
        """A connection to the file the store is (:attr:`identity`; the file at the path the first time)."""
        if self.gone is not None:
            raise self._gone_error()
        before = inode(self.path)
        # mode=rw: once the file is expected to exist, never create an empty one in its place
        creating = self.create and self.identity is None
        target = self.path if creating else f"file:{quote(self.path)}?mode=rw"
        conn = sqlite3.connect(target, uri=not creating, timeout=timeout, isolation_level=None, check_same_thread=False)
        try:
            conn.execute("PRAGMA journal_mode=WAL").fetchall()
            conn.execute("PRAGMA synchronous=NORMAL")
            if self.checkpoint_interval > 0:
                conn.execute("PRAGMA wal_autocheckpoint=0")
            after = inode(self.path)
            if after is None or (before is not None and before != after):
                raise self.lost("deleted" if after is None else "replaced")
            if self.identity is None:
                self.identity = after
            elif after != self.identity:
                raise self.lost("replaced")
        except BaseException:
            conn.close()
            raise
        return conn

    def connect(self) -> sqlite3.Connection:
        """The process's connection, opened now if need be; call with :attr:`lock` held."""
        if self.conn is None:
            conn = self._new_connection(self.busy_timeout)
            self.conn = conn
            if self.checkpoint_interval > 0:
                threading.Thread(
                    target=self._checkpoint_loop, args=(self._stop,), daemon=True, name="zc-sqlite-checkpoint"
                ).start()
        return self.conn

    def _checkpoint_loop(self, stop: threading.Event) -> None:
        conn: sqlite3.Connection | None = None
        generation = -1
        try:
            while not stop.wait(self.checkpoint_interval):
                try:
                    if conn is None or generation != self.generation:  # the store moved to another file
                        if conn is not None:
                            conn.close()
                            conn = None
                        generation = self.generation
                        conn = self._new_connection(self.busy_timeout)
                    if self.gone is None:
                        conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except (sqlite3.Error, ZcError) as exc:  # busy or gone: the next round tries again
                    log.debug("sqlite checkpoint skipped: %s", exc)
        finally:
            if conn is not None:
                conn.close()

    # -- the file's identity -----------------------------------------------------
    def written(self) -> None:
        """Call before a commit (or right after one): raise if the path no longer names the file this
        process writes to, so that a write to a deleted or replaced file is reported as failed, never
        as done, and is rolled back (or undone) in the file it went to, in case that file comes back.
        The path is looked at once per :data:`WATCH_INTERVAL`: writes in the interval after a deletion
        may still go to the deleted file (the process keeps it open; a restore carries its pending
        events over)."""
        now = monotonic()
        if now < self._look_at:
            return
        self._look_at = now + WATCH_INTERVAL
        if inode(self.path) != self.identity:
            self._look_at = 0.0  # every write looks until the store is restored
            raise self.lost("deleted or replaced")

    def lost(self, how: str) -> ZcError:
        """Mark the file as unusable (``how``: what happened to it) and return the error to raise."""
        if self.gone is None:
            self.gone = f"the file was {how} while in use"
        return self._gone_error()

    def _gone_error(self) -> ZcError:
        return ZcError(
            f"{self.kind}_gone",
            f"{self.kind} file {self.path}: {self.gone}; nothing is written until an operator restores it "
            f"(zc-middleware ledger-restore, or manage.py zeroclick_ledger_restore)",
        )

    def usable(self) -> sqlite3.Connection:
        """The connection, once the file is the store again; call with :attr:`lock` held."""
        if self.gone is not None and not self._resume():
            raise self._gone_error()
        return self.conn if self.conn is not None else self.connect()

    def _resume(self) -> bool:
        """While :attr:`gone`: whether the store is back (its own file moved back, or the file an
        operator restored), reconnecting to it if need be. Call with :attr:`lock` held."""
        now = inode(self.path)
        if now is None:
            return False
        if now == self.identity:  # the very file this process used is back at its path
            self.gone = None
            return True
        record = read_record(self.path)
        if record is None or record.inode != now[1]:
            return False
        # The old connection is closed only after the move: SQLite neither checkpoints nor deletes
        # the -wal of a moved file on close, and what it holds may be carried over (``on_move``).
        old, self.conn = self.conn, None
        self.generation += 1
        self.identity, self.gone = now, None
        try:
            conn = self.connect()
            ok = write_transaction(conn, file_id) == record.id
            if ok and self._prepare is not None:  # a new file has none of this store's tables yet
                write_transaction(conn, self._prepare)
        except (sqlite3.Error, ZcError):
            ok = False
        if not ok:
            self._disconnect()
            self.gone = self.gone or "another file is at its place"
            if old is not None:
                old.close()
            return False
        if old is not None:
            if self.on_move is not None:
                try:
                    self.on_move(old, conn)
                except Exception:
                    log.exception(
                        "zc_middleware: could not carry what %s %s held over to its restored file", self.kind, self.path
                    )
            old.close()
        log.warning("zc_middleware: %s %s restored: writing to it again", self.kind, self.path)
        return True

    def _disconnect(self) -> None:
        self.generation += 1
        if self.conn is not None:
            self.conn.close()
            self.conn = None

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

    def close(self) -> None:
        """Stop the checkpoint thread and close the connections, checkpointing first if this process
        checkpoints; the store may not be used afterwards."""
        self._stop.set()
        with self.nowait_lock:
            if self.nowait_conn is not None:
                self.nowait_conn.close()
                self.nowait_conn = None
        with self.lock:
            if self.conn is not None:
                if self.checkpoint_interval > 0 and self.gone is None:
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
