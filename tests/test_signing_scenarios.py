"""Signed requests on every adapter, under its real server, with ``ZEROCLICK_SIGNING_SECRETS`` set.

The same scenario apps as ``tests/test_scenarios.py``; the settings come from the environment, two
kids at once as during a rotation, and a small ``max_signed_body`` to reach the 413 cheaply.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import time
from collections.abc import Iterator

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import Served, serve_adapter
from tests.servers import ADAPTERS
from zc_middleware.signing import REASONS
from zc_middleware.testing import sign

SECRETS = {"k-old": "old-signing-secret", "k-new": "new-signing-secret"}
LIMIT = 4096
_ids = itertools.count()


@pytest.fixture(scope="module", params=sorted(ADAPTERS))
def signed(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    yield from serve_adapter(
        request.param,
        tmp_path_factory,
        ZEROCLICK_SIGNING_SECRETS=json.dumps(SECRETS),
        ZEROCLICK_MAX_SIGNED_BODY=str(LIMIT),
    )


def new_buyer(served: Served) -> str:
    return f"signed-{served.name}-{next(_ids)}"


def call(
    served: Served,
    method: str,
    target: str,
    buyer: str | None,
    body: bytes = b"",
    *,
    kid: str = "k-new",
    secret: str | None = None,
    timestamp: int | None = None,
    signed_target: str | None = None,
    drop: str | None = None,
    extra: dict[str, str] | None = None,
) -> httpx.Response:
    headers = sign(
        method,
        signed_target or target,
        body,
        {"zc-agent-id": buyer} if buyer else {},
        secret=secret or SECRETS.get(kid, "not-configured"),
        kid=kid,
        timestamp=timestamp,
    )
    if drop:
        del headers[drop]
    headers.update(extra or {})
    return httpx.request(method, served.base + target, content=body, headers=headers, timeout=10)


def runs(served: Served, buyer: str, what: str) -> int:
    return int(httpx.get(served.base + "/runs", timeout=10).json().get(f"{buyer}:{what}", 0))


def settled(served: Served, buyer: str, expected: int) -> int:
    deadline = time.monotonic() + 5
    while (value := served.ledger.balance(buyer).meter("api-requests").used) != expected:
        if time.monotonic() > deadline:
            break
        time.sleep(0.01)
    return value


def test_a_signed_request_runs_and_is_debited(signed: Served) -> None:
    buyer = new_buyer(signed)
    response = call(signed, "GET", "/search?q=a%20b&sort=desc&sort=asc", buyer)
    assert response.status_code == 200, response.text
    assert response.headers["x-zeroclick-usage"] == "api-requests=1"
    assert settled(signed, buyer, 1) == 1
    assert runs(signed, buyer, "search") == 1


def test_both_kids_of_a_rotation_are_accepted(signed: Served) -> None:
    buyer = new_buyer(signed)
    assert call(signed, "GET", "/search", buyer, kid="k-old").status_code == 200
    assert call(signed, "GET", "/search", buyer, kid="k-new").status_code == 200
    assert settled(signed, buyer, 2) == 2


@pytest.mark.parametrize(
    ("reason", "how"),
    [
        ("missing_signature", {"drop": "zc-signature"}),
        ("malformed_signature", {"extra": {"zc-signature": "t=1,kid=k-new"}}),
        ("malformed_signature", {"extra": {"zc-signature": "t=1,kid=k-new,v1=" + "a" * 64 + ",t=2"}}),
        ("stale_timestamp", {"timestamp": int(time.time()) - 3600}),
        ("missing_request_id", {"drop": "zc-request-id"}),
        ("unknown_kid", {"kid": "k-retired"}),
        ("invalid_signature", {"secret": "a-guess"}),
        ("invalid_signature", {"extra": {"zc-agent-id": "someone-else"}}),  # the buyer is covered
    ],
)
def test_a_bad_signature_is_refused_before_anything_runs(signed: Served, reason: str, how: dict[str, object]) -> None:
    buyer = new_buyer(signed)
    response = call(signed, "POST", "/echo", buyer, b'{"q": 1}', **how)  # type: ignore[arg-type]
    assert response.status_code == 401, response.text
    assert response.json()["error"] == "invalid_zeroclick_signature"
    assert response.json()["reason"] == reason
    assert response.headers["cache-control"] == "no-store"
    assert "x-zeroclick-reason" not in response.headers  # the proxy would read it as the plan's refusal
    assert "x-zeroclick-usage" not in response.headers
    for who in (buyer, "someone-else"):
        assert runs(signed, who, "echo") == 0
        assert signed.ledger.balance(who).meter("api-requests").used == 0


@pytest.mark.parametrize("size", [0, 1, 3000, LIMIT])
def test_the_body_reaches_the_handler_as_sent(signed: Served, size: int) -> None:
    buyer = new_buyer(signed)
    body = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    response = call(signed, "POST", "/echo", buyer, body)
    assert response.status_code == 200, response.text
    assert response.json() == {"sha256": hashlib.sha256(body).hexdigest(), "length": size}
    assert settled(signed, buyer, 1) == 1


def test_a_body_over_the_limit_is_413_and_nothing_runs(signed: Served) -> None:
    buyer = new_buyer(signed)
    response = call(signed, "POST", "/echo", buyer, b"y" * (LIMIT + 1))
    assert response.status_code == 413, response.text
    assert response.json()["error"] == "body_too_large"
    assert response.headers["cache-control"] == "no-store"
    assert "x-zeroclick-reason" not in response.headers  # the proxy would read it as the plan's refusal
    assert runs(signed, buyer, "echo") == 0
    assert signed.ledger.balance(buyer).meter("api-requests").used == 0


def test_the_raw_percent_encoded_path_is_what_is_signed(signed: Served) -> None:
    buyer = new_buyer(signed)
    # /a%2Fb routes to /a/b (servers decode the path); the proxy signed the form the client sent
    assert call(signed, "GET", "/a%2Fb", buyer).status_code == 200
    assert runs(signed, buyer, "ab") == 1
    refused = call(signed, "GET", "/a%2Fb", buyer, signed_target="/a/b")
    assert (refused.status_code, refused.json()["reason"]) == (401, "invalid_signature")
    assert runs(signed, buyer, "ab") == 1


def test_free_routes_need_no_signature(signed: Served) -> None:
    response = httpx.get(signed.base + "/free", timeout=10)
    assert (response.status_code, response.text) == (200, "free")


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    signature=st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=120),
    request_id=st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=12),
    body=st.binary(max_size=64),
)
def test_any_signature_header_is_a_clean_answer(signed: Served, signature: str, request_id: str, body: bytes) -> None:
    headers = {"zc-agent-id": "fuzzed-buyer"}
    if signature.strip():  # a header value has no whitespace at either end
        headers["zc-signature"] = signature.strip()
    if request_id:
        headers["zc-request-id"] = request_id
    response = httpx.post(signed.base + "/echo", content=body, headers=headers, timeout=10)
    assert response.status_code == 401
    assert response.json()["reason"] in REASONS
