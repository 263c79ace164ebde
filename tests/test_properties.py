"""Properties over what a buyer or a seller can send: identity and request-id header values, meter
names, quantities and settings mappings.

Whatever comes in, the middleware never answers 500, never sends a malformed contract header, and
never debits a request that did not end in a 2xx; bad settings are always a ``ConfigError``. Runs
in process (httpx's ASGI transport for Starlette, Flask's and Django's test clients) on a ``memory://`` ledger.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zc_middleware import ConfigError, Ledger, ZcError, ZeroClickSettings, metered, open_ledger, record_usage
from zc_middleware.ledger import BUYER_ID
from zc_middleware.settings import settings_from_mapping

USAGE = re.compile(r"[a-z0-9-]+=\d+(, [a-z0-9-]+=\d+)*")
REASONS = {"usage_exhausted", "spend_cap_reached", "plan_expired"}
PLANS = {
    "starter": {
        "default": True,
        "includes": {"api-requests": {"limit": 5, "reset": "month"}, "compute-seconds": {"limit": 100}},
    }
}
CONFIG: dict[str, Any] = {"meters": {"api-requests": {}, "compute-seconds": {}}, "plans": PLANS, "ledger": "memory://"}
#: no example database: nothing is written into the repository
EXAMPLES = settings(
    max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
SETTINGS_EXAMPLES = settings(
    max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

#: what the ``/record`` handler passes to ``record_usage`` next (set by the test, read in the handler)
NEXT: dict[str, object] = {"meter": "compute-seconds", "quantity": 1}

# -- what comes in -------------------------------------------------------------------------------
_header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=300)
#: ``None``: the header is absent
header_values = st.one_of(
    st.none(),
    st.sampled_from(["agent-a", "agent-b", "a,b", "agent-a, agent-b", " agent-a", "a b", "", "x" * 257]),
    _header_text,
)
meters = st.one_of(
    st.sampled_from(["compute-seconds", "Compute Seconds", "compute_seconds", "api-requests", "nope", ""]),
    st.text(max_size=30),
    st.integers(),
    st.none(),
    st.lists(st.integers(), max_size=2),
    st.binary(max_size=8),
)
quantities = st.one_of(
    st.integers(min_value=-3, max_value=2**60),
    st.integers(min_value=0, max_value=200),
    st.floats(allow_nan=True),
    st.text(max_size=4),
    st.booleans(),
    st.none(),
)
paths = st.sampled_from(["/free", "/paid", "/record"])


class Call(NamedTuple):
    """One request: its path, ``zc-agent-id`` and ``zc-request-id`` (``None``: absent), and what
    ``/record`` passes to ``record_usage``."""

    path: str
    buyer: str | None
    request_id: str | None
    meter: object
    quantity: object

    def headers(self) -> dict[str, str]:
        named = {"zc-agent-id": self.buyer, "zc-request-id": self.request_id}
        return {name: value for name, value in named.items() if value is not None}


calls = st.builds(Call, paths, header_values, header_values, meters, quantities)


def _record() -> int:
    """What ``/record`` does: record ``NEXT``; a refused value is the app's own ``400``, never a crash."""
    try:
        record_usage(NEXT["meter"], NEXT["quantity"])  # type: ignore[arg-type]
    except ZcError:
        return 400
    return 200


# -- what goes out -------------------------------------------------------------------------------
def used(ledger: Ledger, buyer: str | None) -> tuple[int, int] | None:
    if buyer is None or not BUYER_ID.fullmatch(buyer):
        return None
    balance = ledger.balance(buyer)
    return balance.meter("api-requests").used, balance.meter("compute-seconds").used


def check(path: str, status: int, headers: Callable[[str], list[str]], before: object, after: object) -> None:
    assert status != 500
    if path == "/free":  # the app set a usage header there: it never goes out, nothing is debited
        assert (status, headers("x-zeroclick-usage"), before == after) == (200, [], True)
    if path == "/paid" and status == 200:  # the app set a reason there: only our usage header goes out
        assert headers("x-zeroclick-usage") == ["api-requests=1"]
    for value in headers("x-zeroclick-usage"):
        assert USAGE.fullmatch(value), value
    assert len(headers("x-zeroclick-usage")) <= 1
    for value in headers("x-zeroclick-reason"):
        assert value in REASONS, value
        assert status == 402
    if not 200 <= status < 300:
        assert before == after, (status, before, after)
        assert headers("x-zeroclick-usage") == []


