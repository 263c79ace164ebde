"""The ``Cache-Control`` a paid response goes out with (every adapter uses the same rule)."""

from __future__ import annotations

import pytest

from zc_middleware.policy import paid_headers, private_cache_control


@pytest.mark.parametrize(
    ("app_set", "sent"),
    [
        (None, "private"),
        ("public, max-age=60", "private, max-age=60"),
        ("max-age=60, PUBLIC, must-revalidate", "private, max-age=60, must-revalidate"),
        ('private="Set-Cookie", max-age=5', "private, max-age=5"),  # only a field was private: not enough
        ('public, private="a, b", max-age=5', "private, max-age=5"),  # a comma inside quotes is no separator
        ("PRIVATE, max-age=5", "private, max-age=5"),  # Django 4.2's cache looks for lower-case "private"
        ("no-store", "private, no-store"),  # Django 4.2's cache ignores no-store
        ("private, public", "private"),
        ('no-cache="a, b", public', 'private, no-cache="a, b"'),
        ('max-age=60, public, no-cache="x', 'private, max-age=60, no-cache="x'),  # an unclosed quote
    ],
)
def test_a_paid_response_is_private_to_shared_caches(app_set: str | None, sent: str) -> None:
    assert private_cache_control(app_set) == sent


def test_several_cache_control_headers_become_one_and_the_apps_usage_header_goes() -> None:
    headers = [
        ("Content-Type", "text/plain"),
        ("cache-control", "public"),
        ("X-ZeroClick-Usage", "api-requests=9"),
        ("Cache-Control", "max-age=60"),
    ]
    assert paid_headers(headers) == [("Content-Type", "text/plain"), ("Cache-Control", "private, max-age=60")]
    assert paid_headers([("Content-Type", "text/plain")]) == [
        ("Content-Type", "text/plain"),
        ("Cache-Control", "private"),
    ]
