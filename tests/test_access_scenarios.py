"""Entitlement writes at ``POST /zeroclick/access`` on every adapter, under its real server.

The scenario apps, signed (``ZEROCLICK_SIGNING_SECRETS``), on their own SQLite ledger file, which
the tests read too. A write extends, caps and reopens a buyer's plan; a bad one is refused and
leaves the plan and its history as they were.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import Served, serve_adapter
from tests.servers import ADAPTERS
from zc_middleware.sandbox.writes import Status, entitlement, signed_headers
from zc_middleware.testing import sign, sign_access_write

SECRETS = {"k-zc": "zeroclick-signing-secret"}
LIMIT = 4096
PATH = "/zeroclick/access"
_ids = itertools.count()


@pytest.fixture(scope="module", params=sorted(ADAPTERS))
def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    env = {"ZEROCLICK_SIGNING_SECRETS": json.dumps(SECRETS), "ZEROCLICK_MAX_SIGNED_BODY": str(LIMIT)}
    yield from serve_adapter(request.param, tmp_path_factory, **env)


def new_buyer(served: Served) -> str:
    return f"access-{served.name}-{next(_ids)}"


def search(served: Served, buyer: str) -> httpx.Response:
    headers = sign("GET", "/search", b"", {"zc-agent-id": buyer}, secret=SECRETS["k-zc"], kid="k-zc")
    return httpx.get(served.base + "/search", headers=headers, timeout=10)


def reason(response: httpx.Response) -> str | None:
    return "ok" if response.status_code == 200 else response.headers.get("x-zeroclick-reason")


def write(
    served: Served,
    buyer: str,
    *,
    status: Status = "active",
    version: int,
    start: float | None = None,
    plan: str = "starter",
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    **signing: Any,
) -> httpx.Response:
    raw = (
        body
        if body is not None
        else entitlement(agent=buyer, plan=plan, status=status, start=start or time.time(), end=None, version=version)
    )
    sent = signed_headers(
        raw, path=PATH, agent=buyer, secret=signing.pop("secret", SECRETS["k-zc"]), kid="k-zc", **signing
    )
    sent.update(headers or {})
    return httpx.post(served.base + PATH, content=raw, headers=sent, timeout=10)


def history(served: Served, buyer: str) -> tuple[object, ...]:
    """The buyer's plan history in the app's ledger."""
    return served.ledger.history(buyer)


def exhaust(served: Served, buyer: str) -> None:
    for _ in range(5):  # the scenario plan: 5 api-requests a month
        assert search(served, buyer).status_code == 200
    assert reason(search(served, buyer)) == "usage_exhausted"


def test_402_extend_retry_then_spend_cap_extend_retry(served: Served) -> None:
    buyer = new_buyer(served)
    exhaust(served, buyer)
    start = time.time()
    extended = write(served, buyer, version=1, start=start)  # the next period starts now: fresh units
    assert (extended.status_code, extended.json()) == (200, {"lifecycle": "active"})
    assert extended.headers["cache-control"] == "no-store"
    assert not [name for name in extended.headers if name.lower().startswith("x-zeroclick")]
    assert reason(search(served, buyer)) == "ok"  # the same request, retried

    capped = write(served, buyer, status="suspended", version=2, start=start)  # a spend cap, same period
    assert capped.status_code == 200
    assert reason(search(served, buyer)) == "spend_cap_reached"
    assert write(served, buyer, version=3, start=time.time() + 1).status_code == 200
    assert reason(search(served, buyer)) == "ok"
    assert len(history(served, buyer)) == 3


def test_a_seller_signs_a_write_for_their_own_tests_with_the_testing_helper(served: Served) -> None:
    buyer = new_buyer(served)
    exhaust(served, buyer)
    body = entitlement(agent=buyer, plan="starter", status="active", start=time.time(), end=None, version=1)
    headers = sign_access_write(PATH, body, {"zc-agent-id": buyer}, secret=SECRETS["k-zc"], kid="k-zc")
    answer = httpx.post(served.base + PATH, content=body, headers=headers, timeout=10)
    assert (answer.status_code, answer.json()) == (200, {"lifecycle": "active"})
    assert reason(search(served, buyer)) == "ok"


def test_a_write_for_the_same_period_keeps_what_was_used(served: Served) -> None:
    buyer = new_buyer(served)
    start = time.time()
    assert write(served, buyer, version=1, start=start).status_code == 200
    for _ in range(4):
        assert search(served, buyer).status_code == 200
    assert write(served, buyer, status="suspended", version=2, start=start).status_code == 200
    assert write(served, buyer, version=3, start=start).status_code == 200  # the cap lifted, same period
    assert reason(search(served, buyer)) == "ok"
    assert reason(search(served, buyer)) == "usage_exhausted"


def test_a_closed_plan_is_plan_expired(served: Served) -> None:
    buyer = new_buyer(served)
    assert write(served, buyer, status="closed", version=1).status_code == 200
    assert reason(search(served, buyer)) == "plan_expired"


def test_replays_and_older_versions_are_acknowledged_and_change_nothing(served: Served) -> None:
    buyer = new_buyer(served)
    start = time.time()
    assert write(served, buyer, status="suspended", version=5, start=start).status_code == 200
    older = write(served, buyer, version=4, start=start)  # arrives late: an older state
    assert (older.status_code, older.json()) == (200, {"lifecycle": "active"})
    body = entitlement(agent=buyer, plan="starter", status="suspended", start=start, end=None, version=5, key="k1")
    assert write(served, buyer, version=6, body=body).status_code == 200  # same version: stale
    assert reason(search(served, buyer)) == "spend_cap_reached"
    assert len(history(served, buyer)) == 1


def _proxy_signed(served: Served, buyer: str) -> httpx.Response:
    raw = entitlement(agent=buyer, plan="starter", status="active", start=time.time(), end=None, version=9)
    headers = sign("POST", PATH, raw, {"zc-agent-id": buyer}, secret=SECRETS["k-zc"], kid="k-zc")
    return httpx.post(served.base + PATH, content=raw, headers=headers, timeout=10)


BAD_WRITES: dict[str, tuple[int, str, dict[str, Any]]] = {
    "wrong secret": (401, "invalid_signature", {"secret": "a-guess"}),
    "stale time": (401, "stale_timestamp", {"timestamp": int(time.time()) - 3600}),
    "no signature": (401, "missing_or_malformed_signature", {"headers": {"zc-signature": ""}}),
    "unknown kid": (401, "unknown_kid", {"headers_kid": "k-retired"}),
    "malformed JSON": (503, "seller_unavailable", {"body": b"{not json"}),
    "missing fields": (400, "invalid_entitlement", {"body": b'{"agentId": "x"}'}),
    "unknown plan": (400, "unknown_plan", {"plan": "enterprise"}),
    "another agent": (400, "agent_mismatch", {"headers": {"zc-agent-id": "someone-else"}, "resign": True}),
    "a buyer header": (400, "buyer_mismatch", {"buyer_header": "buyer_3"}),
}


@pytest.mark.parametrize("case", sorted(BAD_WRITES))
def test_a_bad_write_is_refused_and_changes_nothing(served: Served, case: str) -> None:
    buyer = new_buyer(served)
    start = time.time()
    assert write(served, buyer, status="suspended", version=1, start=start).status_code == 200
    before = history(served, buyer)
    status, code, how = BAD_WRITES[case]
    how = dict(how)
    if how.pop("headers_kid", None):
        raw = entitlement(agent=buyer, plan="starter", status="active", start=start, end=None, version=2)
        headers = signed_headers(raw, path=PATH, agent=buyer, secret=SECRETS["k-zc"], kid="k-retired")
        response = httpx.post(served.base + PATH, content=raw, headers=headers, timeout=10)
    elif how.pop("resign", None):  # signed for the header's agent, the body names the buyer
        raw = entitlement(agent=buyer, plan="starter", status="active", start=start, end=None, version=2)
        headers = signed_headers(raw, path=PATH, agent="someone-else", secret=SECRETS["k-zc"], kid="k-zc")
        response = httpx.post(served.base + PATH, content=raw, headers=headers, timeout=10)
    elif (header := how.pop("buyer_header", None)) is not None:
        raw = entitlement(agent=buyer, plan="starter", status="active", start=start, end=None, version=2)
        headers = signed_headers(raw, path=PATH, agent=buyer, secret=SECRETS["k-zc"], kid="k-zc")
        headers["zc-buyer-id"] = header  # the body's buyerId is null
        response = httpx.post(served.base + PATH, content=raw, headers=headers, timeout=10)
    else:
        response = write(served, buyer, version=2, start=start, **how)
    assert (response.status_code, response.json()) == (status, {"error": code}), response.text
    assert response.headers["cache-control"] == "no-store"
    assert not [name for name in response.headers if name.lower().startswith("x-zeroclick")]
    assert reason(search(served, buyer)) == "spend_cap_reached"  # still capped: nothing applied
    assert history(served, buyer) == before


def test_a_proxy_signature_is_no_write(served: Served) -> None:
    buyer = new_buyer(served)
    response = _proxy_signed(served, buyer)
    assert (response.status_code, response.json()) == (401, {"error": "invalid_signature"})
    assert history(served, buyer) == ()


def test_a_write_signature_opens_no_paid_route(served: Served) -> None:
    buyer = new_buyer(served)
    headers = signed_headers(b"", path="/search", agent=buyer, secret=SECRETS["k-zc"], kid="k-zc")
    response = httpx.get(served.base + "/search", headers=headers, timeout=10)
    assert response.status_code == 401
    assert response.json()["reason"] == "invalid_signature"
    assert int(httpx.get(served.base + "/runs", timeout=10).json().get(f"{buyer}:search", 0)) == 0


def test_a_huge_body_is_413_and_changes_nothing(served: Served) -> None:
    buyer = new_buyer(served)
    assert write(served, buyer, status="suspended", version=1).status_code == 200
    response = write(served, buyer, version=2, body=b" " * (LIMIT + 1))
    assert response.status_code == 413
    assert response.json()["error"] == "body_too_large"
    assert reason(search(served, buyer)) == "spend_cap_reached"


@pytest.mark.parametrize("method", ["GET", "HEAD", "PUT", "DELETE", "OPTIONS"])
def test_other_methods_are_405(served: Served, method: str) -> None:
    response = httpx.request(method, served.base + PATH, timeout=10)
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert response.headers["cache-control"] == "no-store"


def test_a_query_string_is_signed_as_sent(served: Served) -> None:
    buyer = new_buyer(served)
    raw = entitlement(agent=buyer, plan="starter", status="suspended", start=time.time(), end=None, version=1)
    headers = signed_headers(raw, path=PATH + "?attempt=2", agent=buyer, secret=SECRETS["k-zc"], kid="k-zc")
    response = httpx.post(served.base + PATH + "?attempt=2", content=raw, headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    assert reason(search(served, buyer)) == "spend_cap_reached"


@pytest.mark.parametrize("adapter", sorted(ADAPTERS))
def test_the_access_path_moves_with_its_setting(adapter: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    env = {"ZEROCLICK_SIGNING_SECRETS": json.dumps(SECRETS), "ZEROCLICK_ACCESS_PATH": "/hooks/zc"}
    for moved in serve_adapter(adapter, tmp_path_factory, **env):
        buyer = new_buyer(moved)
        raw = entitlement(agent=buyer, plan="starter", status="suspended", start=time.time(), end=None, version=1)
        old = signed_headers(raw, path=PATH, agent=buyer, secret=SECRETS["k-zc"], kid="k-zc")
        assert httpx.post(moved.base + PATH, content=raw, headers=old, timeout=10).status_code == 404  # the app's
        new = signed_headers(raw, path="/hooks/zc", agent=buyer, secret=SECRETS["k-zc"], kid="k-zc")
        answer = httpx.post(moved.base + "/hooks/zc", content=raw, headers=new, timeout=10)
        assert (answer.status_code, answer.json()) == (200, {"lifecycle": "active"})
        assert reason(search(moved, buyer)) == "spend_cap_reached"
