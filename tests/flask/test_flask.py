"""Flask and plain-WSGI specifics beyond the shared scenario suite."""

from __future__ import annotations

import copy
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("flask")

from flask import Flask, Response, request, send_file, stream_with_context
from flask.views import MethodView
from werkzeug.exceptions import NotFound
from werkzeug.routing import Map, Rule
from werkzeug.test import Client, EnvironBuilder
from werkzeug.wrappers import Request as WRequest
from werkzeug.wrappers import Response as WResponse

from tests.servers import ROOT, free_port
from zc_middleware import ConfigError, ZeroClickSettings, metered, record_usage
from zc_middleware.flask import ZeroClick
from zc_middleware.ledger.memory import MemoryLedger
from zc_middleware.wsgi import ZeroClickWSGI

PLANS = {
    "starter": {
        "default": True,
        "includes": {"api-requests": {"limit": 3}, "compute-seconds": {"limit": 100, "reset": "day"}},
    },
    "pro": {"includes": {"api-requests": {"limit": 1000}}},
}
CONFIG = {"meters": {"api-requests": {}, "compute-seconds": {}}, "plans": PLANS, "ledger": "memory://"}
AGENT = {"zc-agent-id": "agent-1"}
FLASK_30 = version("flask").startswith("3.0.")


def used(ledger: MemoryLedger, meter: str = "api-requests", buyer: str = "agent-1") -> int:
    return ledger.balance(buyer).meter(meter).used


def make_app() -> Flask:
    app = Flask(__name__)

    @app.get("/search")
    @metered("api-requests")
    def search() -> dict[str, bool]:
        return {"ok": True}

    @app.get("/free")
    def free() -> str:
        return "free"

    return app


# -- configuration ---------------------------------------------------------------------


def test_factory_pattern_keeps_state_per_app() -> None:
    zc = ZeroClick(settings=ZeroClickSettings(**CONFIG))  # type: ignore[arg-type]
    first, second = make_app(), make_app()
    zc.init_app(first)
    zc.init_app(second)
    assert zc.gate_for(first) is not zc.gate_for(second)
    assert first.extensions["zeroclick"].gate is zc.gate_for(first)
    for app in (first, second):
        response = app.test_client().get("/search", headers=AGENT, buffered=True)
        assert response.headers["x-zeroclick-usage"] == "api-requests=1"
        assert used(zc.gate_for(app).ledger) == 1  # type: ignore[arg-type]
    with first.app_context():
        assert zc.gate_for() is zc.gate_for(first)


def test_init_app_twice_on_one_app_is_an_error() -> None:
    app = make_app()
    ZeroClick(app, settings=CONFIG)
    with pytest.raises(ConfigError, match="already set up"):
        ZeroClick(app, settings=CONFIG)


def test_config_is_read_in_either_case_and_never_written_back() -> None:
    app = make_app()
    app.config["ZEROCLICK"] = {
        "METERS": {"api-requests": {}, "compute-seconds": {}},
        "plans": PLANS,
        "LEDGER": "memory://",
    }
    before = copy.deepcopy(dict(app.config))
    zc = ZeroClick(app)
    assert app.test_client().get("/search", headers=AGENT, buffered=True).status_code == 200
    assert dict(app.config) == before
    assert zc.gate_for(app).settings.identity_header == "zc-agent-id"  # a default, used but not written


def test_no_config_key_is_added_when_settings_are_explicit() -> None:
    app = make_app()
    ZeroClick(app, settings=ZeroClickSettings(**CONFIG))  # type: ignore[arg-type]
    assert "ZEROCLICK" not in app.config


def test_explicit_settings_win_over_config_which_wins_over_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZEROCLICK_SERVICE_SLUG", "from-env")
    monkeypatch.setenv("ZEROCLICK_IDENTITY_HEADER", "x-from-env")
    app = make_app()
    app.config["ZEROCLICK"] = {**CONFIG, "service_slug": "from-config", "identity_header": "x-from-config"}
    gate = ZeroClick(app, settings={"SERVICE_SLUG": "explicit"}).gate_for(app)
    assert gate.settings.service_slug == "explicit"
    assert gate.settings.identity_header == "x-from-config"

    bare = make_app()
    bare.config["ZEROCLICK"] = CONFIG
    assert ZeroClick(bare).gate_for(bare).settings.service_slug == "from-env"


def test_a_whole_settings_object_wins_over_config() -> None:
    app = make_app()
    app.config["ZEROCLICK"] = {**CONFIG, "service_slug": "from-config"}
    gate = ZeroClick(app, settings=ZeroClickSettings(**CONFIG, service_slug="explicit")).gate_for(app)  # type: ignore[arg-type]
    assert gate.settings.service_slug == "explicit"


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ("meters=api-requests", "must be a dict"),
        ({"meters": {"api-requests": {}}, "METERS": {}}, "'meters' twice"),
        ({"meters": {"api-requests": {}}, "ledger": "mongo://x"}, "unknown ledger URL"),
        ({"meters": {}, "ledger": "memory://"}, "declare at least one meter"),
    ],
)
def test_malformed_config_is_a_clear_error_at_init_app(config: object, message: str) -> None:
    app = make_app()
    app.config["ZEROCLICK"] = config
    with pytest.raises(ConfigError, match=message) as info:
        ZeroClick(app)
    assert "ZEROCLICK" in str(info.value)
    assert "zeroclick" not in app.extensions


