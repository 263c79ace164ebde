"""Django specifics beyond the shared scenario suite.

``manage.py`` runs as a subprocess (checks, commands); view shapes run in-process
through Django's own WSGI-style (``Client``) and ASGI (``AsyncClient``) handlers,
on a real SQLite file.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

django = pytest.importorskip("django")

from django.conf import settings  # noqa: E402
from django.test import AsyncClient, Client, override_settings  # noqa: E402

from tests.apps.common import CHUNKS, PLANS  # noqa: E402
from tests.django import views  # noqa: E402
from tests.servers import ROOT, serve, uvicorn  # noqa: E402
from zc_middleware import open_ledger  # noqa: E402
from zc_middleware.ledger import Entitlement  # noqa: E402

MANAGE = ROOT / "tests" / "apps" / "django_app" / "manage.py"
ZEROCLICK: dict[str, Any] = {
    "METERS": {"api-requests": {}, "compute-seconds": {}},
    "PLANS": PLANS,
    "ROUTES": {"shop:configured": {"api-requests": 3}},
    "LEDGER": "memory://",
}

if not settings.configured:
    settings.configure(
        SECRET_KEY="tests",
        ALLOWED_HOSTS=["testserver"],
        ROOT_URLCONF="tests.django.urls",
        INSTALLED_APPS=["zc_middleware.django"],
        MIDDLEWARE=["zc_middleware.django.ZeroClickMiddleware"],
        DATABASES={},
        USE_TZ=True,
        ZEROCLICK=ZEROCLICK,
    )
    django.setup()

from zc_middleware.django import get_gate  # noqa: E402

# -- in-process: every view shape, through both of Django's handlers -----------------------------

MODES = ["wsgi", "asgi", "asgi-sync-mode"]


@pytest.fixture(autouse=True)
def sqlite_ledger(tmp_path: Path) -> Iterator[None]:
    with override_settings(ZEROCLICK={**ZEROCLICK, "LEDGER": f"sqlite:///{tmp_path / 'ledger.db'}"}):
        yield  # setting_changed resets the process's Gate on the way in and out


def call(mode: str, method: str, path: str, buyer: str | None = "agent-1", *, below: tuple[str, ...] = ()) -> Any:
    """A response whose body is fully read (so Django has closed it); ``below``: middleware listed
    after ours."""
    headers = {"zc-agent-id": buyer} if buyer else {}
    middleware = ["zc_middleware.django.ZeroClickMiddleware", *below]
    if mode == "wsgi":
        with override_settings(MIDDLEWARE=middleware):
            response = getattr(Client(), method.lower())(path, headers=headers)
        if response.streaming:
            response.content_read = b"".join(response.streaming_content)
        return response

    if mode == "asgi-sync-mode":
        middleware.append("tests.django.views.SyncOnlyMiddleware")

    async def go() -> Any:
        response = await getattr(AsyncClient(), method.lower())(path, headers=headers)
        if response.streaming:
            response.content_read = b"".join([chunk async for chunk in response.streaming_content])
        return response

    with override_settings(MIDDLEWARE=middleware):
        return asyncio.run(go())


def used(buyer: str, meter: str) -> int:
    return get_gate().ledger.balance(buyer).meter(meter).used


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("method", "path", "ran", "header", "meter", "debit"),
    [
        ("GET", "/fn-sync", "fn_sync", "api-requests=1", "api-requests", 1),
        ("GET", "/fn-async", "fn_async", "compute-seconds=3", "compute-seconds", 3),
        ("GET", "/per-method", "per_method_get", "api-requests=1", "api-requests", 1),
        ("HEAD", "/per-method", "per_method_get", "api-requests=1", "api-requests", 1),
        ("POST", "/per-method", "per_method_post", None, "api-requests", 0),
        ("GET", "/on-dispatch", "on_dispatch", "api-requests=2", "api-requests", 2),
        ("GET", "/dispatch-and-get", "dispatch_and_get", "api-requests=1, compute-seconds=5", "compute-seconds", 5),
        ("POST", "/dispatch-and-get", "dispatch_and_post", "api-requests=1", "api-requests", 1),
        # Django's own View.options, reached through the metered dispatch: paid as dispatch is
        ("OPTIONS", "/on-dispatch", None, "api-requests=2", "api-requests", 2),
        ("GET", "/async-view", "async_view", "compute-seconds=7", "compute-seconds", 7),
        ("GET", "/stacked", "stacked", "api-requests=1", "api-requests", 1),
        ("GET", "/shop/configured", None, "api-requests=3", "api-requests", 3),
    ],
)
def test_every_view_shape_is_priced_the_same_in_every_mode(
    mode: str, method: str, path: str, ran: str | None, header: str | None, meter: str, debit: int
) -> None:
    views.RAN.clear()
    response = call(mode, method, path, buyer="agent-1")
    assert response.status_code == 200
    assert response.headers.get("x-zeroclick-usage") == header
    assert used("agent-1", meter) == debit
    if ran:
        assert views.RAN == [ran]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("path", ["/fn-sync", "/per-method", "/on-dispatch", "/async-view"])
def test_no_identity_is_401_and_the_view_never_runs(mode: str, path: str) -> None:
    views.RAN.clear()
    response = call(mode, "GET", path, buyer=None)
    assert response.status_code == 401
    assert response.json()["error"] == "buyer_identity_required"
    assert response["content-length"] == str(len(response.content))
    assert views.RAN == []


@pytest.mark.parametrize("mode", MODES)
def test_402_before_the_class_based_view_runs(mode: str) -> None:
    get_gate().ledger.assign_plan("agent-2", "starter")
    for _ in range(5):
        assert call(mode, "GET", "/per-method", "agent-2").status_code == 200
    views.RAN.clear()
    response = call(mode, "GET", "/per-method", "agent-2")
    assert response.status_code == 402
    assert response["x-zeroclick-reason"] == "usage_exhausted"
    assert "x-zeroclick-usage" not in response
    assert views.RAN == []
    assert used("agent-2", "api-requests") == 5


@pytest.mark.parametrize("mode", MODES)
def test_the_apps_own_usage_header_is_replaced_once(mode: str) -> None:
    response = call(mode, "GET", "/own-header")
    assert response.headers.get("x-zeroclick-usage") == "api-requests=1"


@pytest.mark.parametrize("mode", MODES)
def test_middleware_reporting_usage_by_hand_never_reaches_a_refusal(mode: str) -> None:
    below = ("tests.django.views.HandReportingMiddleware",)
    get_gate().ledger.assign_plan("agent-4", "starter")
    for _ in range(5):
        assert call(mode, "GET", "/fn-sync", "agent-4", below=below)["x-zeroclick-usage"] == "api-requests=1"
    refused = call(mode, "GET", "/fn-sync", "agent-4", below=below)
    assert refused.status_code == 402 and "x-zeroclick-usage" not in refused
    assert refused["x-zeroclick-reason"] == "usage_exhausted"  # the Gate's, not the one set below
    missing = call(mode, "GET", "/fn-sync", None, below=below)
    assert missing.status_code == 401 and "x-zeroclick-usage" not in missing and "x-zeroclick-reason" not in missing
    for answer in (refused, missing):  # never kept by a cache: the buyer may have paid by the next try
        assert answer["cache-control"] == "no-store" and "cdn-cache-control" not in answer
    served = call(mode, "GET", "/fn-sync", "agent-4b", below=below)
    assert served["cache-control"] == "private, max-age=300" and "cdn-cache-control" not in served
    assert "x-zeroclick-reason" not in served
    assert used("agent-4", "api-requests") == 5
    # nor a free route: only the middleware speaks the contract's headers
    free = call(mode, "GET", "/free", None, below=below)
    assert "x-zeroclick-usage" not in free and "x-zeroclick-reason" not in free


UPDATE_CACHE = "django.middleware.cache.UpdateCacheMiddleware"
FETCH_CACHE = "django.middleware.cache.FetchFromCacheMiddleware"
OURS = "zc_middleware.django.ZeroClickMiddleware"


@pytest.mark.parametrize(
    "middleware",
    [[UPDATE_CACHE, OURS, FETCH_CACHE], [UPDATE_CACHE, FETCH_CACHE, OURS]],
    ids=["as-django-documents", "both-outside"],
)
def test_the_site_wide_cache_never_replays_a_paid_response(middleware: list[str]) -> None:
    caches = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": middleware[0]}}
    with override_settings(MIDDLEWARE=middleware, CACHES=caches, CACHE_MIDDLEWARE_SECONDS=60):
        first = Client().get("/fn-sync", headers={"zc-agent-id": "agent-5"})
        assert first.status_code == 200
        assert first["cache-control"].startswith("private")
        views.RAN.clear()
        # not from the cache: another buyer and a request with no identity are checked like any other
        assert Client().get("/fn-sync", headers={"zc-agent-id": "agent-6"})["x-zeroclick-usage"] == "api-requests=1"
        assert Client().get("/fn-sync").status_code == 401
        assert views.RAN == ["fn_sync"]
        views.RAN.clear()
        assert Client().get("/fn-sync", headers={"zc-agent-id": "agent-5"}).status_code == 200
        assert views.RAN == ["fn_sync"]  # ran, and billed, again
        # a view saying no-store itself: Django 4.2's cache stores it all the same unless it says private
        assert Client().get("/no-store", headers={"zc-agent-id": "agent-5"})["cache-control"] == "private, no-store"
        assert Client().get("/no-store").status_code == 401
        assert Client().get("/free")["cache-control"] == Client().get("/free")["cache-control"] == "max-age=60"
    assert used("agent-5", "api-requests") == 3
    assert used("agent-6", "api-requests") == 1


@pytest.mark.parametrize(
    ("middleware", "error"),
    [
        ([OURS, UPDATE_CACHE, FETCH_CACHE], "django.middleware.cache.UpdateCacheMiddleware is listed after"),
        ([OURS, "django.middleware.cache.CacheMiddleware"], "django.middleware.cache.CacheMiddleware is listed after"),
        ([OURS, "django.middleware.common.CommonMiddleware", OURS], "ZeroClickMiddleware is listed 2 times"),
    ],
    ids=["cache-inside", "cache-middleware-inside", "listed-twice"],
)
def test_a_middleware_order_that_would_bill_wrong_refuses_to_start(middleware: list[str], error: str) -> None:
    from django.core.exceptions import ImproperlyConfigured

    with override_settings(MIDDLEWARE=middleware), pytest.raises(ImproperlyConfigured, match=error):
        Client().get("/free")


@pytest.mark.parametrize("mode", MODES)
def test_free_route_is_untouched(mode: str) -> None:
    response = call(mode, "GET", "/free", buyer=None)
    assert response.status_code == 200
    assert "x-zeroclick-usage" not in response


@pytest.mark.parametrize("mode", MODES)
def test_streaming_response_settles_when_django_closes_it(mode: str) -> None:
    headers = {"zc-agent-id": "agent-3"}

    def before_and_after(response: Any, read: Any) -> tuple[int, bytes, int]:
        held = used("agent-3", "compute-seconds")  # the estimate is held while the body streams
        body = read(response)
        return held, body, used("agent-3", "compute-seconds")

    if mode == "wsgi":
        response = Client().get("/stream-work", headers=headers)
        held, body, settled = before_and_after(response, lambda r: b"".join(r.streaming_content))
    else:
        middleware = ["zc_middleware.django.ZeroClickMiddleware"]
        if mode == "asgi-sync-mode":
            middleware.append("tests.django.views.SyncOnlyMiddleware")

        async def go() -> tuple[int, bytes, int]:
            response = await AsyncClient().get("/stream-work", headers=headers)
            held = used("agent-3", "compute-seconds")
            body = b"".join([chunk async for chunk in response.streaming_content])
            return held, body, used("agent-3", "compute-seconds")

        with override_settings(MIDDLEWARE=middleware):
            held, body, settled = asyncio.run(go())
    assert body == b"".join(CHUNKS)
    assert held == 30
    assert settled == 15  # recorded while streaming, outside the middleware's own frame


@pytest.mark.parametrize("mode", MODES)
def test_a_streamed_body_failing_before_its_first_chunk_is_billed_only_if_the_headers_went_out(mode: str) -> None:
    headers = {"zc-agent-id": "agent-5"}
    if mode == "wsgi":
        # a WSGI server sends the headers with the first chunk: it answers 500 instead, unbilled
        response = Client().get("/stream-fails", headers=headers)
        assert response["x-zeroclick-usage"] == "api-requests=1"
        with pytest.raises(RuntimeError, match="the body failed"):
            b"".join(response.streaming_content)
        response.close()
        assert used("agent-5", "api-requests") == 0
        return
    middleware = ["zc_middleware.django.ZeroClickMiddleware"]
    if mode == "asgi-sync-mode":
        middleware.append("tests.django.views.SyncOnlyMiddleware")

    async def go() -> None:
        # Django's ASGI handler sends the headers, usage included, before the body: the proxy bills them
        response = await AsyncClient().get("/stream-fails", headers=headers)
        assert response["x-zeroclick-usage"] == "api-requests=1"
        with pytest.raises(RuntimeError, match="the body failed"):
            b"".join([chunk async for chunk in response.streaming_content])
        response.close()

    with override_settings(MIDDLEWARE=middleware):
        asyncio.run(go())
    assert used("agent-5", "api-requests") == 1


# -- manage.py as a subprocess -------------------------------------------------------------


def manage(
    tmp_path: Path,
    *args: str,
    settings_body: str | None = None,
    urls_body: str | None = None,
    env: dict[str, str] | None = None,
) -> Any:
    env = {"ZEROCLICK_LEDGER": f"sqlite:///{tmp_path / 'manage.db'}", "PYTHONPATH": f"{tmp_path}:{ROOT}", **(env or {})}
    argv = [sys.executable, str(MANAGE), *args]
    if urls_body is not None:
        (tmp_path / "bad_urls.py").write_text(textwrap.dedent(urls_body))
    if settings_body is not None:
        (tmp_path / "bad_settings.py").write_text(
            "from tests.apps.django_app.settings import *  # noqa: F403\n" + textwrap.dedent(settings_body)
        )
        argv.append("--settings=bad_settings")
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, env={**_env(), **env})


def _env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}


def test_check_passes_on_the_scenario_project(tmp_path: Path) -> None:
    result = manage(tmp_path, "check")
    assert result.returncode == 0, result.stderr
    assert "no issues" in result.stdout


def test_check_reports_a_malformed_setting_naming_the_key(tmp_path: Path) -> None:
    body = """
        ZEROCLICK = {**ZEROCLICK, "PLANS": {"starter": {"includes": {"api-requests": {"limit": -1}}}}}
    """
    result = manage(tmp_path, "check", settings_body=body)
    assert result.returncode != 0
    assert "zc_middleware.E001" in result.stderr
    assert "PLANS.starter.includes.api-requests.limit" in result.stderr


def test_check_reports_unknown_and_lower_case_keys(tmp_path: Path) -> None:
    result = manage(tmp_path, "check", settings_body='ZEROCLICK = {**ZEROCLICK, "meters": {}, "LEDGERS": "x"}\n')
    assert result.returncode != 0
    assert result.stderr.count("zc_middleware.E001") == 2
    assert "ZEROCLICK gives 'meters' twice, as 'METERS' and 'meters' (keys ignore case)" in result.stderr
    assert "ZEROCLICK.LEDGERS: unknown key (did you mean 'LEDGER'?)" in result.stderr


def test_check_names_an_unreadable_environment_variable(tmp_path: Path) -> None:
    result = manage(tmp_path, "check", env={"ZEROCLICK_PLANS": "{starter: {}}"})
    assert result.returncode != 0
    assert "zc_middleware.E001" in result.stderr
    assert "ZEROCLICK_PLANS cannot be read" in result.stderr
    assert "Traceback" not in result.stderr


def test_check_reports_an_unknown_meter_on_function_and_class_based_views(tmp_path: Path) -> None:
    urls = """
        from django.urls import path
        from django.utils.decorators import method_decorator
        from django.views import View
        from zc_middleware import metered

        @metered("api-requets")
        def typo(request): ...

        @method_decorator(metered("gpu-seconds", estimate=5), name="post")
        class Render(View):
            def post(self, request): ...

        urlpatterns = [path("typo", typo), path("render", Render.as_view())]
    """
    result = manage(tmp_path, "check", settings_body='ROOT_URLCONF = "bad_urls"\n', urls_body=urls)
    assert result.returncode != 0
    assert result.stderr.count("zc_middleware.E002") == 2
    assert "'api-requets'" in result.stderr
    assert "'gpu-seconds'" in result.stderr


def test_check_reports_a_middleware_order_that_would_bill_wrong(tmp_path: Path) -> None:
    body = f"MIDDLEWARE = [*MIDDLEWARE, {UPDATE_CACHE!r}, *MIDDLEWARE]\n"
    result = manage(tmp_path, "check", settings_body=body)
    assert result.returncode != 0
    assert "zc_middleware.E003" in result.stderr  # listed twice
    assert "zc_middleware.E004" in result.stderr  # the cache after it
    assert "Traceback" not in result.stderr
    body = 'MIDDLEWARE = ["django.middleware.http.ConditionalGetMiddleware", *MIDDLEWARE]\n'
    result = manage(tmp_path, "check", settings_body=body)
    assert result.returncode == 0  # a warning
    assert "zc_middleware.W003" in result.stderr


def test_check_reports_a_meter_on_both_dispatch_and_a_handler(tmp_path: Path) -> None:
    urls = """
        from django.urls import path
        from django.utils.decorators import method_decorator
        from django.views import View
        from zc_middleware import metered

        @method_decorator(metered("api-requests"), name="dispatch")
        class Twice(View):
            @method_decorator(metered("api-requests", 5))
            def get(self, request): ...

        urlpatterns = [path("twice", Twice.as_view())]
    """
    result = manage(tmp_path, "check", settings_body='ROOT_URLCONF = "bad_urls"\n', urls_body=urls)
    assert result.returncode != 0
    assert "zc_middleware.E002" in result.stderr
    assert "is metered on 'api-requests', and so is the whole view" in result.stderr
    assert "Traceback" not in result.stderr


def test_check_warns_about_missing_middleware_and_unrouted_names(tmp_path: Path) -> None:
    body = 'MIDDLEWARE = []\nZEROCLICK = {**ZEROCLICK, "ROUTES": {"nowhere": {"api-requests": 1}}}\n'
    result = manage(tmp_path, "check", settings_body=body)
    assert result.returncode == 0  # warnings only
    assert "zc_middleware.W001" in result.stderr
    assert "zc_middleware.W002" in result.stderr
    assert "'nowhere'" in result.stderr


def test_a_server_refuses_to_start_on_an_unknown_meter(tmp_path: Path) -> None:
    (tmp_path / "bad_urls.py").write_text(
        "from django.urls import path\nfrom zc_middleware import metered\n\n"
        "@metered('nope')\ndef v(request): ...\n\nurlpatterns = [path('v', v)]\n"
    )
    (tmp_path / "bad_settings.py").write_text(
        "from tests.apps.django_app.settings import *  # noqa: F403\nROOT_URLCONF = 'bad_urls'\n"
    )
    env = {"PYTHONPATH": f"{tmp_path}:{ROOT}", "DJANGO_SETTINGS_MODULE": "bad_settings", "ZC_TEST_QUIET": "1"}
    with (
        pytest.raises(RuntimeError, match="server exited"),
        serve(uvicorn("tests.apps.django_app.asgi:application"), env=env),
    ):
        pass


def test_assign_and_balance_commands_print_the_table(tmp_path: Path) -> None:
    missing = manage(tmp_path, "zeroclick_balance", "agent-9")  # no ledger yet: said, and none is made
    assert missing.returncode != 0
    assert f"no ledger at {tmp_path / 'manage.db'}" in missing.stderr
    assert not (tmp_path / "manage.db").exists()
    open_ledger(f"sqlite:///{tmp_path / 'manage.db'}", plans=PLANS).close()  # as the app does on start-up
    assigned = manage(tmp_path, "zeroclick_assign", "agent-9", "starter", "--expires", "2099-01-31T00:00:00Z")
    assert assigned.returncode == 0, assigned.stderr
    assert "buyer agent-9: plan starter (active, expires 2099-01-31 00:00 UTC)" in assigned.stdout
    ledger = open_ledger(f"sqlite:///{tmp_path / 'manage.db'}", plans=PLANS)
    try:
        hold = ledger.reserve("agent-9", {"api-requests": 2})
        ledger.adjust(hold, {"api-requests": 2})  # type: ignore[arg-type]
    finally:
        ledger.close()
    result = manage(tmp_path, "zeroclick_balance", "agent-9")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "buyer agent-9: plan starter (active, expires 2099-01-31 00:00 UTC)"
    assert lines[1].split() == ["meter", "limit", "used", "remaining", "%", "used", "period", "start", "period", "end"]
    assert lines[3].split()[:5] == ["api-requests", "5", "2", "3", "40"]
    assert lines[4].split()[:5] == ["compute-seconds", "100", "0", "100", "0"]


def test_balance_command_prints_the_plan_history(tmp_path: Path) -> None:
    ledger = open_ledger(f"sqlite:///{tmp_path / 'manage.db'}", plans=PLANS, clock=lambda: 1767225600.0)
    try:
        ledger.apply_entitlement(Entitlement("agent-9", "starter", "active", 1767225600.0, None, 3, "evt-1", "k1"))
    finally:
        ledger.close()
    result = manage(tmp_path, "zeroclick_balance", "agent-9")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-2:] == [
        "plan history:",
        "  2026-01-01 00:00:00 UTC  v3  kid k1  plan starter, active, from 2026-01-01 00:00  (evt-1)",
    ]
    assert "plan history: no entitlement writes" in manage(tmp_path, "zeroclick_balance", "agent-8").stdout


def test_assign_refuses_unknown_plans_and_naive_dates(tmp_path: Path) -> None:
    open_ledger(f"sqlite:///{tmp_path / 'manage.db'}", plans=PLANS).close()
    unknown = manage(tmp_path, "zeroclick_assign", "agent-9", "gold")
    assert unknown.returncode != 0
    assert "plan 'gold' is not declared" in unknown.stderr
    naive = manage(tmp_path, "zeroclick_assign", "agent-9", "starter", "--expires", "2099-01-31T00:00:00")
    assert naive.returncode != 0
    assert "no UTC offset" in naive.stderr
    # Python drops an offset written after a bare date: the hint names a form that works
    day = manage(tmp_path, "zeroclick_assign", "agent-9", "starter", "--expires", "2099-01-31+02:00")
    assert day.returncode != 0
    assert "'2099-01-31+02:00' names a day, not a moment; write e.g. 2099-01-31T00:00+02:00" in day.stderr
    hinted = manage(tmp_path, "zeroclick_assign", "agent-9", "starter", "--expires", "2099-01-31T00:00+02:00")
    assert hinted.returncode == 0, hinted.stderr
    assert "Assigned plan starter to agent-9." in hinted.stdout
    assert "(active, expires 2099-01-30 22:00 UTC)" in hinted.stdout


def test_routes_command_lists_metered_patterns(tmp_path: Path) -> None:
    result = manage(tmp_path, "zeroclick_routes")
    assert result.returncode == 0, result.stderr
    rows = {tuple(line.split()[:3]) for line in result.stdout.splitlines()[2:]}
    assert ("/render", "-", "POST") in rows
    assert ("/configured", "configured", "ANY") in rows
    assert not any(row[0] in ("/free", "/runs") for row in rows)
    assert "compute-seconds (estimate 30)" in result.stdout  # as flask zeroclick routes writes it
    missing = manage(tmp_path, "zeroclick_routes", "--urlconf", "nosuch.urls")
    assert missing.returncode != 0
    assert "cannot import the URLconf: No module named 'nosuch'" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_import_without_django_names_the_extra() -> None:
    code = "import sys\nsys.modules['django'] = None\nimport zc_middleware.django\n"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode != 0
    assert "pip install 'zc-middleware[django]'" in result.stderr
    assert "During handling" not in result.stderr


def test_check_accepts_lower_case_keys_and_lists_the_valid_keys_once(tmp_path: Path) -> None:
    body = """
        ZEROCLICK = {key.lower(): value for key, value in ZEROCLICK.items()}
        ZEROCLICK["ledgr"] = ZEROCLICK["plan"] = "x"
        ZEROCLICK["plans"] = {"starter": {"includes": {"api-request": {"limit": 1}}}}
    """
    result = manage(tmp_path, "check", settings_body=body)
    out = result.stderr
    assert result.returncode != 0
    assert "(zc_middleware.E001) ZEROCLICK.ledgr: unknown key (did you mean 'ledger'?)\n" in out
    assert "(zc_middleware.E001) ZEROCLICK.plan: unknown key (did you mean 'plans'?); valid keys: meters," in out
    assert out.count("identity_header") == 1
    assert "HINT" not in out
    fixed = body.replace('ZEROCLICK["ledgr"] = ZEROCLICK["plan"] = "x"', "")
    out = manage(tmp_path, "check", settings_body=fixed).stderr
    assert "(zc_middleware.E001) ZEROCLICK.plans.starter.includes: unknown meter 'api-request' (did you mean" in out
    assert manage(tmp_path, "check", settings_body=fixed.replace("api-request", "api-requests")).returncode == 0
