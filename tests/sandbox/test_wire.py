"""The sandbox's pure parts: batch event validation, the usage header, faults, the usage table."""

from __future__ import annotations

import pytest

from zc_middleware.sandbox.book import Book
from zc_middleware.sandbox.faults import Faults
from zc_middleware.sandbox.wire import Event, Invalid, UsageHeaderError, check_event, parse_usage_header

GOOD = {
    "userId": "u",
    "meter": "api-requests",
    "quantity": 0,
    "timestamp": "2026-06-12T09:30:00Z",
    "idempotencyKey": "k",
}


@pytest.mark.parametrize(
    "timestamp",
    [
        "2026-06-12T09:30:00Z",
        "2026-06-12t09:30:00z",
        "2026-06-12T09:30:00.123456789+02:00",
        "2026-12-31T23:59:59-12:00",
    ],
)
def test_rfc3339_timestamps_with_a_zone_are_accepted(timestamp: str) -> None:
    assert isinstance(check_event(0, {**GOOD, "timestamp": timestamp}), Event)


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"timestamp": "2026-06-12 09:30:00Z"}, "RFC 3339"),
        ({"timestamp": "2026-06-12T09:30:00"}, "RFC 3339"),
        ({"timestamp": "2026-06-12T09:30:00+0200"}, "RFC 3339"),
        ({"timestamp": "2026-06-12T25:30:00Z"}, "not a real instant"),
        ({"timestamp": "2026-06-12T09:30:00+24:00"}, "not a real instant"),
        ({"timestamp": "\uff12\uff10\uff12\uff16-06-12T09:30:00Z"}, "RFC 3339"),
        ({"timestamp": 1750000000}, "RFC 3339 string"),
        ({"quantity": float("nan")}, "non-negative int"),
        ({"quantity": 2**53}, "between 0"),
        ({"quantity": "3"}, "non-negative int"),
        ({"quantity": None}, "non-negative int"),
        ({"userId": ""}, "userId"),
        ({"userId": 7}, "userId"),
        ({"meter": "api requests"}, "'api-requests'"),
        ({"meter": "api--requests"}, "kebab-case"),
        ({"meter": None}, "must be a string"),
        ({"idempotencyKey": 5}, "idempotencyKey"),
    ],
)
def test_bad_fields_are_explained(change: dict[str, object], words: str) -> None:
    result = check_event(4, {**GOOD, **change})
    assert isinstance(result, Invalid)
    assert result.index == 4
    assert words in result.reason


def test_every_problem_of_one_event_is_listed() -> None:
    result = check_event(0, {"meter": "x", "quantity": -1, "extra": True})
    assert isinstance(result, Invalid)
    assert "missing field(s): userId, timestamp, idempotencyKey" in result.reason
    assert "unknown field(s): extra" in result.reason
    assert "between 0" in result.reason
    assert result.idempotency_key is None


def test_a_255_character_key_is_fine() -> None:
    assert isinstance(check_event(0, {**GOOD, "idempotencyKey": "k" * 255}), Event)


@pytest.mark.parametrize(
    ("value", "usage"),
    [
        ("api-requests=1", {"api-requests": 1}),
        ("api-requests=1, compute-seconds=4", {"api-requests": 1, "compute-seconds": 4}),
        ("api-requests=1,compute-seconds=0", {"api-requests": 1, "compute-seconds": 0}),
        (" tokens = 9007199254740991 ", {"tokens": 9007199254740991}),
    ],
)
def test_usage_header_parses(value: str, usage: dict[str, int]) -> None:
    assert parse_usage_header(value) == usage


@pytest.mark.parametrize(
    "value",
    ["", " ", "api-requests", "=1", "api-requests=", "api-requests=1,", "api-requests=1.0", "api-requests=+1",
     "api-requests=٣", "API-requests=1", "a=1, a=2", "api-requests=9007199254740992", "a=" + "9" * 5000],
)  # fmt: skip
def test_malformed_usage_headers_raise(value: str) -> None:
    with pytest.raises(UsageHeaderError):
        parse_usage_header(value)


def test_faults_are_reproducible_and_off_by_default() -> None:
    assert [Faults().draw() for _ in range(100)] == [None] * 100
    faults = Faults(fail_rate=0.3, seed=42)
    first = [faults.draw() for _ in range(200)]
    faults.reset()
    assert [faults.draw() for _ in range(200)] == first
    failed = [f for f in first if f is not None]
    assert 30 < len(failed) < 90 and set(failed) == {"503", "429", "hang"}
    for bad in (-0.1, 1.5, float("nan"), True):
        with pytest.raises(ValueError, match="fail_rate"):
            Faults(fail_rate=bad)
    with pytest.raises(ValueError, match="hang_seconds"):
        Faults(hang_seconds=float("inf"))


def test_book_dedupes_and_tabulates() -> None:
    book = Book()
    first = Event("u-1", "compute-seconds", 5, "2026-06-12T09:30:00Z", "k")
    assert book.record_batch([first, first]) == (1, 1)
    assert book.record_batch([Event("u-1", "compute-seconds", 6, "2026-06-12T09:30:00Z", "k")]) == (0, 1)
    book.add_usage("u-1", "compute-seconds", 2, "header")
    assert book.rows() == [{"buyer": "u-1", "meter": "compute-seconds", "header": 2, "batch": 5, "total": 7}]
    assert book.keys["k"].deliveries == 3 and book.keys["k"].differed
    table = book.table().splitlines()
    assert table[0].split() == ["buyer", "meter", "header", "batch", "total"]
    assert table[2].split() == ["u-1", "compute-seconds", "2", "5", "7"]
    book.reset()
    assert book.rows() == [] and book.keys == {} and book.protocol_error_count == 0