# -- start-up validation -------------------------------------------------------------


def test_unknown_meter_fails_at_init_app() -> None:
    app = make_app()

    @app.get("/typo")
    @metered("api-requets")
    def typo() -> str:
        return "x"

    with pytest.raises(ConfigError, match="api-requets"):
        ZeroClick(app, settings=CONFIG)
    assert "zeroclick" not in app.extensions


def test_unknown_meter_on_a_method_view_fails_at_init_app() -> None:
    class Item(MethodView):
        @metered("compute-secs")
        def post(self) -> str:
            return "x"

    app = make_app()
    app.add_url_rule("/item", view_func=Item.as_view("item"))
    with pytest.raises(ConfigError, match="compute-secs"):
        ZeroClick(app, settings=CONFIG)


def test_route_added_after_init_app_with_an_unknown_meter_fails_alone(caplog: pytest.LogCaptureFixture) -> None:
    ledger = MemoryLedger(plans=PLANS)
    app = make_app()
    ZeroClick(app, settings=CONFIG, ledger=ledger)

    @app.get("/late")
    @metered("api-requets")
    def late() -> str:
        return "late"

    @app.get("/later")
    @metered("compute-second")
    def later() -> str:
        return "later"

    app.testing = True
    client = app.test_client()
    # Flask has no start-up hook: the first request finds both typos and logs each, once ...
    assert client.get("/free").text == "free"
    assert client.get("/free").text == "free"
    logged = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(logged) == 2 and all(m.endswith("its requests fail until the app is fixed") for m in logged)
    assert "late is metered on 'api-requets'" in logged[0] and "later is metered on 'compute-second'" in logged[1]
    # ... the route itself never runs unbilled (testing propagates what is a 500 in production) ...
    with pytest.raises(ConfigError, match="api-requets"):
        client.get("/late", headers=AGENT)
    # ... and every other route is served as before
    assert client.get("/free").status_code == 200
    assert client.get("/search", headers=AGENT).headers["X-ZeroClick-Usage"] == "api-requests=1"
    assert used(ledger) == 1


BAD_APP = """
from flask import Flask
from zc_middleware import metered
from zc_middleware.flask import ZeroClick

app = Flask(__name__)

@app.get("/typo")
@metered("api-requets")
def typo():
    return "x"

app.config["ZEROCLICK"] = {"meters": {"api-requests": {}}, "ledger": "memory://"}
ZeroClick(app)
"""


def test_unknown_meter_stops_gunicorn_at_startup(tmp_path: Path) -> None:
    (tmp_path / "bad_app.py").write_text(BAD_APP)
    argv = [sys.executable, "-m", "gunicorn", "-b", f"127.0.0.1:{free_port()}", "bad_app:app"]
    env = {"PYTHONPATH": f"{tmp_path}:{ROOT}", "PATH": "/usr/bin:/bin"}
    result = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "api-requets" in result.stderr


def test_without_flask_the_import_names_the_extra() -> None:
    code = "import sys\nsys.modules['flask'] = None\nimport zc_middleware.flask\n"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode != 0
    assert "pip install 'zc-middleware[flask]'" in result.stderr
    assert "During handling" not in result.stderr


# -- requests ---------------------------------------------------------------------------


def paid_app(**config: Any) -> tuple[Flask, MemoryLedger, list[str]]:
    ledger = MemoryLedger(plans=PLANS)
    ran: list[str] = []
    app = Flask(__name__)

    @app.before_request
    def earlier_hook() -> None:
        ran.append("hook")

    @app.get("/search")
    @metered("api-requests")
    def search() -> Response:
        ran.append("search")
        return Response("{}", headers={"X-ZeroClick-Usage": "api-requests=99"}, mimetype="application/json")

    @app.get("/none")
    @metered("api-requests")
    def returns_none() -> None:
        ran.append("none")

    class Item(MethodView):
        @metered("api-requests", 2)
        def get(self) -> str:
            return "item"

        def post(self) -> str:
            return "free post"

    app.add_url_rule("/item", view_func=Item.as_view("item"))
    ZeroClick(app, settings={**CONFIG, "service_slug": "acme", **config}, ledger=ledger)
    return app, ledger, ran


def test_deny_is_the_gates_402_and_nothing_of_the_app_runs() -> None:
    app, ledger, ran = paid_app()
    ledger.mark_spend_cap_reached("agent-1")
    response = app.test_client().get("/search", headers=AGENT, buffered=True)
    assert response.status_code == 402
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-zeroclick-reason"] == "spend_cap_reached"
    assert response.headers["cache-control"] == "no-store"
    assert response.json == {
        "error": "payment_required",
        "reason": "spend_cap_reached",
        "meter": None,
        "message": "The plan's spend cap for the current period has been reached.",
        "extendUrl": "https://acme.pay.zeroclick.io/extend",
    }
    assert "x-zeroclick-usage" not in response.headers
    assert ran == []  # not even a before_request hook registered before init_app


