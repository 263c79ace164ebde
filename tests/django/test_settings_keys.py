"""``settings.ZEROCLICK`` read as Flask reads ``app.config["ZEROCLICK"]``: keys in either case, and every
mistake named at its key as written, with the closest valid name."""

from __future__ import annotations

import pytest

django = pytest.importorskip("django")

from django.core.exceptions import ImproperlyConfigured  # noqa: E402
from django.test import override_settings  # noqa: E402

from tests.django.test_django import ZEROCLICK  # noqa: E402  # importing it configures Django
from zc_middleware.django.checks import check_settings  # noqa: E402
from zc_middleware.django.conf import build_settings, zeroclick_settings  # noqa: E402

METERS = ZEROCLICK["METERS"]


@pytest.mark.parametrize("case", [str.upper, str.lower, str.title], ids=["upper", "lower", "title"])
def test_keys_are_read_in_either_case(case: object) -> None:
    raw = {case(key): value for key, value in ZEROCLICK.items()}  # type: ignore[operator]
    built, problems = build_settings(raw)
    assert problems == []
    assert built is not None and list(built.meters) == list(METERS) and built.ledger == "memory://"
    with override_settings(ZEROCLICK=raw):
        assert zeroclick_settings() == built


def test_one_key_in_two_cases_is_an_error_naming_both() -> None:
    assert build_settings({**ZEROCLICK, "meters": METERS}) == (
        None,
        ["ZEROCLICK gives 'meters' twice, as 'METERS' and 'meters' (keys ignore case)"],
    )


def test_mistakes_are_named_as_written_with_the_closest_valid_name() -> None:
    _, problems = build_settings({**ZEROCLICK, "LEDGR": "memory://"})
    assert problems[0].startswith("ZEROCLICK.LEDGR: unknown key (did you mean 'LEDGER'?); valid keys: METERS, PLANS")
    plans = {"starter": {"includes": {"api-request": {"limit": 5}}}}
    routes = {"search": {"compute-second": 1}}
    assert build_settings({**ZEROCLICK, "PLANS": plans, "ROUTES": routes}) == (
        None,
        [
            "ZEROCLICK.PLANS.starter.includes: unknown meter 'api-request' (did you mean 'api-requests'?)",
            "ZEROCLICK.ROUTES.search: unknown meter 'compute-second' (did you mean 'compute-seconds'?)",
        ],
    )


def test_the_check_lists_the_valid_keys_once_however_many_keys_are_wrong() -> None:
    with override_settings(ZEROCLICK={**ZEROCLICK, "LEDGR": "memory://", "PLAN": {}, "colour": "red"}):
        errors = check_settings()
    assert [e.id for e in errors] == ["zc_middleware.E001"] * 3
    assert [e.msg.split(";")[0] for e in errors] == [
        "ZEROCLICK.LEDGR: unknown key (did you mean 'LEDGER'?)",
        "ZEROCLICK.PLAN: unknown key (did you mean 'PLANS'?)",
        "ZEROCLICK.colour: unknown key",
    ]
    assert sum(str(e).count("IDENTITY_HEADER") for e in errors) == 1
    assert all(e.hint is None for e in errors)


def test_a_malformed_setting_refuses_to_start_listing_every_problem() -> None:
    with (
        override_settings(ZEROCLICK={**ZEROCLICK, "meters": {}, "ROUTES": {"search": {}}}),
        pytest.raises(ImproperlyConfigured) as info,
    ):
        zeroclick_settings()
    assert str(info.value) == (
        "ZEROCLICK setting is malformed: ZEROCLICK gives 'meters' twice, as 'METERS' and 'meters' (keys ignore case)"
    )
    with (
        override_settings(ZEROCLICK={"METERS": {}, "SERVICE_SLUG": "Acme"}),
        pytest.raises(ImproperlyConfigured) as info,
    ):
        zeroclick_settings()
    assert str(info.value) == (
        "ZEROCLICK setting is malformed: 2 problems:\n"
        "  ZEROCLICK.METERS: declare at least one meter, e.g. {'api-requests': {}}\n"
        "  ZEROCLICK.SERVICE_SLUG: 'Acme' is not a service slug (lowercase letters, digits, hyphens)"
    )


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("PLANS", {"p": {"includes": {"api-requests": {"limit": "10"}}}}, "must be an integer, got str '10'"),
        ("SERVICE_SLUG", "acme\n", "'acme\\n' is not a service slug"),
        ("API_BASE_URL", "https://pay.zeroclick .io", "has whitespace"),
    ],
)
def test_loose_values_are_named_as_written(key: str, value: object, message: str) -> None:
    built, problems = build_settings({**ZEROCLICK, key: value})
    assert built is None
    assert len(problems) == 1 and problems[0].startswith(f"ZEROCLICK.{key}") and message in problems[0], problems
