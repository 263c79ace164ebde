"""The file an SQLite store uses, as this process sees it: its connection and checkpoint thread, and
whether the path still names it.

A connection is opened only to the file the store is (:attr:`StoreFile.identity`); a write looks at the
path at most once per :data:`WATCH_INTERVAL` (:meth:`StoreFile.written`), and a store whose file was
deleted or replaced writes nothing until its own file is back or an operator restores one
(:meth:`StoreFile.usable`). Opening at start-up and the calls that use the file are
:class:`~zc_middleware._sqlite.Database`'s.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import weakref
from collections.abc import Callable
from time import monotonic
from typing import Final
from urllib.parse import quote

from ._sqlite_identity import file_id, inode, read_record
from ._sqlite_sql import parse_url, write_transaction
from .errors import ZcError

__all__ = ["WATCH_INTERVAL", "StoreFile"]

log = logging.getLogger("zc_middleware")
#: seconds between two looks of a process's writes at whether the path still names the store's file
WATCH_INTERVAL: Final = 0.05

_instances: weakref.WeakSet[StoreFile] = weakref.WeakSet()


def _after_fork() -> None:
    for database in list(_instances):
        database.forget_process_state()


os.register_at_fork(after_in_child=_after_fork)


class StoreFile:
    """One SQLite file as this process uses it: a lazily opened connection behind :attr:`lock`, a
    checkpoint thread, and the file's identity."""

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
        path, options = parse_url(url, kind)
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

    # -- connecting ----------------------------------------------------------------
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
