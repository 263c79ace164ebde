"""The batch API's contract as pure functions: what each answer means, tested without a network."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import httpx
import pytest

from zc_middleware.reporter import api_reason
from zc_middleware.reporter.contract import (
    Deliver,
    Misconfigured,
    Reject,
    Retry,
    build_batch,
    interpret,
    unreachable,
)

NO_HEADERS: dict[str, str] = {}


@pytest.mark.parametrize("status", [200, 201, 202, 204, 299])
def test_2xx_delivers(status: int) -> None:
    assert interpret(status, NO_HEADERS, "") == Deliver()


@pytest.mark.parametrize(
    ("status", "what"),
    [
        (401, "rejected the service API key"),
        (403, "rejected the service API key"),
        (404, "has no batch endpoint at"),
        (405, "has no batch endpoint at"),
    ],
)
def test_a_wrong_key_or_base_url_is_misconfiguration_not_rejection(status: int, what: str) -> None:
    assert interpret(status, NO_HEADERS, '{"error": "unauthorized"}') == Misconfigured(status, what)


@pytest.mark.parametrize("status", [400, 409, 413, 422, 499])
def test_other_4xx_rejects_with_the_apis_reason(status: int) -> None:
    body = json.dumps({"error": "invalid_event", "message": "quantity must be an integer", "ignored": 1})
    action = interpret(status, NO_HEADERS, body)
    assert action == Reject(f"HTTP {status}: message: quantity must be an integer; error: invalid_event")


def test_a_rejection_without_json_quotes_the_text_or_the_reason_phrase() -> None:
    assert interpret(400, NO_HEADERS, "  bad\n\n batch  ") == Reject("HTTP 400: bad batch")
    assert interpret(400, NO_HEADERS, "   ") == Reject("HTTP 400: Bad Request")
    assert interpret(422, NO_HEADERS, "", phrase="Nope") == Reject("HTTP 422: Nope")
    long = interpret(400, NO_HEADERS, "x" * 1000)
    assert isinstance(long, Reject) and long.reason == "HTTP 400: " + "x" * 400


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504, 302, 600])
def test_timeouts_throttling_and_everything_else_retry(status: int) -> None:
    assert interpret(status, NO_HEADERS, "oops") == Retry(f"HTTP {status}")


def test_retry_after_sets_a_floor_for_the_backoff() -> None:
    assert interpret(429, {"retry-after": "3"}, "") == Retry("HTTP 429", 3.0)
    assert interpret(503, httpx.Headers({"Retry-After": "2"}), "") == Retry("HTTP 503", 2.0)
    assert interpret(503, {"retry-after": "soon"}, "") == Retry("HTTP 503", None)
    now = datetime(2026, 1, 1, tzinfo=timezone.utc).timestamp()
    dated = interpret(429, {"retry-after": "Thu, 01 Jan 2026 00:00:10 GMT"}, "", now=now)
    assert dated == Retry("HTTP 429", 10.0)


def test_a_transport_error_retries_without_a_hint() -> None:
    assert unreachable(httpx.ConnectTimeout("timed out")) == Retry("ConnectTimeout: timed out")


def test_the_body_is_the_stored_events_byte_for_byte() -> None:
    bodies = ['{"idempotencyKey":"a","quantity":1}', '{"idempotencyKey":"b","quantity":2}']
    body = build_batch(bodies)
    assert body == b'{"events":[' + ",".join(bodies).encode() + b"]}"
    assert json.loads(body)["events"][1] == {"idempotencyKey": "b", "quantity": 2}
    assert build_batch([]) == b'{"events":[]}'


def test_api_reason_reads_a_response_as_interpret_does() -> None:
    response = httpx.Response(422, json={"detail": "bad meter"})
    assert api_reason(response) == "HTTP 422: detail: bad meter"
    assert interpret(422, response.headers, response.text) == Reject(api_reason(response))
