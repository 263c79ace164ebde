"""Only the middleware speaks the contract's headers, on every adapter under its real server.

The proxy bills from ``X-ZeroClick-Usage`` and reads ``X-ZeroClick-Reason`` as a
refusal, so an app that sets them itself (relaying an upstream response, or by
mistake) must never get them out: not on a free route, not on a paid 200, not
on a paid route's own 402.
"""

from __future__ import annotations

from tests.conftest import Served
from tests.test_scenarios import get, new_buyer, settled

CONTRACT = ("x-zeroclick-usage", "x-zeroclick-reason")


def test_a_free_route_relaying_the_contracts_headers_sends_neither(served: Served) -> None:
    buyer = new_buyer(served)
    response = get(served, "/relay", buyer)
    assert response.status_code == 200, response.text
    assert response.text == "relay"
    assert [name for name in CONTRACT if name in response.headers] == []
    assert settled(served, buyer, "api-requests", 0) == 0


def test_a_paid_200_carries_only_our_usage_header(served: Served) -> None:
    buyer = new_buyer(served)
    response = get(served, "/reasoned", buyer)
    assert response.status_code == 200, response.text
    assert response.headers.get_list("x-zeroclick-usage") == ["api-requests=1"]
    assert "x-zeroclick-reason" not in response.headers
    assert settled(served, buyer, "api-requests", 1) == 1


def test_an_apps_own_402_is_not_a_refusal_the_proxy_reads(served: Served) -> None:
    buyer = new_buyer(served)
    response = get(served, "/refused", buyer)
    assert response.status_code == 402
    assert [name for name in CONTRACT if name in response.headers] == []
    assert settled(served, buyer, "api-requests", 0) == 0


def test_the_gates_own_402_keeps_its_reason(served: Served) -> None:
    buyer = new_buyer(served)
    for _ in range(5):  # the plan's limit
        assert get(served, "/reasoned", buyer).status_code == 200
    response = get(served, "/reasoned", buyer)
    assert response.status_code == 402
    assert response.headers.get_list("x-zeroclick-reason") == ["usage_exhausted"]
    assert "x-zeroclick-usage" not in response.headers