def test_the_app_cannot_set_the_usage_header_itself() -> None:
    app, ledger, _ = paid_app()
    response = app.test_client().get("/search", headers=AGENT, buffered=True)
    assert response.headers.getlist("x-zeroclick-usage") == ["api-requests=1"]
    assert used(ledger) == 1


def test_a_hook_reporting_usage_by_hand_never_reaches_a_refusal() -> None:
    app, ledger, _ = paid_app()

    @app.after_request
    def by_hand(response: Response) -> Response:
        response.headers["x-zeroclick-usage"] = "api-requests=5"
        response.headers["X-ZeroClick-Reason"] = "plan_expired"
        return response

    app.add_url_rule("/open", "open", lambda: "open")
    client = app.test_client()
    assert client.get("/search", headers=AGENT).headers.getlist("X-ZeroClick-Usage") == ["api-requests=1"]
    missing = client.get("/search")
    assert missing.status_code == 401 and "X-ZeroClick-Usage" not in missing.headers
    ledger.mark_spend_cap_reached("agent-1")
    refused = client.get("/search", headers=AGENT)
    assert refused.status_code == 402 and "X-ZeroClick-Usage" not in refused.headers
    assert refused.headers.getlist("X-ZeroClick-Reason") == ["spend_cap_reached"]  # the Gate's, not the hook's
    assert used(ledger) == 1
    # nor a free route: only the middleware speaks the contract's headers
    assert "X-ZeroClick-Usage" not in client.get("/open").headers
    assert "X-ZeroClick-Reason" not in client.get("/open").headers
    assert "X-ZeroClick-Reason" not in missing.headers


def test_a_refusal_never_carries_a_usage_header_from_inner_middleware_or_a_new_response() -> None:
    ledger = MemoryLedger(plans=PLANS)
    app = make_app()
    inner = app.wsgi_app

    def by_hand(environ: dict[str, Any], start_response: Any) -> Any:  # wrapped before ZeroClick: inside it
        return inner(environ, lambda s, h, *e: start_response(s, [*h, ("X-ZeroClick-Usage", "api-requests=9")], *e))

    app.wsgi_app = by_hand  # type: ignore[method-assign]

    @app.after_request
    def replace(response: Response) -> Response:  # after_request may return a new response
        return Response(response.get_data(), response.status_code, headers={"X-ZeroClick-Usage": "api-requests=8"})

    ZeroClick(app, settings=CONFIG, ledger=ledger)
    client = app.test_client()
    assert client.get("/search", headers=AGENT).headers.getlist("X-ZeroClick-Usage") == ["api-requests=1"]
    assert "X-ZeroClick-Usage" not in client.get("/search").headers  # 401
    ledger.mark_spend_cap_reached("agent-1")
    refused = client.get("/search", headers=AGENT)
    assert refused.status_code == 402 and "X-ZeroClick-Usage" not in refused.headers
    assert used(ledger) == 1


def test_method_view_handlers_are_priced_per_method() -> None:
    app, ledger, _ = paid_app()
    client = app.test_client()
    response = client.get("/item", headers=AGENT, buffered=True)
    assert response.headers["x-zeroclick-usage"] == "api-requests=2"
    assert client.post("/item", buffered=True).status_code == 200  # free: no identity needed
    assert used(ledger) == 2


def test_a_class_based_view_metered_as_a_whole_is_paid_and_stacks_with_its_handlers() -> None:
    """``decorators = [metered(...)]`` and ``metered(...)(View.as_view(...))`` price every method; a
    handler's own marks add to them, as stacked decorators do."""

    class Whole(MethodView):
        decorators = [metered("api-requests")]

        def get(self) -> str:
            return "whole"

    class Stacked(MethodView):
        decorators = [metered("api-requests")]

        @metered("compute-seconds", 5)
        def get(self) -> str:
            return "stacked"

        def post(self) -> str:
            return "post"

    class Wrapped(MethodView):
        def get(self) -> str:
            return "wrapped"

    ledger = MemoryLedger(plans=PLANS)
    app = Flask(__name__)
    app.add_url_rule("/whole", view_func=Whole.as_view("whole"))
    app.add_url_rule("/stacked", view_func=Stacked.as_view("stacked"))
    app.add_url_rule("/wrapped", view_func=metered("compute-seconds", 3)(Wrapped.as_view("wrapped")))
    ZeroClick(app, settings=CONFIG, ledger=ledger)
    client = app.test_client()
    assert client.get("/whole", buffered=True).status_code == 401  # paid: no identity, no view
    usage = {
        path: client.get(path, headers=AGENT, buffered=True).headers.get("x-zeroclick-usage")
        for path in ("/whole", "/stacked", "/wrapped")
    }
    assert usage == {
        "/whole": "api-requests=1",
        "/stacked": "api-requests=1, compute-seconds=5",
        "/wrapped": "compute-seconds=3",
    }
    assert client.post("/stacked", headers=AGENT, buffered=True).headers["x-zeroclick-usage"] == "api-requests=1"
    assert used(ledger) == 3
    assert used(ledger, "compute-seconds") == 8


