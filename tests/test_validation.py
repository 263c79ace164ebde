"""Strict validation: every pattern matches the whole value, counts are ints, URLs are http(s) with a
host and no whitespace, and every bad input is a ``ZcError``/``ConfigError`` that names the value."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from zc_middleware import ConfigError, ZcError, ZeroClickSettings, record_usage, report_usage
from zc_middleware.meters import normalize_meter_name
from zc_middleware.reporter import Reporter
from zc_middleware.reporter.contract import check_http_url
from zc_middleware.settings import settings_from_mapping

METERS = {"api-requests": {}}


def make(**kw: object) -> ZeroClickSettings:
    return ZeroClickSettings(**{"meters": METERS, "ledger": "memory://", **kw})  # type: ignore[arg-type]


def refused(**kw: object) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        make(**kw)
    return info.value


def test_a_bad_setting_is_a_config_error_and_still_pydantics_validation_error() -> None:
    error = refused(service_slug="Acme Search")
    assert isinstance(error, ValidationError) and isinstance(error, ZcError)
    assert error.code == "invalid_settings"
    assert "service_slug" in error.message and "'Acme Search'" in error.message
    assert [e["loc"] for e in error.errors()] == [("service_slug",)]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("identity_header", "zc-agent-id\n"),
        ("request_id_header", "zc-request-id\n"),
        ("service_slug", "acme\n"),
        ("service_slug", "\nacme"),
    ],
)
def test_a_trailing_or_leading_newline_is_not_accepted(field: str, value: str) -> None:
    assert repr(value) in refused(**{field: value}).message


def test_a_meter_name_is_matched_whole() -> None:
    assert normalize_meter_name("  api_requests ") == "api-requests"  # separators and ends are normalised
    for bad in ("api-requests\n-x", "a\nb!", "api-requests\x00"):
        with pytest.raises(ConfigError, match="kebab-case"):
            normalize_meter_name(bad)


@pytest.mark.parametrize("limit", ["10", 10.0, b"9", True, 1.5])
def test_plan_limits_are_ints_never_coerced(limit: object) -> None:
    error = refused(plans={"p": {"includes": {"api-requests": {"limit": limit}}}})
    assert "plans.p.includes.api-requests.limit" in error.message
    assert repr(limit) in error.message


@pytest.mark.parametrize("cost", ["2", 2.0, b"2", {"estimate": "30"}, {"estimate": 30.0}, {"quantity": False}])
def test_route_costs_are_ints_never_coerced(cost: object) -> None:
    assert "routes.search.api-requests" in refused(routes={"search": {"api-requests": cost}}).message


def test_an_int_limit_and_unlimited_are_accepted() -> None:
    settings = make(plans={"p": {"includes": {"api-requests": {"limit": 10}}}, "q": {"includes": {}}})
    assert settings.plans["p"].includes["api-requests"].limit == 10


@pytest.mark.parametrize(
    "url",
    [
        "https://pay.zero click.io",
        "https://pay.zeroclick.io ",
        " https://pay.zeroclick.io",
        "https://pay.zeroclick.io\n",
        "https://pay.zeroclick.io/\tv1",
        "https://pay.zeroclick.io\u00a0",
        "ftp://pay.zeroclick.io",
        "https://",
        "https://:443",
        "pay.zeroclick.io",
        "https://pay.zeroclick.io:99999",
        "https://pay.zeroclick.io:port",
        "https://pay.zeroclick.io?x=1",
        "https://pay.zeroclick.io#frag",
    ],
)
def test_api_base_url_is_http_with_a_host_and_no_whitespace(url: str) -> None:
    error = refused(api_base_url=url)
    assert "api_base_url" in error.message and repr(url) in error.message
    with pytest.raises(ConfigError, match="base_url"):
        check_http_url("base_url", url)


def test_good_base_urls_are_kept_without_a_trailing_slash() -> None:
    assert make(api_base_url="http://127.0.0.1:8787/").api_base_url == "http://127.0.0.1:8787"
    assert make(api_base_url="https://pay.zeroclick.io/zc").api_base_url == "https://pay.zeroclick.io/zc"


def test_the_sender_refuses_a_bad_base_url_before_it_posts() -> None:
    from zc_middleware.outbox import open_outbox

    outbox = open_outbox("memory://")
    with pytest.raises(ConfigError, match="invalid_url"):
        Reporter(outbox, api_key="k", base_url="https://pay.zeroclick .io")


@pytest.mark.parametrize("meter", [[1, 2], {"a": 1}, 5, None, b"api-requests"])
def test_record_usage_with_a_meter_that_is_not_a_string_is_a_zc_error(meter: object) -> None:
    with pytest.raises(ZcError, match="meter name must be a string") as info:
        record_usage(meter, 3)  # type: ignore[arg-type]
    assert repr(meter) in info.value.message


@pytest.mark.parametrize("quantity", ["3", 3.0, b"3", True, -1, None])
def test_record_usage_quantities_are_ints(quantity: object) -> None:
    with pytest.raises(ZcError, match="invalid_quantity"):
        record_usage("api-requests", quantity)  # type: ignore[arg-type]


@pytest.mark.parametrize("user_id", ["a,b", "a b", "a\n", "", "x" * 257, 5, None, b"buyer"])
def test_report_usage_ids_follow_the_buyer_id_rules(user_id: object) -> None:
    settings = make(meters={"usage": {"channel": "batch"}}, api_key="k")
    with pytest.raises(ZcError, match="invalid_user_id") as info:
        report_usage(
            user_id=user_id,  # type: ignore[arg-type]
            meter="usage",
            quantity=1,
            idempotency_key="k1",
            settings=settings,
        )
    assert repr(user_id) in info.value.message


@pytest.mark.parametrize(
    ("config", "where"),
    [
        ({"PLANS": {"p": {"includes": {"api-requests": {"limit": "10"}}}}}, "ZEROCLICK.PLANS.p.includes"),
        ({"service_slug": "acme\n"}, "ZEROCLICK.service_slug"),
        ({"API_BASE_URL": "https://pay.zeroclick.io /"}, "ZEROCLICK.API_BASE_URL"),
        ({"identity_header": "zc-agent-id\n"}, "ZEROCLICK.identity_header"),
    ],
)
def test_framework_mappings_name_the_key_as_written(config: dict[str, object], where: str) -> None:
    with pytest.raises(ConfigError) as info:
        settings_from_mapping({"METERS": METERS, "LEDGER": "memory://", **config}, "ZEROCLICK")
    assert info.value.message.startswith(where), info.value.message


def test_flask_refuses_a_string_limit_at_init_app() -> None:
    flask = pytest.importorskip("flask")
    from zc_middleware.flask import ZeroClick

    app = flask.Flask("strict")
    plans = {"p": {"includes": {"api-requests": {"limit": 10.0}}}}
    app.config["ZEROCLICK"] = {"meters": METERS, "ledger": "memory://", "plans": plans}
    with pytest.raises(ConfigError) as info:
        ZeroClick(app)
    where = 'app.config["ZEROCLICK"].plans.p.includes.api-requests.limit'
    assert info.value.message == f"{where}: must be an integer, got float 10.0"


def test_an_environment_variable_with_a_bad_url_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZEROCLICK_API_BASE_URL", "https://pay.zeroclick.io\t")
    with pytest.raises(ConfigError, match="ZEROCLICK_API_BASE_URL"):
        settings_from_mapping({"METERS": METERS, "LEDGER": "memory://"}, "ZEROCLICK")
