from __future__ import annotations

import pytest
from pydantic import ValidationError

from zc_middleware import ConfigError, ZeroClickSettings

METERS = {"api-requests": {}, "compute-seconds": {}}


def make(**kw: object) -> ZeroClickSettings:
    return ZeroClickSettings(**{"meters": METERS, **kw})  # type: ignore[arg-type]


def test_labels_are_normalised_to_kebab_case() -> None:
    settings = make(meters={"Compute Seconds": {}, "api_requests": {}})
    assert list(settings.meters) == ["compute-seconds", "api-requests"]


@pytest.mark.parametrize("bad", ["", "--", "api requests!", "a--b", "ü-meter"])
def test_bad_labels_are_rejected_with_the_reason(bad: str) -> None:
    with pytest.raises(ValidationError, match="kebab-case"):
        make(meters={bad: {}})


def test_two_spellings_of_one_meter_are_rejected() -> None:
    with pytest.raises(ValidationError, match="name the same meter"):
        make(meters={"api-requests": {}, "API Requests": {}})


@pytest.mark.parametrize(
    ("plans", "where"),
    [
        ({"p": {"includes": {"api-requests": {"limit": -1}}}}, "plans.p.includes.api-requests.limit"),
        ({"p": {"includes": {"api-requests": {"limit": True}}}}, "plans.p.includes.api-requests.limit"),
        ({"p": {"includes": {"api-requests": {"limit": 1.5}}}}, "plans.p.includes.api-requests.limit"),
        ({"p": {"includes": {"api-requests": {"limit": 5, "reset": "fortnight"}}}}, "reset"),
        ({"p": {"includes": {"nope": {"limit": 5}}}}, "unknown meter 'nope'"),
        ({"p": {"default": True}, "q": {"default": True}}, "only one plan may be the default"),
        ({"p": {"includes": {}, "colour": "red"}}, "plans.p.colour"),
    ],
)
def test_invalid_plans_fail_naming_the_key(plans: dict, where: str) -> None:
    with pytest.raises(ValidationError) as info:
        make(plans=plans)
    assert where in str(info.value)


def test_routes_accept_quantities_and_estimates_only() -> None:
    settings = make(routes={"search": {"api-requests": 2}, "render": {"compute-seconds": {"estimate": 30}}})
    assert [(s.meter, s.hold, s.base) for s in settings.route_specs("render")] == [("compute-seconds", 30, 0)]
    for bad in ({"search": {"api-requests": 0}}, {"search": {"nope": 1}}, {"search": {"api-requests": True}}):
        with pytest.raises(ValidationError, match="routes"):
            make(routes=bad)


def test_other_values_are_validated() -> None:
    with pytest.raises(ValidationError, match="service_slug"):
        make(service_slug="Acme Search")
    with pytest.raises(ValidationError, match="identity_header"):
        make(identity_header="bad header")
    with pytest.raises(ValidationError, match="meters"):
        ZeroClickSettings(meters={})
    with pytest.raises(ValidationError, match="on_ledger_error"):
        make(on_ledger_error="maybe")


def test_environment_variables_are_read_and_explicit_arguments_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZEROCLICK_METERS", '{"api-requests": {}}')
    monkeypatch.setenv("ZEROCLICK_PLANS", '{"free": {"default": "false", "includes": {"api-requests": {"limit": 3}}}}')
    monkeypatch.setenv("ZEROCLICK_LEDGER", "memory://")
    monkeypatch.setenv("ZEROCLICK_SERVICE_SLUG", "from-env")
    settings = ZeroClickSettings(service_slug="explicit")
    assert settings.ledger == "memory://"
    assert settings.service_slug == "explicit"
    assert settings.plans["free"].default is False  # the string "false" is false
    assert settings.default_plan is None
    assert settings.extend_url == "https://explicit.pay.zeroclick.io/extend"


def test_an_unreadable_environment_variable_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZEROCLICK_METERS", "{api-requests: {}}")  # YAML-ish, not JSON
    unreadable = r"ZEROCLICK_METERS cannot be read from the environment \(Expecting property name"
    with pytest.raises(ConfigError, match=unreadable) as err:
        ZeroClickSettings(meters={"api-requests": {}})  # read even though the argument overrides it
    assert err.value.code == "invalid_settings"


def test_settings_are_frozen() -> None:
    settings = make()
    with pytest.raises(ValidationError):
        settings.ledger = "memory://"  # type: ignore[misc]
