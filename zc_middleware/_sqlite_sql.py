"""SQLite primitives with no state, shared by every store in an SQLite file: the ``sqlite:///`` URL
rule, one ``BEGIN IMMEDIATE`` write, and telling a lock in the way (:data:`BUSY`) from a real error."""

from __future__ import annotations

import enum
import math
import sqlite3
from collections.abc import Callable
from typing import Final, TypeVar
from urllib.parse import parse_qs

from .errors import ConfigError

__all__ = ["BUSY", "PREFIX", "is_busy", "parse_url", "sqlite_path", "write_transaction"]

T = TypeVar("T")
PREFIX: Final = "sqlite:///"


def sqlite_path(url: str, kind: str) -> str:
    """``sqlite:///rel.db`` -> ``rel.db``; ``sqlite:////abs/x.db`` -> ``/abs/x.db``; else
    :class:`ConfigError` ``invalid_<kind>_url``."""
    return parse_url(url, kind)[0]


def parse_url(url: str, kind: str) -> tuple[str, dict[str, float]]:
    """The path and the options of a ``sqlite:///path.db[?busy_timeout=SECONDS]`` URL."""
    if not url.startswith(PREFIX) or len(url) == len(PREFIX):
        raise ConfigError(f"invalid_{kind}_url", f"{url!r}: write sqlite:///relative.db or sqlite:////absolute.db")
    path, _, query = url[len(PREFIX) :].partition("?")
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
