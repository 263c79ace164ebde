"""Which file is the store: the identity a SQLite store's processes check before trusting the file at its path.

A process keeps its connection to the *inode* it opened. If the file is
deleted, or another file is moved over its path, that process would keep
writing to a file nobody else reads, and a process started afterwards would
create a fresh, empty store at the path: two stores, and every buyer's
allowance granted twice. So:

* Each store file holds a random id (table ``zc_identity``), and the first
  process that opens it writes a *record* beside it, ``.<name>.zc-identity``
  (JSON: that id and the file's inode number). A dot-file, so that
  ``rm zeroclick.db*`` leaves it: the record is what tells "first start,
  create the store" from "it was there and vanished".
* A process opening the store compares the file with the record: no file
  where the record says there was one, or another file (id or inode), and
  the process answers "unavailable" instead of creating or adopting it.
* A running process checks after every commit that its path still names the
  inode it wrote to (one ``stat``); the write is then reported as failed, never
  acknowledged.
* Only an operator moves the record to another file (``zc-middleware
  ledger-restore``); processes that were refusing then reconnect by themselves.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import sqlite3
from dataclasses import dataclass

__all__ = ["Record", "file_id", "inode", "read_record", "record_path", "write_record"]

log = logging.getLogger("zc_middleware")

_TABLE = "CREATE TABLE IF NOT EXISTS zc_identity (id TEXT NOT NULL)"


@dataclass(frozen=True)
class Record:
    """What the record beside a store says: the store's id and the inode number of its file."""

    id: str
    inode: int


def record_path(path: str) -> str:
    folder, name = os.path.split(path)
    return os.path.join(folder, f".{name}.zc-identity")


def read_record(path: str) -> Record | None:
    """The record of the store at ``path``, ``None`` if there is none (or it cannot be read)."""
    try:
        with open(record_path(path), encoding="utf-8") as f:
            data = json.load(f)
        return Record(str(data["id"]), int(data["inode"]))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("zc_middleware: ignoring the unreadable identity record %s: %s", record_path(path), exc)
        return None


def write_record(path: str, record: Record) -> None:
    """Write the record atomically (a temporary file renamed over it)."""
    target = record_path(path)
    temporary = f"{target}.{os.getpid()}.tmp"
    with open(temporary, "w", encoding="utf-8") as f:
        json.dump({"id": record.id, "inode": record.inode, "path": path}, f)
    os.replace(temporary, target)


def file_id(conn: sqlite3.Connection) -> str:
    """The store's id, created on first use; call inside a write transaction."""
    conn.execute(_TABLE)
    row = conn.execute("SELECT id FROM zc_identity LIMIT 1").fetchone()
    if row is not None:
        return str(row[0])
    new = secrets.token_hex(16)
    conn.execute("INSERT INTO zc_identity (id) VALUES (?)", (new,))
    return new


def inode(path: str) -> tuple[int, int] | None:
    """``(st_dev, st_ino)`` of the file at ``path``, ``None`` when there is none."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino
