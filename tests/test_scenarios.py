"""The one scenario suite every adapter runs, against a real server and a real SQLite file.

A behaviour that differs between adapters is a bug: add the adapter to
``tests/servers.py`` and it runs all of these.
"""

from __future__ import annotations

import itertools
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from tests.apps.common import CHUNKS
from tests.conftest import Served

_ids = itertools.count()


def new_buyer(served: Served) -> str:
    return f"buyer-{served.name}-{next(_ids)}"


def get(served: Served, path: str, buyer: str | None = None, method: str = "GET") -> httpx.Response:
    headers = {"zc-agent-id": buyer} if buyer else {}
    return httpx.request(method, served.base + path, headers=headers, timeout=10)


def runs(served: Served, buyer: str, what: str) -> int:
    return int(httpx.get(served.base + "/runs", timeout=10).json().get(f"{buyer}:{what}", 0))


def used(served: Served, buyer: str, meter: str) -> int:
    return served.ledger.balance(buyer).meter(meter).used


def settled(served: Served, buyer: str, meter: str, expected: int) -> int:
    """``used``, waiting up to 5 s for ``expected``: servers settle a hold when the body is done
    (uvicorn after the app returns, WSGI servers in ``close()``), just after the client read its last byte."""
    deadline = time.monotonic() + 5
    while (value := used(served, buyer, meter)) != expected and time.monotonic() < deadline:
        time.sleep(0.01)
    return value


def test_free_route_needs_no_identity_and_reports_nothing(served: Served) -> None:
    response = get(served, "/free")
    assert response.status_code == 200
    assert response.text == "free"
    assert "x-zeroclick-usage" not in response.headers
    assert "private" not in response.headers.get("cache-control", "")  # free routes are left alone


def test_record_usage_in_a_free_handler_is_outside_a_request(served: Served) -> None:
    buyer = new_buyer(served)
    assert get(served, "/free", buyer).status_code == 200
    assert runs(served, buyer, "free:outside_request") == 1


def test_paid_route_reports_usage_and_debits_the_ledger(served: Served) -> None:
    buyer = new_buyer(served)
    response = get(served, "/search", buyer)
    assert response.status_code == 200, response.text
    # the handler set its own usage header: ours replaces it, once
    assert response.headers.get_list("x-zeroclick-usage") == ["api-requests=1"]
    assert used(served, buyer, "api-requests") == 1


def test_paid_responses_are_private_to_caches(served: Served) -> None:
    """A shared cache replaying a paid response would serve it without the plan check."""
    buyer = new_buyer(served)
    # /search said ``public, max-age=60`` itself: it may be kept, but only by the buyer's own client
    search = get(served, "/search", buyer)
    assert search.headers.get_list("cache-control") == ["private, max-age=60"]
    assert "cdn-cache-control" not in search.headers
    render = get(served, "/render", buyer, method="POST")
    assert render.headers.get_list("cache-control") == ["private"]


def test_missing_identity_is_401_and_reserves_nothing(served: Served) -> None:
    response = get(served, "/search")
    assert response.status_code == 401
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["error"] == "buyer_identity_required"
    assert "x-zeroclick-usage" not in response.headers
    assert runs(served, "None", "search") == 0


def test_two_identities_are_not_a_buyer(served: Served) -> None:
    """WSGI servers and Django join a repeated header with a comma: every adapter refuses the pair
    rather than bill either buyer, or a made-up ``a,b`` on a fresh default plan."""
    buyer = new_buyer(served)
    headers = [("zc-agent-id", buyer), ("zc-agent-id", buyer + "-other")]
    response = httpx.get(served.base + "/search", headers=headers, timeout=10)
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_buyer_identity"
    assert runs(served, buyer, "search") == 0
    assert used(served, buyer, "api-requests") == 0


def test_exhausted_plan_answers_402_without_running_the_handler(served: Served) -> None:
    buyer = new_buyer(served)
    for _ in range(5):
        assert get(served, "/search", buyer).status_code == 200
    response = get(served, "/search", buyer)
    assert response.status_code == 402
    assert response.headers["x-zeroclick-reason"] == "usage_exhausted"
    assert response.headers["cache-control"] == "no-store"
    assert int(response.headers["retry-after"]) > 0
    assert "x-zeroclick-usage" not in response.headers
    body = response.json()
    assert body["error"] == "payment_required"
    assert body["reason"] == "usage_exhausted"
    assert body["meter"] == "api-requests"
    assert body["extendUrl"] == "https://acme-search.pay.zeroclick.io/extend"
    assert runs(served, buyer, "search") == 5
    assert used(served, buyer, "api-requests") == 5


def test_estimate_is_checked_and_recorded_usage_is_billed(served: Served) -> None:
    buyer = new_buyer(served)
    response = get(served, "/render", buyer, method="POST")
    assert response.status_code == 200, response.text
    assert response.headers["x-zeroclick-usage"] == "compute-seconds=4"
    assert settled(served, buyer, "compute-seconds", 4) == 4


def test_estimate_must_be_covered_before_the_handler_runs(served: Served) -> None:
    buyer = new_buyer(served)
    for _ in range(18):  # 18 * 4 = 72 used; 28 left < estimate of 30
        assert get(served, "/render", buyer, method="POST").status_code == 200
    response = get(served, "/render", buyer, method="POST")
    assert response.status_code == 402
    assert response.json()["meter"] == "compute-seconds"
    assert runs(served, buyer, "render") == 18
    assert settled(served, buyer, "compute-seconds", 72) == 72


def test_exception_releases_the_hold(served: Served) -> None:
    buyer = new_buyer(served)
    response = get(served, "/fail", buyer)
    assert response.status_code == 500
    assert "x-zeroclick-usage" not in response.headers
    assert runs(served, buyer, "fail") == 1
    assert settled(served, buyer, "api-requests", 0) == 0


def test_error_response_releases_the_hold_and_bills_nothing(served: Served) -> None:
    buyer = new_buyer(served)
    response = get(served, "/missing", buyer)
    assert response.status_code == 404
    assert "not here" in response.text
    # the handler set its own usage header: on a paid route it never reaches the proxy, which would bill it
    assert "x-zeroclick-usage" not in response.headers
    assert response.headers["cache-control"] == "private, max-age=60"
    assert settled(served, buyer, "api-requests", 0) == 0


def test_streaming_keeps_chunks_and_sends_the_header_once(served: Served) -> None:
    buyer = new_buyer(served)
    with httpx.stream("GET", served.base + "/stream", headers={"zc-agent-id": buyer}, timeout=10) as response:
        chunks = b"".join(response.iter_bytes())
        assert response.status_code == 200
        assert response.headers.get_list("x-zeroclick-usage") == ["api-requests=1"]
    assert chunks == b"".join(CHUNKS)
    assert used(served, buyer, "api-requests") == 1


def test_routes_in_settings_are_paid_by_route_name(served: Served) -> None:
    buyer = new_buyer(served)
    response = get(served, "/configured", buyer)
    assert response.status_code == 200
    assert response.headers["x-zeroclick-usage"] == "api-requests=2"
    assert used(served, buyer, "api-requests") == 2


def test_encoded_slash_does_not_bypass_a_paid_route(served: Served) -> None:
    assert get(served, "/a/b").status_code == 401
    encoded = get(served, "/a%2Fb")
    assert encoded.status_code in (401, 404), encoded.text  # paid, or not routed at all: never free
    buyer = new_buyer(served)
    response = get(served, "/a/b", buyer)
    assert response.headers["x-zeroclick-usage"] == "api-requests=1"


def test_concurrent_requests_cannot_overspend(served: Served) -> None:
    buyer = new_buyer(served)
    with ThreadPoolExecutor(max_workers=20) as pool:
        statuses = list(pool.map(lambda _: get(served, "/search", buyer).status_code, range(30)))
    assert statuses.count(200) == 5
    assert statuses.count(402) == 25
    assert used(served, buyer, "api-requests") == 5
    assert runs(served, buyer, "search") == 5