def test_the_same_meter_on_a_class_based_view_and_its_handler_fails_at_init_app() -> None:
    class Twice(MethodView):
        decorators = [metered("api-requests")]

        @metered("api-requests", 5)
        def get(self) -> str:
            return "twice"

    app = make_app()
    app.add_url_rule("/twice", view_func=Twice.as_view("twice"))
    with pytest.raises(ConfigError, match=r"Twice.get is metered on 'api-requests', and so is the whole view"):
        ZeroClick(app, settings=CONFIG)


def test_automatic_options_is_free_because_no_view_runs() -> None:
    app, ledger, _ = paid_app()
    response = app.test_client().options("/search", headers=AGENT, buffered=True)
    assert response.status_code == 200
    assert "x-zeroclick-usage" not in response.headers
    assert ledger.balance("agent-1").meter("api-requests").used == 0


def test_view_returning_a_non_response_is_flasks_clear_500_and_releases() -> None:
    app, ledger, ran = paid_app()
    response = app.test_client().get("/none", headers=AGENT, buffered=True)
    assert response.status_code == 500
    assert "x-zeroclick-usage" not in response.headers
    assert ran[-1] == "none"
    assert used(ledger) == 0

    app.testing = True  # exceptions propagate through the middleware: still released, still Flask's message
    with pytest.raises(TypeError, match="did not return a valid response"):
        app.test_client().get("/none", headers=AGENT, buffered=True)
    assert used(ledger) == 0


# -- WSGI bodies iterated late, on another thread -----------------------------------


def wsgi_call(app: Any, path: str) -> tuple[list[Any], Any]:
    started: list[Any] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: object = None) -> Any:
        started.append((status, headers))
        return lambda data: None

    environ = EnvironBuilder(path=path, headers=AGENT).get_environ()
    return started, app(environ, start_response)


def drain_on_thread(body: Any) -> list[bytes]:
    chunks: list[bytes] = []
    thread = threading.Thread(target=lambda: chunks.extend(body))
    thread.start()
    thread.join(10)
    return chunks


def streaming_flask_app(ledger: MemoryLedger) -> Flask:
    app = Flask(__name__)

    @app.get("/render")
    @metered("compute-seconds", estimate=30)
    def render() -> Response:
        def body() -> Iterator[bytes]:
            yield b"start\n"
            record_usage("compute-seconds", 4)  # on the thread that iterates, after the headers
            yield f"path {request.path}\n".encode()

        return Response(stream_with_context(body()))

    @app.get("/file")
    @metered("compute-seconds", estimate=30)
    def file() -> Response:
        record_usage("compute-seconds", 3)
        return send_file(Path(__file__), mimetype="text/plain")  # direct_passthrough: no response.close hooks

    ZeroClick(app, settings=CONFIG, ledger=ledger)
    return app


@pytest.mark.skipif(
    FLASK_30, reason="Flask 3.0's stream_with_context cannot be iterated on another thread, even without ZeroClick"
)
def test_flask_stream_iterated_on_another_thread_settles_only_at_close() -> None:
    ledger = MemoryLedger(plans=PLANS)
    app = streaming_flask_app(ledger)
    started, body = wsgi_call(app, "/render")
    assert started[0][0] == "200 OK"
    assert not any(k.lower() == "x-zeroclick-usage" for k, _ in started[0][1])  # nothing recorded yet
    assert drain_on_thread(body) == [b"start\n", b"path /render\n"]
    assert used(ledger, "compute-seconds") == 30  # still the hold: the body is not closed
    body.close()
    assert used(ledger, "compute-seconds") == 4
    assert app.extensions["zeroclick"].gate.stats["late_usage"] == 1


def test_flask_send_file_settles_at_close() -> None:
    ledger = MemoryLedger(plans=PLANS)
    app = streaming_flask_app(ledger)
    started, body = wsgi_call(app, "/file")
    assert ("X-ZeroClick-Usage", "compute-seconds=3") in started[0][1]
    assert b"".join(drain_on_thread(body)) == Path(__file__).read_bytes()
    assert used(ledger, "compute-seconds") == 30
    body.close()
    assert used(ledger, "compute-seconds") == 3


def werkzeug_app(ledger: MemoryLedger) -> ZeroClickWSGI:
    @metered("compute-seconds", estimate=30)
    def render(request: WRequest) -> WResponse:
        def body() -> Iterator[bytes]:
            yield b"a"
            record_usage("compute-seconds", 5)
            yield b"b"

        return WResponse(body())

    @metered("api-requests")
    def broken(request: WRequest) -> None:
        return None

    views = {"render": render}
    url_map = Map([Rule("/render", endpoint="render"), Rule("/broken", endpoint=broken)])

    def dispatch(environ: dict[str, Any], start_response: Any) -> Any:
        endpoint, _ = url_map.bind_to_environ(environ).match()
        view = views.get(endpoint, endpoint)
        response = view(WRequest(environ))
        return response(environ, start_response) if response is not None else None

    return ZeroClickWSGI(dispatch, url_map=url_map, views=views, settings=ZeroClickSettings(**CONFIG), ledger=ledger)  # type: ignore[arg-type]


