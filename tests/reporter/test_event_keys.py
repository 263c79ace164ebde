"""Batch event keys carry the buyer: ``{buyer}:{request id}:{meter}``, hashed when longer than the
batch API takes, and read one way only, so two buyers never share a key."""

from __future__ import annotations

import httpx

from tests.reporter.helpers import BatchAPI
from tests.reporter.test_starlette_batch import app_base  # noqa: F401  (fixture: the batch app under uvicorn)
from zc_middleware.decision import Allow
from zc_middleware.outbox import MAX_KEY
from zc_middleware.settlement import events_for


def test_two_buyers_reusing_a_request_id_are_both_billed(api: BatchAPI, app_base: tuple[str, str]) -> None:  # noqa: F811
    base, _ = app_base
    for buyer in ("buyer-a", "buyer-b"):
        headers = {"zc-agent-id": buyer, "zc-request-id": "req-shared"}
        assert httpx.post(base + "/render", headers=headers, timeout=10).status_code == 200
    keys = api.wait_for(2)
    assert set(keys) == {"buyer-a:req-shared:compute-seconds", "buyer-b:req-shared:compute-seconds"}
    assert {k: v[0]["userId"] for k, v in keys.items()} == {
        "buyer-a:req-shared:compute-seconds": "buyer-a",
        "buyer-b:req-shared:compute-seconds": "buyer-b",
    }


def key(buyer: str, request_id: str | None, meter: str = "compute-seconds") -> str:
    allow = Allow(buyer, None, None, request_id)  # type: ignore[arg-type]
    (event,) = events_for(allow, {meter: 1})
    return event.key


def test_the_key_names_buyer_request_and_meter() -> None:
    assert key("agent-1", "req-9") == "agent-1:req-9:compute-seconds"
    assert key("agent-1", "req-9") == key("agent-1", "req-9")  # a retried settle queues the same key
    assert key("agent-1", None).startswith("agent-1:zc-")  # no request id: a generated one


def test_colons_cannot_make_two_buyers_share_a_key() -> None:
    """Buyer ``a:b`` with request ``c`` and buyer ``a`` with request ``b:c`` would both read
    ``a:b:c:meter``: a request id with a colon (or a digest's shape) is digested instead."""
    assert key("a:b", "c") != key("a", "b:c")
    assert key("a", "b:c").startswith("a:sha256-")
    digest = key("a", "b:c").split(":")[1]
    assert key("a", digest) != key("a", "b:c")


def test_a_long_key_is_hashed_and_stays_the_same() -> None:
    buyer, request_id = "b" * 256, "r" * 200
    long = key(buyer, request_id)
    assert long.startswith("sha256-") and len(long) <= MAX_KEY
    assert long == key(buyer, request_id)
    assert long != key("c" * 256, request_id)
