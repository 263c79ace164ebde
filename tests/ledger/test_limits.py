"""Settings are the truth for limits: a process opened with a changed plan decides with it at once,
on every backend that outlives a process, whatever the rows written under the old limit say."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.ledger.test_contract import Clock, hold
from tests.postgres_db import postgres_server, postgres_url  # noqa: F401  (fixtures)
from zc_middleware import open_ledger
from zc_middleware.ledger import Refusal


def plans(limit: int) -> dict[str, object]:
    return {"starter": {"default": True, "includes": {"api-requests": {"limit": limit, "reset": "month"}}}}


@pytest.fixture(params=["sqlite", "redis", "redis-cluster", "postgresql"])
def shared_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param.startswith("redis"):
        return str(request.getfixturevalue(request.param.replace("-", "_") + "_url"))
    if request.param == "postgresql":
        return str(request.getfixturevalue("postgres_url"))
    return f"sqlite:///{tmp_path / 'ledger.db'}"


def test_a_lowered_or_raised_limit_applies_to_the_next_check_of_a_process_started_with_it(shared_url: str) -> None:
    clock = Clock()
    old = open_ledger(shared_url, plans=plans(50), clock=clock)
    for _ in range(20):
        hold(old.reserve("b", {"api-requests": 1}))
    lowered = open_ledger(shared_url, plans=plans(10), clock=clock)
    raised = open_ledger(shared_url, plans=plans(25), clock=clock)
    try:
        refusal = lowered.reserve("b", {"api-requests": 1})
        assert isinstance(refusal, Refusal) and refusal.reason == "usage_exhausted"
        assert lowered.balance("b").meter("api-requests").limit == 10
        for _ in range(5):
            hold(raised.reserve("b", {"api-requests": 1}))
        assert isinstance(raised.reserve("b", {"api-requests": 1}), Refusal)
        assert raised.balance("b").meter("api-requests").used == 25
        # the process still running with the old settings decides with them until it restarts (documented)
        hold(old.reserve("b", {"api-requests": 1}))
    finally:
        for ledger in (old, lowered, raised):
            ledger.close()


def test_a_sqlite_file_from_an_older_version_is_debited_to_this_process_limit(tmp_path: Path) -> None:
    """Rows written before balance rows named their plan: the first debit takes the slow path and
    names it, the next ones the fast one, all against this process's limit."""
    import sqlite3
    from contextlib import closing

    from tests.ledger.test_entitlements import _OLD_SQLITE_SCHEMA

    path = tmp_path / "old.db"
    clock = Clock()
    with closing(sqlite3.connect(path)) as conn, conn:
        conn.executescript(_OLD_SQLITE_SCHEMA)
        conn.execute("INSERT INTO zc_accounts VALUES ('b', 'starter', ?, NULL, 'active')", (clock.now,))
        conn.execute(
            "INSERT INTO zc_balances VALUES ('b', 'api-requests', ?, NULL, 40, 500, 1, NULL)",  # a stale copied limit
            (clock.now,),
        )
    ledger = open_ledger(f"sqlite:///{path}", plans=plans(50), clock=clock)
    try:
        for _ in range(10):
            hold(ledger.reserve("b", {"api-requests": 1}))
        assert isinstance(ledger.reserve("b", {"api-requests": 1}), Refusal)
        assert ledger.balance("b").meter("api-requests").used == 50
    finally:
        ledger.close()
