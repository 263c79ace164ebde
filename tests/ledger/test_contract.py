"""The contract every ledger backend passes: one suite, parametrised over backend URLs."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from tests.postgres_db import postgres_server, postgres_url  # noqa: F401  (fixtures)
from zc_middleware import Ledger, ZcError, open_ledger
from zc_middleware.ledger import Hold, Refusal

PLANS = {
    "starter": {
        "default": True,
        "includes": {
            "api-requests": {"limit": 50, "reset": "month"},
            "compute-seconds": {"limit": 100, "reset": "day"},
            "gigabytes": {"limit": None},
        },
    },
    "pro": {"includes": {"api-requests": {"limit": 1000, "reset": "month"}}},
}
JAN_31 = datetime(2026, 1, 31, 12, 0, tzinfo=timezone.utc).timestamp()


class Clock:
    def __init__(self, now: float = JAN_31) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta).total_seconds()


@pytest.fixture(params=["memory", "sqlite", "redis", "redis-cluster", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param.startswith("redis"):  # servers started by tests/ledger/conftest.py
        return str(request.getfixturevalue(request.param.replace("-", "_") + "_url"))
    if request.param == "postgresql":
        return str(request.getfixturevalue("postgres_url"))
    return "memory://" if request.param == "memory" else f"sqlite:///{tmp_path / 'ledger.db'}"


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def ledger(url: str, clock: Clock) -> Iterator[Ledger]:
    led = open_ledger(url, plans=PLANS, clock=clock)
    yield led
    led.close()


def hold(result: Hold | Refusal) -> Hold:
    assert isinstance(result, Hold), result
    return result


def test_reserve_debits_until_the_limit_then_refuses(ledger: Ledger) -> None:
    for _ in range(50):
        hold(ledger.reserve("b", {"api-requests": 1}))
    refusal = ledger.reserve("b", {"api-requests": 1})
    assert isinstance(refusal, Refusal)
    assert refusal.reason == "usage_exhausted"
    assert refusal.meter == "api-requests"
    assert ledger.balance("b").meter("api-requests").used == 50


def test_denied_requests_consume_nothing(ledger: Ledger) -> None:
    hold(ledger.reserve("b", {"api-requests": 40}))
    for _ in range(5):
        assert isinstance(ledger.reserve("b", {"api-requests": 20}), Refusal)
    hold(ledger.reserve("b", {"api-requests": 10}))
    assert ledger.balance("b").meter("api-requests").remaining == 0


def test_several_meters_are_all_or_nothing(ledger: Ledger) -> None:
    hold(ledger.reserve("b", {"compute-seconds": 95}))
    refusal = ledger.reserve("b", {"api-requests": 1, "compute-seconds": 10})
    assert isinstance(refusal, Refusal) and refusal.meter == "compute-seconds"
    balance = ledger.balance("b")
    assert balance.meter("api-requests").used == 0
    assert balance.meter("compute-seconds").used == 95


def test_settle_bills_actual_usage_and_release_returns_the_hold(ledger: Ledger) -> None:
    estimate = hold(ledger.reserve("b", {"compute-seconds": 30}))
    assert ledger.balance("b").meter("compute-seconds").used == 30
    ledger.settle(estimate, {"compute-seconds": 4})
    assert ledger.balance("b").meter("compute-seconds").used == 4
    failed = hold(ledger.reserve("b", {"compute-seconds": 30}))
    ledger.release(failed)
    assert ledger.balance("b").meter("compute-seconds").used == 4


def test_unlimited_meter_and_meter_outside_the_plan(ledger: Ledger) -> None:
    hold(ledger.reserve("b", {"gigabytes": 10**9}))
    ledger.assign_plan("p", "pro")
    refusal = ledger.reserve("p", {"compute-seconds": 1})
    assert isinstance(refusal, Refusal) and refusal.reason == "usage_exhausted"


def test_lazy_reset_is_anchored_and_clamps_month_ends(ledger: Ledger, clock: Clock) -> None:
    hold(ledger.reserve("b", {"api-requests": 50}))  # anchored Jan 31 12:00
    refusal = ledger.reserve("b", {"api-requests": 1})
    assert isinstance(refusal, Refusal)
    feb_28 = datetime(2026, 2, 28, 12, 0, tzinfo=timezone.utc).timestamp()
    assert refusal.retry_after == int(feb_28 - clock.now)
    clock.now = feb_28 - 1
    assert isinstance(ledger.reserve("b", {"api-requests": 1}), Refusal)
    clock.now = feb_28
    hold(ledger.reserve("b", {"api-requests": 1}))
    meter = ledger.balance("b").meter("api-requests")
    assert (meter.used, meter.period_start.day, meter.period_end and meter.period_end.day) == (1, 28, 31)
    clock.now = datetime(2026, 3, 31, 12, 0, tzinfo=timezone.utc).timestamp()  # back on the anchor day: no drift
    hold(ledger.reserve("b", {"api-requests": 50}))
    assert ledger.balance("b").meter("api-requests").period_start.day == 31


def test_daily_meter_resets_after_a_day(ledger: Ledger, clock: Clock) -> None:
    hold(ledger.reserve("b", {"compute-seconds": 100}))
    clock.advance(hours=23, minutes=59)
    assert isinstance(ledger.reserve("b", {"compute-seconds": 1}), Refusal)
    clock.advance(minutes=1)
    hold(ledger.reserve("b", {"compute-seconds": 100}))


def test_a_reservation_timed_just_before_a_reset_keeps_the_new_periods_usage(ledger: Ledger, clock: Clock) -> None:
    hold(ledger.reserve("b", {"compute-seconds": 100}))
    clock.advance(days=1)
    hold(ledger.reserve("b", {"compute-seconds": 60}))  # the new day's period
    clock.advance(seconds=-2)  # a clock read before another thread rolled the period over, or stepped back
    hold(ledger.reserve("b", {"compute-seconds": 30}))
    clock.advance(seconds=2)
    assert ledger.balance("b").meter("compute-seconds").used == 90
    assert isinstance(ledger.reserve("b", {"compute-seconds": 11}), Refusal)


def test_a_first_buyers_racing_check_timed_just_before_the_account_was_created_is_served(
    ledger: Ledger, clock: Clock
) -> None:
    """A new buyer's first requests race: one creates the account anchored at its clock, another read
    the clock a moment earlier (another thread, another host). That one is served in the same
    period, not refused ``plan_expired`` as if the plan had not started."""
    hold(ledger.reserve("b", {"api-requests": 1}))
    clock.advance(seconds=-0.5)
    hold(ledger.reserve("b", {"api-requests": 1}))
    clock.advance(seconds=0.5)
    meter = ledger.balance("b").meter("api-requests")
    assert (meter.used, meter.period_start.timestamp()) == (2, JAN_31)


def test_balance_reports_limit_used_remaining_percent_and_period(ledger: Ledger) -> None:
    hold(ledger.reserve("b", {"api-requests": 10}))
    meter = ledger.balance("b").meter("api-requests")
    assert (meter.limit, meter.used, meter.remaining, meter.percent_used) == (50, 10, 40, 20.0)
    assert meter.period_start == datetime(2026, 1, 31, 12, 0, tzinfo=timezone.utc)
    assert meter.period_end == datetime(2026, 2, 28, 12, 0, tzinfo=timezone.utc)
    assert ledger.balance("b").meter("gigabytes").limit is None


def test_without_a_default_plan_an_unknown_buyer_is_plan_expired(url: str, clock: Clock) -> None:
    led = open_ledger(url, plans={"pro": PLANS["pro"]}, clock=clock)
    try:
        refusal = led.reserve("stranger", {"api-requests": 1})
        assert isinstance(refusal, Refusal) and refusal.reason == "plan_expired"
        assert led.balance("stranger").status == "none"
        led.assign_plan("stranger", "pro")
        hold(led.reserve("stranger", {"api-requests": 1}))
    finally:
        led.close()


def test_assign_expire_and_spend_cap(ledger: Ledger, clock: Clock) -> None:
    hold(ledger.reserve("b", {"api-requests": 50}))
    ledger.assign_plan("b", "pro", expires_at=datetime.fromtimestamp(clock.now + 3600, timezone.utc))
    hold(ledger.reserve("b", {"api-requests": 500}))  # a new plan starts with fresh allowances
    assert ledger.balance("b").plan == "pro"
    clock.advance(hours=1)
    refusal = ledger.reserve("b", {"api-requests": 1})
    assert isinstance(refusal, Refusal) and refusal.reason == "plan_expired"
    ledger.assign_plan("b", "starter")
    hold(ledger.reserve("b", {"api-requests": 1}))  # a balance the next reservation could reuse
    ledger.mark_spend_cap_reached("b")
    refusal = ledger.reserve("b", {"api-requests": 1})
    assert isinstance(refusal, Refusal) and refusal.reason == "spend_cap_reached"
    assert ledger.balance("b").status == "capped"
    ledger.assign_plan("b", "starter")
    hold(ledger.reserve("b", {"api-requests": 1}))
    ledger.expire_plan("b")
    refusal = ledger.reserve("b", {"api-requests": 1})
    assert isinstance(refusal, Refusal) and refusal.reason == "plan_expired"


def test_a_plan_starting_later_serves_from_its_start(ledger: Ledger, clock: Clock) -> None:
    ledger.assign_plan("b", "pro", starts_at=datetime.fromtimestamp(clock.now + 3600, timezone.utc))
    assert ledger.balance("b").status == "not_started"
    assert "plan pro (not started)" in ledger.balance("b").as_table()
    refusal = ledger.reserve("b", {"api-requests": 1})
    assert isinstance(refusal, Refusal) and refusal.reason == "plan_expired"  # no plan serving yet
    clock.advance(hours=1)
    hold(ledger.reserve("b", {"api-requests": 1}))
    assert ledger.balance("b").status == "active"


def test_admin_errors_are_clear(ledger: Ledger) -> None:
    with pytest.raises(ZcError, match="unknown_plan"):
        ledger.assign_plan("b", "platinum")
    with pytest.raises(ZcError, match=r"plan 'por' is not declared in settings.plans \(did you mean 'pro'\?\)"):
        ledger.assign_plan("b", "por")
    with pytest.raises(ZcError, match="timezone-aware"):
        ledger.assign_plan("b", "pro", expires_at=datetime(2030, 1, 1))
    # ids no request could ever carry: the middleware would answer 401 to every one of them
    for buyer in ["", "two words", "agent-1 ", "a,b", "x" * 257]:
        with pytest.raises(ZcError, match="invalid_buyer"):
            ledger.assign_plan(buyer, "pro")
        with pytest.raises(ZcError, match="invalid_buyer"):
            ledger.mark_spend_cap_reached(buyer)
    with pytest.raises(ZcError, match="invalid_dates"):
        ledger.assign_plan(
            "b",
            "pro",
            starts_at=datetime(2030, 1, 1, tzinfo=timezone.utc),
            expires_at=datetime(2029, 1, 1, tzinfo=timezone.utc),
        )
    assert ledger.balance("b").plan == "starter"  # nothing of the above was stored


def test_two_hundred_threads_against_fifty_units_give_exactly_fifty(url: str, clock: Clock) -> None:
    # what is tested is that no unit is granted twice, not how long 200 threads queue for a pooled
    # connection on a loaded 2-core machine: a generous per-call timeout, so that no call gives up
    ledger = open_ledger(url, plans=PLANS, clock=clock, timeout=30)
    results: list[Hold | Refusal] = []
    lock = threading.Lock()
    barrier = threading.Barrier(200)

    def worker() -> None:
        barrier.wait()
        result = ledger.reserve("crowd", {"api-requests": 1})
        with lock:
            results.append(result)

    threads = [threading.Thread(target=worker) for _ in range(200)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert sum(isinstance(r, Hold) for r in results) == 50
        assert ledger.balance("crowd").meter("api-requests").used == 50
    finally:
        ledger.close()