def test_werkzeug_body_iterated_on_another_thread_settles_only_at_close() -> None:
    ledger = MemoryLedger(plans=PLANS)
    _, body = wsgi_call(werkzeug_app(ledger), "/render")
    assert drain_on_thread(body) == [b"a", b"b"]
    assert used(ledger, "compute-seconds") == 30
    body.close()
    assert used(ledger, "compute-seconds") == 5


def test_werkzeug_app_returning_no_iterable_is_a_clear_error_and_releases() -> None:
    ledger = MemoryLedger(plans=PLANS)
    with pytest.raises(TypeError, match="returned NoneType, not an iterable of bytes"):
        wsgi_call(werkzeug_app(ledger), "/broken")  # the endpoint is the view itself
    assert used(ledger) == 0


def test_werkzeug_unknown_meter_fails_at_construction() -> None:
    @metered("api-requets")
    def typo(request: WRequest) -> WResponse:
        return WResponse("x")

    with pytest.raises(ConfigError, match="api-requets"):
        ZeroClickWSGI(
            lambda e, s: [],
            url_map=Map([Rule("/typo", endpoint="typo")]),
            views={"typo": typo},
            settings=ZeroClickSettings(**CONFIG),  # type: ignore[arg-type]
        )


# -- the CLI ---------------------------------------------------------------------------


def test_cli_routes_balance_and_assign() -> None:
    app, ledger, _ = paid_app()

    @app.post("/render")  # added after init_app: listed too
    @metered("compute-seconds", estimate=30)
    def render() -> str:
        return "r"

    runner = app.test_cli_runner()
    routes = runner.invoke(args=["zeroclick", "routes"])
    assert routes.exit_code == 0, routes.output
    assert routes.output.splitlines() == [
        "route    methods  endpoint      meters",
        "-------  -------  ------------  -----------------------------",
        "/item    GET      item          api-requests=2",
        "/none    GET      returns_none  api-requests=1",
        "/render  POST     render        compute-seconds (estimate 30)",
        "/search  GET      search        api-requests=1",
    ]

    app.test_client().get("/search", headers=AGENT, buffered=True)
    balance = runner.invoke(args=["zeroclick", "balance", "agent-1"])
    assert balance.exit_code == 0, balance.output
    out = balance.output.splitlines()
    assert out[:2] == [
        "buyer agent-1: plan starter (active)",
        "meter            limit  used  remaining  % used  period start      period end",
    ]
    assert out[3].split()[:5] == ["api-requests", "3", "1", "2", "33.33"]
    assert out[4].split()[:5] == ["compute-seconds", "100", "0", "100", "0"]
    assert out[5:] == ["", "plan history: no entitlement writes"]
    period = ledger.balance("agent-1").meter("api-requests")
    assert period.period_end is not None
    assert out[3].endswith(f"{period.period_start:%Y-%m-%d %H:%M}  {period.period_end:%Y-%m-%d %H:%M}")

    assigned = runner.invoke(args=["zeroclick", "assign", "agent-1", "pro"])
    assert assigned.exit_code == 0, assigned.output
    assert assigned.output.startswith("Assigned plan pro to agent-1.\nbuyer agent-1: plan pro (active)\n")
    assert ledger.balance("agent-1").plan == "pro"
    assert used(ledger) == 0

    unknown = runner.invoke(args=["zeroclick", "assign", "agent-1", "platinum"])
    assert unknown.exit_code == 1
    assert "Error: plan 'platinum' is not declared in settings.plans" in unknown.output

    expiring = runner.invoke(args=["zeroclick", "assign", "agent-1", "pro", "--expires", "2099-01-31T00:00Z"])
    assert expiring.exit_code == 0, expiring.output
    assert "buyer agent-1: plan pro (active, expires 2099-01-31 00:00 UTC)\n" in expiring.output
    assert ledger.balance("agent-1").expires_at == datetime(2099, 1, 31, tzinfo=timezone.utc)
    day = runner.invoke(args=["zeroclick", "assign", "agent-1", "pro", "--expires", "2099-01-31"])
    assert day.exit_code == 2
    assert "'2099-01-31' names a day, not a moment; write e.g. 2099-01-31T00:00Z" in day.output
    naive = runner.invoke(args=["zeroclick", "assign", "agent-1", "pro", "--starts", "2099-01-31T08:30"])
    assert naive.exit_code == 2
    assert "'2099-01-31T08:30' has no UTC offset; add one, e.g. 2099-01-31T08:30Z" in naive.output


def test_cli_routes_without_paid_routes() -> None:
    app = Flask(__name__)
    app.add_url_rule("/free", "free", lambda: "free")
    ZeroClick(app, settings=CONFIG)
    result = app.test_cli_runner().invoke(args=["zeroclick", "routes"])
    assert result.output == "No metered routes.\n"


