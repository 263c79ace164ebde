"""Entitlement writes, on every ledger backend: ZeroClick's word on a buyer's plan, applied once, in order."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from contextlib import closing
from datetime import datetime, timezone
from pathlib import Path

import pytest

from tests.ledger import test_contract as contract
from tests.ledger.test_contract import JAN_31, Clock, hold
from tests.postgres_db import postgres_server, postgres_url  # noqa: F401  (fixtures)
from zc_middleware import Ledger, ZcError, open_ledger
from zc_middleware.ledger import Entitlement, Refusal, _redis_lua

# the contract suite's fixtures: every backend, a clock the test moves, a ledger on the contract's plans
url, clock, ledger = contract.url, contract.clock, contract.ledger

JAN_1 = datetime(2026, 1, 1, tzinfo=timezone.utc).timestamp()
FEB_1 = datetime(2026, 2, 1, tzinfo=timezone.utc).timestamp()
MAR_1 = datetime(2026, 3, 1, tzinfo=timezone.utc).timestamp()


def write(
    version: int, status: str = "active", *, plan: str = "starter", start: float = JAN_1, **kw: object
) -> Entitlement:
    fields: dict[str, object] = {
        "buyer": "agent-7",
        "plan": plan,
        "status": status,
        "period_start": start,
        "period_end": kw.pop("end", None),
        "version": version,
        "key": kw.pop("key", f"evt-{version}"),
        "kid": "k1",
    }
    return Entitlement(**fields)  # type: ignore[arg-type]


def refused(ledger: Ledger, amount: int = 1) -> str:
    result = ledger.reserve("agent-7", {"api-requests": amount})
    assert isinstance(result, Refusal), result
    return result.reason


def test_an_active_write_serves_the_plan_anchored_at_its_period_start(ledger: Ledger) -> None:
    assert ledger.apply_entitlement(write(1, plan="pro")) == "applied"
    hold(ledger.reserve("agent-7", {"api-requests": 1000}))
    assert refused(ledger) == "usage_exhausted"
    balance = ledger.balance("agent-7")
    assert (balance.plan, balance.status) == ("pro", "active")
    assert balance.meter("api-requests").period_start == datetime(2026, 1, 1, tzinfo=timezone.utc)


def test_a_later_period_brings_fresh_units_and_the_same_period_keeps_what_was_used(ledger: Ledger) -> None:
    ledger.apply_entitlement(write(1, end=FEB_1))
    hold(ledger.reserve("agent-7", {"api-requests": 50}))
    assert refused(ledger) == "usage_exhausted"
    assert ledger.apply_entitlement(write(2, end=FEB_1)) == "applied"  # same period: nothing given back
    assert refused(ledger) == "usage_exhausted"
    assert ledger.apply_entitlement(write(3, start=JAN_31, end=MAR_1)) == "applied"  # the next period
    hold(ledger.reserve("agent-7", {"api-requests": 50}))
    assert ledger.balance("agent-7").meter("api-requests").used == 50


def test_a_period_with_an_end_expires_there(ledger: Ledger, clock: Clock) -> None:
    ledger.apply_entitlement(write(1, end=FEB_1))
    hold(ledger.reserve("agent-7", {"api-requests": 1}))
    clock.now = FEB_1
    assert refused(ledger) == "plan_expired"


def test_suspended_is_the_spend_cap_until_an_active_write_lifts_it_without_resetting(ledger: Ledger) -> None:
    ledger.apply_entitlement(write(1))
    hold(ledger.reserve("agent-7", {"api-requests": 30}))
    assert ledger.apply_entitlement(write(2, "suspended")) == "applied"
    assert refused(ledger) == "spend_cap_reached"
    assert ledger.balance("agent-7").status == "capped"
    ledger.apply_entitlement(write(3))
    assert ledger.balance("agent-7").meter("api-requests").used == 30
    hold(ledger.reserve("agent-7", {"api-requests": 20}))
    assert refused(ledger) == "usage_exhausted"


def test_closed_ends_the_plan_until_a_new_active_write(ledger: Ledger) -> None:
    ledger.apply_entitlement(write(1))
    ledger.apply_entitlement(write(2, "closed"))
    assert refused(ledger) == "plan_expired"
    ledger.apply_entitlement(write(3, start=JAN_31))
    hold(ledger.reserve("agent-7", {"api-requests": 1}))


def test_older_or_equal_versions_and_repeated_keys_change_nothing(ledger: Ledger) -> None:
    assert ledger.apply_entitlement(write(5)) == "applied"
    assert ledger.apply_entitlement(write(4, "suspended")) == "stale"
    assert ledger.apply_entitlement(write(5, "closed", key="evt-other")) == "stale"
    assert ledger.apply_entitlement(write(9, "closed", key="evt-5")) == "duplicate"
    hold(ledger.reserve("agent-7", {"api-requests": 1}))
    assert [c.version for c in ledger.history("agent-7")] == [5]


def test_a_plan_change_mid_period_keeps_usage_under_the_new_limit(ledger: Ledger) -> None:
    ledger.apply_entitlement(write(1))
    hold(ledger.reserve("agent-7", {"api-requests": 50}))
    assert refused(ledger) == "usage_exhausted"
    ledger.apply_entitlement(write(2, plan="pro"))
    meter = ledger.balance("agent-7").meter("api-requests")
    assert (meter.limit, meter.used) == (1000, 50)
    hold(ledger.reserve("agent-7", {"api-requests": 950}))
    assert refused(ledger) == "usage_exhausted"


def test_history_records_each_applied_write(ledger: Ledger, clock: Clock) -> None:
    ledger.apply_entitlement(write(1))
    clock.advance(seconds=10)
    ledger.apply_entitlement(write(2, "suspended"))
    ledger.apply_entitlement(write(2, "closed", key="evt-x"))  # stale: not recorded
    history = ledger.history("agent-7")
    assert [(c.version, c.kid, c.key, c.at) for c in history] == [
        (1, "k1", "evt-1", JAN_31),
        (2, "k1", "evt-2", JAN_31 + 10),
    ]
    assert "plan starter" in history[0].change and "suspended" in history[1].change
    assert ledger.history("nobody") == ()


def test_an_unknown_plan_is_refused_and_changes_nothing(ledger: Ledger) -> None:
    with pytest.raises(ZcError, match="unknown_plan"):
        ledger.apply_entitlement(write(1, plan="platinum"))
    assert ledger.history("agent-7") == ()
    assert ledger.apply_entitlement(write(1)) == "applied"  # the version was not used up


def test_concurrent_writes_of_one_version_apply_once(ledger: Ledger) -> None:
    outcomes: list[str] = []
    barrier = threading.Barrier(8)

    def push(i: int) -> None:
        barrier.wait()
        outcomes.append(ledger.apply_entitlement(write(1, key=f"evt-{i}")))

    threads = [threading.Thread(target=push, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["applied"] + ["stale"] * 7
    assert len(ledger.history("agent-7")) == 1


def test_concurrent_async_writes_of_one_version_apply_once(ledger: Ledger) -> None:
    async def push() -> list[str]:
        try:
            return list(await asyncio.gather(*(ledger.aapply_entitlement(write(1, key=f"evt-{i}")) for i in range(8))))
        finally:
            await ledger.aclose()

    assert sorted(asyncio.run(push())) == ["applied"] + ["stale"] * 7


def test_manual_plan_changes_leave_the_history_and_the_version_alone(ledger: Ledger) -> None:
    ledger.apply_entitlement(write(3))
    ledger.mark_spend_cap_reached("agent-7")
    assert refused(ledger) == "spend_cap_reached"
    ledger.assign_plan("agent-7", "pro")
    hold(ledger.reserve("agent-7", {"api-requests": 100}))
    assert [c.version for c in ledger.history("agent-7")] == [3]
    assert ledger.apply_entitlement(write(3, "suspended", key="evt-again")) == "stale"
    assert ledger.apply_entitlement(write(4, "suspended")) == "applied"
    assert refused(ledger) == "spend_cap_reached"


def test_redis_keeps_the_last_writes_and_never_forgets_the_last_version(redis_url: str) -> None:
    kept = _redis_lua.HISTORY_KEPT
    ledger = open_ledger(redis_url, plans=contract.PLANS, clock=Clock())
    try:
        for version in range(1, kept + 6):
            assert ledger.apply_entitlement(write(version)) == "applied"
        history = ledger.history("agent-7")
        assert [c.version for c in history] == list(range(6, kept + 6))
        assert ledger.apply_entitlement(write(1, "closed")) == "stale"  # trimmed from the history: still ignored
        assert ledger.apply_entitlement(write(kept + 9, "closed", key="evt-6")) == "duplicate"
        hold(ledger.reserve("agent-7", {"api-requests": 1}))
    finally:
        ledger.close()


_OLD_SQLITE_SCHEMA = """
CREATE TABLE zc_accounts (
    buyer TEXT PRIMARY KEY, plan TEXT NOT NULL, anchor REAL NOT NULL, expires_at REAL, status TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE zc_balances (
    buyer TEXT NOT NULL, meter TEXT NOT NULL, period_start REAL NOT NULL, period_end REAL, used INTEGER NOT NULL,
    lim INTEGER, live INTEGER NOT NULL, expires_at REAL, PRIMARY KEY (buyer, meter)
) WITHOUT ROWID;
"""


def test_a_sqlite_file_from_before_entitlement_writes_takes_them(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with closing(sqlite3.connect(path)) as conn, conn:
        conn.executescript(_OLD_SQLITE_SCHEMA)
        conn.execute("INSERT INTO zc_accounts VALUES ('agent-7', 'starter', ?, NULL, 'active')", (JAN_1,))
        row = ("agent-7", "api-requests", JAN_1, FEB_1, 40, 50, 1, None)
        conn.execute("INSERT INTO zc_balances VALUES (?, ?, ?, ?, ?, ?, ?, ?)", row)
    ledger = open_ledger(f"sqlite:///{path}", plans=contract.PLANS, clock=Clock())
    try:
        assert ledger.history("agent-7") == ()
        assert ledger.apply_entitlement(write(1, plan="pro")) == "applied"  # the same period: usage kept
        assert ledger.balance("agent-7").meter("api-requests").used == 40
        assert [c.change for c in ledger.history("agent-7")] == ["plan starter -> pro"]
    finally:
        ledger.close()


@pytest.mark.parametrize("before", [2**60, 2**53 + 1, -5])
def test_versions_beyond_double_precision_still_order(ledger: Ledger, before: int) -> None:
    assert ledger.apply_entitlement(write(before)) == "applied"
    assert ledger.apply_entitlement(write(before - 1, "closed")) == "stale"
    assert ledger.apply_entitlement(write(before, "closed", key="evt-same")) == "stale"
    assert ledger.apply_entitlement(write(before + 1, "suspended")) == "applied"
    assert refused(ledger) == "spend_cap_reached"


def test_a_postgresql_ledger_from_before_entitlement_writes_takes_them(postgres_url: str) -> None:  # noqa: F811
    import psycopg

    ledger = open_ledger(postgres_url, plans=contract.PLANS, clock=Clock())
    try:
        hold(ledger.reserve("agent-7", {"api-requests": 40}))
    finally:
        ledger.close()
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("DROP TABLE zeroclick_plan_history")  # as a database from before has them
    ledger = open_ledger(postgres_url, plans=contract.PLANS, clock=Clock(), create=False)
    try:
        assert ledger.history("agent-7") == ()
        assert ledger.apply_entitlement(write(1, plan="pro", start=JAN_31)) == "applied"  # the default plan's anchor
        assert ledger.balance("agent-7").meter("api-requests").used == 40
        assert [c.change for c in ledger.history("agent-7")] == ["plan starter -> pro"]
    finally:
        ledger.close()
