"""Entitlement writes, on every ledger backend: ZeroClick's word on a buyer's plan, applied once, in order."""

from __future__ import annotations

import threading
from datetime import datetime, timezone

import pytest

from tests.ledger import test_contract as contract
from tests.ledger.test_contract import JAN_31, Clock, hold
from tests.postgres_db import postgres_server, postgres_url  # noqa: F401  (fixtures)
from zc_middleware import Ledger, ZcError
from zc_middleware.ledger import Entitlement, Refusal

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
