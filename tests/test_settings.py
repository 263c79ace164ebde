from __future__ import annotations

import pytest
from pydantic import ValidationError

from zc_middleware import ConfigError, ZeroClickSettings
from zc_middleware.settings import settings_from_mapping

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


# -- mistyped names say what was meant -------------------------------------------------------


def test_a_mistyped_key_names_the_closest_one_and_lists_the_keys_once() -> None:
    with pytest.raises(ValidationError) as info:
        make(ledgr="memory://", plan={})
    errors = {".".join(map(str, e["loc"])): e["msg"] for e in info.value.errors()}
    assert errors["ledgr"] == "unknown key (did you mean 'ledger'?)"
    assert errors["plan"].startswith("unknown key (did you mean 'plans'?); valid keys: meters, plans, routes, ledger,")
    assert str(info.value).count("valid keys") == 1


def test_a_mistyped_key_inside_a_plan_or_meter_names_the_closest_one() -> None:
    with pytest.raises(ValidationError) as info:
        make(meters={"api-requests": {"chanel": "batch"}}, plans={"starter": {"include": {}}})
    errors = {".".join(map(str, e["loc"])): e["msg"] for e in info.value.errors()}
    assert errors == {
        "meters.api-requests.chanel": "unknown key (did you mean 'channel'?); valid keys: channel, description",
        "plans.starter.include": "unknown key (did you mean 'includes'?); valid keys: default, includes",
    }


def test_every_undeclared_meter_is_named_at_its_key_with_the_closest_declared_one() -> None:
    with pytest.raises(ValidationError) as info:
        make(plans={"starter": {"includes": {"api-request": {"limit": 5}}}}, routes={"search": {"cpu": 1}})
    errors = [(".".join(map(str, e["loc"])), e["msg"]) for e in info.value.errors()]
    assert errors == [
        ("plans.starter.includes", "unknown meter 'api-request' (did you mean 'api-requests'?)"),
        ("routes.search", "unknown meter 'cpu'"),
    ]


def test_braces_in_a_route_name_are_not_read_as_a_template() -> None:
    with pytest.raises(ValidationError, match=r"routes\.items/\{id\}\n  unknown meter 'nope'"):
        make(routes={"items/{id}": {"nope": 1}})


def test_the_batch_channel_without_an_api_key_is_reported_at_api_key() -> None:
    with pytest.raises(ValidationError, match=r"api_key\n  required: meters \['usage'\] use the batch channel"):
        make(meters={"usage": {"channel": "batch"}})


# -- settings_from_mapping: one reading of a framework's mapping -----------------------------------


def from_mapping(raw: object, overrides: dict[str, object] | None = None) -> list[str]:
    """The problems ``raw`` has, as ``settings.ZEROCLICK``."""
    with pytest.raises(ConfigError) as info:
        settings_from_mapping(raw, "ZEROCLICK", overrides)
    assert info.value.code == "invalid_settings"
    return list(info.value.problems)  # type: ignore[attr-defined]


def test_keys_are_read_in_either_case_and_explicit_overrides_win() -> None:
    raw = {"METERS": METERS, "ledger": "memory://", "Service_Slug": "from-config"}
    settings = settings_from_mapping(raw, "ZEROCLICK", {"SERVICE_SLUG": "explicit"})
    assert (list(settings.meters), settings.ledger, settings.service_slug) == (list(METERS), "memory://", "explicit")
    assert raw == {"METERS": METERS, "ledger": "memory://", "Service_Slug": "from-config"}  # read, never written


def test_one_key_given_in_two_cases_names_both() -> None:
    problems = from_mapping({"meters": METERS, "METERS": METERS})
    assert problems == ["ZEROCLICK gives 'meters' twice, as 'meters' and 'METERS' (keys ignore case)"]


def test_mistyped_keys_are_named_as_written_with_the_valid_keys_listed_once() -> None:
    problems = from_mapping({"METERS": METERS, "LEDGR": "memory://", "PLAN": {}})
    assert problems[0] == "ZEROCLICK.LEDGR: unknown key (did you mean 'LEDGER'?)"
    assert problems[1].startswith("ZEROCLICK.PLAN: unknown key (did you mean 'PLANS'?); valid keys: METERS, PLANS,")
    assert len(problems) == 2
    fields = ", ".join(ZeroClickSettings.model_fields)  # listed in the case of the keys written
    assert from_mapping({"meters": METERS, "ledgr": "x"}, {"colour": 1}) == [
        f"ZEROCLICK.ledgr: unknown key (did you mean 'ledger'?); valid keys: {fields}",
        f"settings.colour: unknown key; valid keys: {fields}",
    ]


def test_every_invalid_value_is_named_at_its_key_as_written() -> None:
    raw = {
        "METERS": METERS,
        "Plans": {"starter": {"includes": {"api-request": {"limit": 5}}}, "pro": {"includes": {}, "colour": "red"}},
        "ROUTES": {"search": {"api-requests": 0}},
    }
    assert from_mapping(raw) == [
        "ZEROCLICK.Plans.pro.colour: unknown key; valid keys: default, includes",
        "ZEROCLICK.ROUTES.search.api-requests.quantity: Input should be greater than or equal to 1",
    ]
    del raw["Plans"]["pro"], raw["ROUTES"]  # type: ignore[attr-defined]
    assert from_mapping(raw) == [
        "ZEROCLICK.Plans.starter.includes: unknown meter 'api-request' (did you mean 'api-requests'?)"
    ]


def test_a_value_from_the_environment_is_named_by_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZEROCLICK_SERVICE_SLUG", "Acme Search")
    assert from_mapping({"METERS": METERS}) == [
        "ZEROCLICK_SERVICE_SLUG: 'Acme Search' is not a service slug (lowercase letters, digits, hyphens)"
    ]
    monkeypatch.setenv("ZEROCLICK_METERS", "{api-requests: {}}")
    assert from_mapping({"METERS": METERS})[0].startswith("ZEROCLICK_METERS cannot be read from the environment")


def test_a_missing_key_says_where_it_may_be_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ZEROCLICK_METERS", raising=False)
    assert from_mapping(None) == ["ZEROCLICK.METERS: Field required (give it here or as ZEROCLICK_METERS)"]
    assert from_mapping(["METERS"]) == ["ZEROCLICK must be a dict, got list"]


def test_several_problems_make_one_readable_message() -> None:
    with pytest.raises(ConfigError) as info:
        settings_from_mapping({"METERS": {}, "LEDGER": "mongo://x"}, 'app.config["ZEROCLICK"]')
    assert info.value.message.startswith('2 problems:\n  app.config["ZEROCLICK"].METERS: declare at least one meter')
    assert '\n  app.config["ZEROCLICK"].LEDGER: ' in info.value.message