def test_werkzeug_rules_added_later_are_matched_and_validated(caplog: pytest.LogCaptureFixture) -> None:
    ledger = MemoryLedger(plans=PLANS)
    app = werkzeug_app(ledger)
    with pytest.raises(NotFound):  # not routed yet: the app itself answers
        wsgi_call(app, "/later")

    @metered("api-requests", 2)
    def later(request: WRequest) -> WResponse:
        return WResponse("later")

    app.url_map.add(Rule("/later", endpoint=later))
    started, body = wsgi_call(app, "/later")
    assert ("X-ZeroClick-Usage", "api-requests=2") in started[0][1]
    body.close()
    assert used(ledger) == 2

    @metered("api-requets")
    def typo(request: WRequest) -> WResponse:
        return WResponse("typo")

    @metered("compute-second")
    def typo2(request: WRequest) -> WResponse:
        return WResponse("typo")

    app.url_map.add(Rule("/typo", endpoint=typo))
    app.url_map.add(Rule("/typo2", endpoint=typo2))
    with pytest.raises(ConfigError, match="api-requets"):
        wsgi_call(app, "/typo")  # the mis-metered route fails alone; the others are served
    started, body = wsgi_call(app, "/render")
    assert started[0][0] == "200 OK" and b"".join(body) == b"ab"
    body.close()
    assert used(ledger, "compute-seconds") == 5
    app.url_map.add(Rule("/typo3", endpoint=typo))  # checked again, not logged again
    with pytest.raises(ConfigError, match="compute-second"):
        wsgi_call(app, "/typo2")
    logged = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(logged) == 2
    assert "typo is metered on 'api-requets'" in logged[0] and "typo2 is metered on 'compute-second'" in logged[1]


@pytest.mark.parametrize("first", ["/auto", "/own"])
def test_options_is_priced_per_rule_when_two_rules_share_a_view(first: str) -> None:
    app = Flask(__name__)
    ran: list[str] = []

    @metered("api-requests")
    def shared() -> str:
        ran.append(request.method)
        return "ok"

    app.add_url_rule("/auto", "shared", shared, methods=["GET"])  # Flask answers OPTIONS itself
    app.add_url_rule("/own", "shared", shared, methods=["GET", "OPTIONS"])  # the view answers OPTIONS
    ledger = MemoryLedger(plans=PLANS)
    ZeroClick(app, settings=CONFIG, ledger=ledger)
    client = app.test_client()
    for path in (first, "/own" if first == "/auto" else "/auto"):
        response = client.options(path, headers=AGENT)
        assert response.status_code == 200
        paid = path == "/own"
        assert response.headers.get("X-ZeroClick-Usage") == ("api-requests=1" if paid else None), path
    assert ran == ["OPTIONS"]  # only the view that answers OPTIONS ran, and only it was billed
    assert used(ledger) == 1