# -- Starlette -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def starlette_client() -> Iterator[tuple[Any, Ledger]]:
    pytest.importorskip("starlette")
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse, Response
    from starlette.routing import Route

    from zc_middleware.starlette import ZeroClickMiddleware

    async def free(request: Request) -> Response:
        return PlainTextResponse("free", headers={"X-ZeroClick-Usage": "api-requests=500"})

    @metered("api-requests")
    async def paid(request: Request) -> Response:
        return PlainTextResponse("paid", headers={"X-ZeroClick-Reason": "usage_exhausted"})

    @metered("compute-seconds", estimate=30)
    def record(request: Request) -> Response:
        return PlainTextResponse("record", status_code=_record())

    app = Starlette(routes=[Route("/free", free), Route("/paid", paid), Route("/record", record)])
    ledger = open_ledger("memory://", plans=PLANS)
    app.add_middleware(ZeroClickMiddleware, settings=ZeroClickSettings(**CONFIG), ledger=ledger)
    loop = asyncio.new_event_loop()
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")

    def get(path: str, headers: dict[str, str]) -> httpx.Response:
        return loop.run_until_complete(client.get(path, headers=headers))

    yield get, ledger
    loop.run_until_complete(client.aclose())
    loop.close()


@EXAMPLES
@given(call=calls)
def test_starlette_never_500s_or_misreports(starlette_client: tuple[Any, Ledger], call: Call) -> None:
    get, ledger = starlette_client
    NEXT.update(meter=call.meter, quantity=call.quantity)
    before = used(ledger, call.buyer)
    response = get(call.path, call.headers())
    check(call.path, response.status_code, response.headers.get_list, before, used(ledger, call.buyer))


# -- Flask ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def flask_client() -> tuple[Any, Ledger]:
    flask = pytest.importorskip("flask")
    from zc_middleware.flask import ZeroClick

    app = flask.Flask("properties")

    @app.get("/free")
    def free() -> tuple[str, dict[str, str]]:
        return "free", {"X-ZeroClick-Usage": "api-requests=500"}

    @app.get("/paid")
    @metered("api-requests")
    def paid() -> tuple[str, dict[str, str]]:
        return "paid", {"X-ZeroClick-Reason": "usage_exhausted"}

    @app.get("/record")
    @metered("compute-seconds", estimate=30)
    def record() -> tuple[str, int]:
        return "record", _record()

    ledger = open_ledger("memory://", plans=PLANS)
    app.config["ZEROCLICK"] = CONFIG
    ZeroClick(app, ledger=ledger)
    return app.test_client(), ledger


@EXAMPLES
@given(call=calls)
def test_flask_never_500s_or_misreports(flask_client: tuple[Any, Ledger], call: Call) -> None:
    client, ledger = flask_client
    NEXT.update(meter=call.meter, quantity=call.quantity)
    before = used(ledger, call.buyer)
    response = client.get(call.path, headers=call.headers())
    response.get_data()
    response.close()  # as a WSGI server does: the hold is settled here
    check(call.path, response.status_code, response.headers.getlist, before, used(ledger, call.buyer))


# -- Django --------------------------------------------------------------------------------------
def django_views() -> list[Any]:
    """The URLconf of the Django properties: the same three routes."""
    from django.http import HttpRequest, HttpResponse
    from django.urls import path

    def free(request: HttpRequest) -> HttpResponse:
        return HttpResponse("free", headers={"X-ZeroClick-Usage": "api-requests=500"})

    @metered("api-requests")
    def paid(request: HttpRequest) -> HttpResponse:
        return HttpResponse("paid", headers={"X-ZeroClick-Reason": "usage_exhausted"})

    @metered("compute-seconds", estimate=30)
    def record(request: HttpRequest) -> HttpResponse:
        return HttpResponse("record", status=_record())

    return [path("free", free), path("paid", paid), path("record", record)]


urlpatterns: list[Any] = []


