"""A PostgreSQL database of the tests' own: created on the server at ``ZC_TEST_POSTGRES``, dropped at the end.

Every test that asks for :func:`postgres_url` gets the database with no ``zeroclick_`` tables. Tests
skip, saying why, when psycopg is not installed or no server answers.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

#: an administrative connection to the server; the tests only ever create and drop their own database
ADMIN = os.environ.get("ZC_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")


def admin() -> object:
    psycopg = pytest.importorskip("psycopg", reason="psycopg not installed: pip install -e '.[postgres]'")
    try:
        return psycopg.connect(ADMIN, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        pytest.skip(f"no PostgreSQL server answers at {ADMIN} (set ZC_TEST_POSTGRES): {str(exc).strip()}")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """The URL of a new, empty database, dropped when the session ends."""
    name = f"zc_test_{uuid.uuid4().hex[:12]}"
    conn = admin()
    conn.execute(f"CREATE DATABASE {name}")  # type: ignore[attr-defined]
    # a test database need not survive a server crash: commits without waiting for the disk, as on tmpfs
    conn.execute(f"ALTER DATABASE {name} SET synchronous_commit = off")  # type: ignore[attr-defined]
    try:
        yield ADMIN.rsplit("/", 1)[0] + "/" + name
    finally:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")  # type: ignore[attr-defined]
        conn.close()  # type: ignore[attr-defined]


@pytest.fixture
def postgres_url(postgres_server: str) -> str:
    """The tests' database, with no ``zeroclick_`` tables left by an earlier test."""
    import psycopg

    with psycopg.connect(postgres_server, autocommit=True) as conn:
        for (table,) in conn.execute("SELECT tablename FROM pg_tables WHERE tablename LIKE 'zeroclick%'").fetchall():
            conn.execute(f"DROP TABLE {table}")
    return postgres_server