def test_wsgi_late_error_start_response_keeps_the_bill_that_went_out() -> None:
    ledger = MemoryLedger(plans=PLANS)

    def app(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b"partial"
        try:
            raise RuntimeError("failed after the headers went out")
        except RuntimeError:
            start_response("500 Internal Server Error", [], sys.exc_info())  # the server re-raises

    @metered("api-requests")
    def view() -> None: ...

    wrapped = ZeroClickWSGI(
        app, url_map=Map([Rule("/x", endpoint=view)]), settings=ZeroClickSettings(**CONFIG), ledger=ledger
    )
    sent: list[str] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        if exc_info is not None and sent:
            raise exc_info[1].with_traceback(exc_info[2])  # PEP 3333: headers already sent
        sent.append(status)
        return lambda data: None

    body = wrapped(EnvironBuilder(path="/x", headers=AGENT).get_environ(), start_response)
    with pytest.raises(RuntimeError):
        for _ in body:
            pass
    body.close()
    assert sent == ["200 OK"]
    assert used(ledger) == 1  # the usage header went out with the 200: the hold is kept


def test_a_free_route_swapped_for_a_paid_view_is_never_served_unbilled() -> None:
    app = make_app()
    ledger = MemoryLedger(plans=PLANS)
    zc = ZeroClick(app, settings=CONFIG, ledger=ledger)
    client = app.test_client()
    assert client.get("/free").text == "free"
    assert client.get("/free").text == "free"  # now known free: no exchange is prepared for it
    ran: list[str] = []

    @metered("api-requests", 2)
    def paid_now() -> str:
        ran.append("paid_now")
        return "paid now"

    app.view_functions["free"] = paid_now  # behind Flask's back, after requests were served
    refused = client.get("/free", headers=AGENT)
    assert refused.status_code == 503
    assert refused.headers["Retry-After"] == "0"
    assert refused.json == {
        "error": "route_repriced",
        "message": "This route became paid while the request was routed; retry.",
    }
    assert ran == [] and used(ledger) == 0  # nothing ran, nothing billed
    assert zc.gate_for(app).stats["denied_503"] == 1
    retried = client.get("/free", headers=AGENT, buffered=True)
    assert retried.text == "paid now"
    assert retried.headers["X-ZeroClick-Usage"] == "api-requests=2"
    assert used(ledger) == 2
    assert client.get("/free").status_code == 401  # checked on every request from now on


def test_with_host_matching_a_free_host_never_lets_a_paid_host_through() -> None:
    app = Flask(__name__, host_matching=True, static_host="static.test")
    app.add_url_rule("/x", "free_x", lambda: "free", host="free.test")
    app.add_url_rule("/x", "paid_x", metered("api-requests")(lambda: "paid"), host="paid.test")
    ledger = MemoryLedger(plans=PLANS)
    ZeroClick(app, settings=CONFIG, ledger=ledger)
    client = app.test_client()
    for _ in range(2):
        assert client.get("/x", base_url="http://free.test").text == "free"
        paid = client.get("/x", base_url="http://paid.test", headers=AGENT, buffered=True)
        assert (paid.status_code, paid.text) == (200, "paid")
        assert paid.headers["X-ZeroClick-Usage"] == "api-requests=1"
    assert used(ledger) == 2


def test_middleware_inside_zeroclick_that_overrides_the_method_never_gets_a_paid_handler_free() -> None:
    class MethodOverride:  # the pattern from Flask's docs, wrapped before ZeroClick(app)
        def __init__(self, app: Any) -> None:
            self.app = app

        def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
            method = environ.get("HTTP_X_HTTP_METHOD_OVERRIDE", "").upper()
            if method in {"GET", "POST"}:
                environ["REQUEST_METHOD"] = method
            return self.app(environ, start_response)

    ran: list[str] = []

    class Items(MethodView):
        def get(self) -> str:
            return "list"

        @metered("api-requests")
        def post(self) -> str:
            ran.append("post")
            return "created"

    app = Flask(__name__)
    app.add_url_rule("/items", view_func=Items.as_view("items"))
    app.wsgi_app = MethodOverride(app.wsgi_app)  # type: ignore[method-assign]
    ledger = MemoryLedger(plans=PLANS)
    ZeroClick(app, settings=CONFIG, ledger=ledger)
    client = app.test_client()
    for _ in range(3):
        assert client.get("/items").text == "list"
        assert client.get("/items", headers={"X-HTTP-Method-Override": "POST"}).status_code == 401
    created = client.get("/items", headers={"X-HTTP-Method-Override": "POST", **AGENT}, buffered=True)
    assert created.text == "created"
    assert created.headers["X-ZeroClick-Usage"] == "api-requests=1"
    assert ran == ["post"] and used(ledger) == 1


def test_werkzeug_websocket_rule_on_a_paid_path_never_makes_it_free() -> None:
    ledger = MemoryLedger(plans=PLANS)
    ran: list[str] = []

    @metered("api-requests")
    def paid(request: WRequest) -> WResponse:
        ran.append("paid")
        return WResponse("paid")

    def socket(request: WRequest) -> WResponse:
        return WResponse("no websockets here", status=400)

    url_map = Map([Rule("/x", endpoint="socket", websocket=True), Rule("/x", endpoint="paid")])
    views: dict[str, Any] = {"socket": socket, "paid": paid}

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        endpoint, _ = url_map.bind_to_environ(environ).match()
        return views[endpoint](WRequest(environ))(environ, start_response)

    wrapped = ZeroClickWSGI(app, url_map=url_map, views=views, settings=ZeroClickSettings(**CONFIG), ledger=ledger)
    client = Client(wrapped)
    assert client.get("/x", headers={"Upgrade": "websocket", "Connection": "Upgrade"}).status_code == 400
    assert client.get("/x").status_code == 401
    assert ran == []
    response = client.get("/x", headers=AGENT, buffered=True)
    assert response.headers["X-ZeroClick-Usage"] == "api-requests=1"
    response.close()
    assert ran == ["paid"] and used(ledger) == 1


# -- apps shaped in ways that must never make a paid route free -----------------------------------
def test_werkzeug_subdomain_rules_need_the_server_name_the_app_binds_with() -> None:
    @metered("api-requests")
    def premium(request: WRequest) -> WResponse:
        return WResponse("premium")

    url_map = Map([Rule("/", endpoint="premium", subdomain="api")], default_subdomain="www")
    views = {"premium": premium}

    def dispatch(environ: dict[str, Any], start_response: Any) -> Any:
        endpoint, _ = url_map.bind_to_environ(environ, server_name="example.com").match()
        return views[endpoint](WRequest(environ))(environ, start_response)

    config = ZeroClickSettings(**CONFIG)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="server_name"):
        ZeroClickWSGI(dispatch, url_map=url_map, views=views, settings=config)
    app = ZeroClickWSGI(dispatch, url_map=url_map, views=views, settings=config, server_name="example.com")
    response = Client(app).get("/", base_url="http://api.example.com/")
    assert response.status_code == 401


