"""The response policy on the contract's headers, in each shape adapters hand it: WSGI pairs, ASGI
byte pairs, and a case-insensitive mapping (Django's ``response.headers``)."""

from __future__ import annotations

import pytest

from zc_middleware.policy import (
    apply_free,
    apply_paid,
    apply_refused,
    free_headers,
    free_raw_headers,
    paid_headers,
    paid_raw_headers,
    refused_headers,
)

APP_SET = ["X-ZeroClick-Usage", "x-zeroclick-usage", "X-ZEROCLICK-REASON", "x-zeroclick-reason"]


class Mapping:
    """A case-insensitive header mapping, as the policy's :class:`HeaderMap` asks."""

    def __init__(self, items: list[tuple[str, str]]) -> None:
        self.store = {name.lower(): (name, value) for name, value in items}

    def names(self) -> list[str]:
        return list(self.store)

    def get(self, name: str, default: str | None = None) -> str | None:
        item = self.store.get(name.lower())
        return default if item is None else item[1]

    def pop(self, name: str, default: str | None = None) -> str | None:
        item = self.store.pop(name.lower(), None)
        return default if item is None else item[1]

    def __setitem__(self, name: str, value: str) -> None:
        self.store[name.lower()] = (name, value)


@pytest.mark.parametrize("name", APP_SET)
def test_a_free_response_loses_only_the_contracts_headers_in_any_case(name: str) -> None:
    headers = [("Content-Type", "text/plain"), (name, "api-requests=500"), ("X-ZeroClick-Other", "kept")]
    assert free_headers(headers) == [("Content-Type", "text/plain"), ("X-ZeroClick-Other", "kept")]
    raw = [(k.encode(), v.encode()) for k, v in headers]
    assert free_raw_headers(raw) == [(b"Content-Type", b"text/plain"), (b"X-ZeroClick-Other", b"kept")]
    assert len(raw) == 3  # the app's own list is never edited
    mapping = Mapping(headers)
    apply_free(mapping)
    assert mapping.names() == ["content-type", "x-zeroclick-other"]


def test_a_free_response_without_them_goes_out_as_the_app_made_it() -> None:
    headers = [("Content-Type", "text/plain"), ("Content-Length", "5"), ("X-ZeroClick-Usages", "x")]
    assert free_headers(headers) is headers
    assert free_raw_headers([(b"content-length", b"5"), (b"x-zeroclick-usagE0", b"1")]) is None
    assert free_raw_headers([]) is None


def test_a_paid_response_loses_the_apps_reason_and_usage_and_carries_ours() -> None:
    headers = [("X-ZeroClick-Reason", "usage_exhausted"), ("X-ZeroClick-Usage", "api-requests=500")]
    assert paid_headers(headers, "api-requests=1") == [
        ("Cache-Control", "private"),
        ("X-ZeroClick-Usage", "api-requests=1"),
    ]
    raw = [(b"x-zeroclick-reason", b"usage_exhausted")]
    assert paid_raw_headers(raw, b"api-requests=1") == [
        (b"cache-control", b"private"),
        (b"x-zeroclick-usage", b"api-requests=1"),
    ]
    mapping = Mapping(headers)
    apply_paid(mapping, None)  # not a success: no usage header at all
    assert mapping.names() == ["cache-control"]


def test_a_refusal_keeps_the_gates_reason_and_loses_any_usage() -> None:
    headers = [("x-zeroclick-reason", "usage_exhausted"), ("X-ZeroClick-Usage", "api-requests=5")]
    assert refused_headers(headers, "usage_exhausted") == [
        ("X-ZeroClick-Reason", "usage_exhausted"),
        ("Cache-Control", "no-store"),
    ]
    mapping = Mapping(headers)
    apply_refused(mapping, "usage_exhausted")
    assert mapping.names() == ["x-zeroclick-reason", "cache-control"]


def test_a_refusal_carries_the_gates_reason_only() -> None:
    changed = [("X-ZeroClick-Reason", "plan_expired"), ("x-zeroclick-reason", "usage_exhausted")]
    assert refused_headers(changed, "spend_cap_reached") == [
        ("X-ZeroClick-Reason", "spend_cap_reached"),
        ("Cache-Control", "no-store"),
    ]
    assert refused_headers(changed, None) == [("Cache-Control", "no-store")]  # a 401 or 503 has no reason
    mapping = Mapping(changed[:1])
    apply_refused(mapping, None)
    assert mapping.names() == ["cache-control"]


def test_asgi_headers_given_as_any_iterable_are_read_once() -> None:
    pairs = [(b"content-type", b"text/plain"), (b"x-zeroclick-usage", b"api-requests=500")]
    assert free_raw_headers(iter(pairs)) == [(b"content-type", b"text/plain")]
    assert free_raw_headers(pair for pair in pairs[:1]) == [(b"content-type", b"text/plain")]
    assert free_raw_headers(tuple(pairs[:1])) is None
