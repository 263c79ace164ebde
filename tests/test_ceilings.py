"""Usage recorded past a route's estimate, on every adapter under its real server: billed at the
estimate, so concurrency cannot take a buyer's ``used`` past the plan's limit."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.apps.common import SCENARIO_PLANS
from tests.conftest import Served
from tests.test_scenarios import get, new_buyer
from zc_middleware import Ledger, open_ledger


@pytest.fixture(scope="module")
def ledger(served: Served) -> Iterator[Ledger]:
    """The served app's ledger, with the plans that include ``cpu-seconds``."""
    opened = open_ledger(served.ledger.url, plans=SCENARIO_PLANS)
    yield opened
    opened.close()


def settled(ledger: Ledger, buyer: str) -> int:
    """``used`` of cpu-seconds once the settles are done. Holds count as used from the check on, so the
    value to watch is the one after the servers settled (after the body went out, WSGI servers in
    ``close()``): billing past the estimate would show within this wait."""
    time.sleep(0.5)
    return ledger.balance(buyer).meter("cpu-seconds").used


def test_usage_past_the_estimate_is_billed_at_the_estimate_under_concurrency(served: Served, ledger: Ledger) -> None:
    """``GET /overuse`` holds 5 cpu-seconds and records 40; the plan has 50. 100 at once: exactly 10
    are served, each says and is billed 5, and the other 90 get 402 (the handler never ran)."""
    buyer = new_buyer(served)
    with ThreadPoolExecutor(50) as pool:
        responses = list(pool.map(lambda _: get(served, "/overuse", buyer), range(100)))
    assert Counter(r.status_code for r in responses) == {200: 10, 402: 90}
    assert {r.headers.get("x-zeroclick-usage") for r in responses if r.status_code == 200} == {"cpu-seconds=5"}
    assert {r.headers.get("x-zeroclick-reason") for r in responses if r.status_code == 402} == {"usage_exhausted"}
    assert settled(ledger, buyer) == 50
    assert get(served, "/overuse", buyer).status_code == 402  # and it stays there


def test_one_request_recording_far_past_its_estimate_is_billed_the_estimate(served: Served, ledger: Ledger) -> None:
    buyer = new_buyer(served)
    response = get(served, "/overuse", buyer)
    assert (response.status_code, response.headers["x-zeroclick-usage"]) == (200, "cpu-seconds=5")
    assert settled(ledger, buyer) == 5