def test_werkzeug_a_path_not_found_once_is_priced_when_it_exists() -> None:
    from werkzeug.routing import BaseConverter, ValidationError

    pages: set[str] = set()

    class Page(BaseConverter):
        def to_python(self, value: str) -> str:
            if value not in pages:
                raise ValidationError
            return value

    @metered("api-requests")
    def doc(request: WRequest, name: str) -> WResponse:
        return WResponse(f"doc {name}")

    url_map = Map([Rule("/docs/<page:name>", endpoint="doc")], converters={"page": Page})

    def dispatch(environ: dict[str, Any], start_response: Any) -> Any:
        try:
            _, args = url_map.bind_to_environ(environ).match()
        except NotFound as exc:
            return exc(environ, start_response)
        return doc(WRequest(environ), **args)(environ, start_response)

    app = ZeroClickWSGI(dispatch, url_map=url_map, views={"doc": doc}, settings=ZeroClickSettings(**CONFIG))  # type: ignore[arg-type]
    assert Client(app).get("/docs/secret").status_code == 404
    pages.add("secret")  # published since
    assert Client(app).get("/docs/secret").status_code == 401


def test_middleware_that_calls_flask_lazily_still_settles_every_request() -> None:
    """Wrapped before ZeroClick(app), a generator middleware (werkzeug's DebuggedApplication is one)
    calls the app only when its body is iterated: the request is granted then."""
    ledger = MemoryLedger(plans=PLANS)
    app = Flask(__name__)

    @app.get("/search")
    @metered("api-requests")
    def search() -> tuple[str, int]:
        return ("bad", 400) if request.args.get("fail") else ("ok", 200)

    @app.post("/render")
    @metered("compute-seconds", estimate=30)
    def render() -> str:
        record_usage("compute-seconds", 2)
        return "rendered"

    inner = app.wsgi_app

    def lazily(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        yield from inner(environ, start_response)

    app.wsgi_app = lazily  # type: ignore[method-assign,assignment]
    ZeroClick(app, settings=CONFIG, ledger=ledger)
    client = app.test_client()
    for _ in range(3):
        assert client.get("/search?fail=1", headers=AGENT, buffered=True).status_code == 400
    assert used(ledger) == 0  # released, every time
    response = client.post("/render", headers=AGENT, buffered=True)
    assert response.headers["x-zeroclick-usage"] == "compute-seconds=2"
    assert used(ledger, "compute-seconds") == 2  # settled at what was recorded, not the estimate
    from zc_middleware.usage import current_counter

    assert current_counter() is None  # no request's counter left bound


def test_views_flask_reaches_through_dispatch_request_or_a_partial_are_priced() -> None:
    import functools

    from flask.views import View

    class Plain(View):
        @metered("api-requests")
        def dispatch_request(self) -> str:
            return "plain"

    @metered("api-requests")
    def scoped(tenant: str) -> str:
        return tenant

    app = Flask(__name__)
    app.add_url_rule("/plain", view_func=Plain.as_view("plain"))
    app.add_url_rule("/partial", "partial", functools.partial(scoped, tenant="acme"))
    ZeroClick(app, settings=CONFIG, ledger=MemoryLedger(plans=PLANS))
    client = app.test_client()
    assert [client.get(path).status_code for path in ("/plain", "/partial")] == [401, 401]


def test_options_on_a_rule_added_to_the_map_directly_is_flasks_answer() -> None:
    app = make_app()
    app.url_map.add(Rule("/direct", endpoint="direct", methods=["GET", "OPTIONS"]))

    @app.endpoint("direct")
    @metered("api-requests")
    def direct() -> str:
        return "direct"

    ZeroClick(app, settings=CONFIG, ledger=MemoryLedger(plans=PLANS))
    response = app.test_client().options("/direct", headers=AGENT)
    assert response.status_code == 200  # the view answers it (the rule has no automatic OPTIONS): paid
    assert response.headers["x-zeroclick-usage"] == "api-requests=1"


def test_a_paid_response_loses_cdn_caching_and_a_refusal_is_never_cached() -> None:
    ledger = MemoryLedger(plans=PLANS)
    app = Flask(__name__)

    @app.get("/search")
    @metered("api-requests")
    def search() -> tuple[str, dict[str, str]]:
        return "ok", {"CDN-Cache-Control": "public, max-age=600", "Surrogate-Control": "max-age=600"}

    @app.after_request
    def cache_everything(response: Response) -> Response:
        response.headers["Cache-Control"] = "public, max-age=300"
        return response

    ZeroClick(app, settings=CONFIG, ledger=ledger)
    paid = app.test_client().get("/search", headers=AGENT)
    assert paid.headers["cache-control"] == "private, max-age=300"
    assert "cdn-cache-control" not in paid.headers and "surrogate-control" not in paid.headers
    refused = app.test_client().get("/search")
    assert refused.status_code == 401
    assert refused.headers.getlist("cache-control") == ["no-store"]


def test_settings_routes_naming_no_endpoint_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    ZeroClick(make_app(), settings={**CONFIG, "routes": {"serch": {"api-requests": 1}}})
    assert "settings.routes prices 'serch', but no route is named so (yet)" in caplog.text