@pytest.fixture(scope="module")
def django_client() -> Iterator[tuple[Any, Ledger]]:
    pytest.importorskip("django")
    from django.test import AsyncClient, Client, override_settings

    import tests.django.test_django  # noqa: F401  # configures Django once for the whole run
    from zc_middleware.django import get_gate

    urlpatterns[:] = django_views()
    zeroclick = {key.upper(): value for key, value in CONFIG.items()}
    with override_settings(
        ROOT_URLCONF=__name__, MIDDLEWARE=["zc_middleware.django.ZeroClickMiddleware"], ZEROCLICK=zeroclick
    ):
        wsgi, asgi = Client(), AsyncClient()

        def get(mode: str, path: str, headers: dict[str, str]) -> Any:
            if mode == "wsgi":
                return wsgi.get(path, headers=headers)
            return asyncio.run(asgi.get(path, headers=headers))

        yield get, get_gate().ledger


@pytest.mark.parametrize("mode", ["wsgi", "asgi"])
@settings(EXAMPLES, max_examples=100)
@given(call=calls)
def test_django_never_500s_or_misreports(django_client: tuple[Any, Ledger], mode: str, call: Call) -> None:
    get, ledger = django_client
    NEXT.update(meter=call.meter, quantity=call.quantity)
    before = used(ledger, call.buyer)
    response = get(mode, call.path, call.headers())
    values = {name.lower(): [value] for name, value in response.items()}  # Django keeps one value a name
    check(call.path, response.status_code, lambda name: values.get(name, []), before, used(ledger, call.buyer))


# -- settings ------------------------------------------------------------------------------------
_json = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=12), st.binary(max_size=4)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=12), inner, max_size=3)),
    max_leaves=12,
)
_limits = st.one_of(st.integers(), st.floats(), st.text(max_size=4), st.binary(max_size=3), st.booleans(), st.none())
_meter_keys = st.one_of(
    st.sampled_from(["api-requests", "compute-seconds", "Compute Seconds", "nope"]), st.text(max_size=20)
)
_plans = st.dictionaries(
    st.text(max_size=8),
    st.fixed_dictionaries(
        {"includes": st.dictionaries(_meter_keys, st.fixed_dictionaries({"limit": _limits}), max_size=2)},
        optional={"default": st.one_of(st.booleans(), _json), "reset": _json},
    ),
    max_size=2,
)
_fields = list(ZeroClickSettings.model_fields)
_mappings = st.dictionaries(
    st.one_of(st.sampled_from(_fields + [f.upper() for f in _fields]), st.text(max_size=10)),
    _json,
    max_size=4,
).map(lambda extra: {"meters": {"api-requests": {}}, "ledger": "memory://", **extra})
_values = st.fixed_dictionaries(
    {"meters": st.one_of(st.just({"api-requests": {}}), st.dictionaries(_meter_keys, _json, max_size=2))},
    optional={
        "plans": st.one_of(_plans, _json),
        "routes": st.dictionaries(st.text(max_size=8), st.dictionaries(_meter_keys, _limits, max_size=2), max_size=2),
        "service_slug": st.one_of(st.text(max_size=12), _json),
        "identity_header": st.one_of(st.text(max_size=12), _json),
        "request_id_header": st.text(max_size=12),
        "api_base_url": st.one_of(st.text(max_size=30), st.sampled_from(["https://pay.zeroclick.io", "http://a b"])),
        "batch_size": _limits,
        "flush_interval": _limits,
        "on_ledger_error": _json,
    },
).map(lambda values: {"ledger": "memory://", **values})


@pytest.fixture
def no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.upper().startswith("ZEROCLICK_"):
            monkeypatch.delenv(name)


@SETTINGS_EXAMPLES
@given(values=_values)
def test_bad_settings_are_always_a_config_error(no_environment: None, values: dict[str, Any]) -> None:
    try:
        ZeroClickSettings(**values)
    except ConfigError:
        pass


@SETTINGS_EXAMPLES
@given(raw=st.one_of(_mappings, _json))
def test_bad_framework_mappings_are_always_a_config_error(no_environment: None, raw: Any) -> None:
    try:
        settings_from_mapping(raw, "ZEROCLICK")
    except ConfigError:
        pass
