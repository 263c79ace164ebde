"""Starlette/FastAPI specifics beyond the shared scenario suite."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("starlette")
httpx = pytest.importorskip("httpx")

from starlette.applications import Starlette  # noqa: E402
from starlette.requests import Request  # noqa: E402
from starlette.responses import JSONResponse, Response  # noqa: E402
from starlette.routing import Route  # noqa: E402

from zc_middleware import ZeroClickSettings, metered, open_ledger  # noqa: E402
from zc_middleware.ledger import Hold, Ledger, Refusal  # noqa: E402
from zc_middleware.ledger.memory import MemoryLedger  # noqa: E402
from zc_middleware.starlette import ZeroClickMiddleware  # noqa: E402

PLANS = {"crowd": {"default": True, "includes": {"api-requests": {"limit": 50}}}}
RAN: list[str] = []


@metered("api-requests")
async def paid(request: Request) -> Response:
    RAN.append(request.headers.get("zc-agent-id", ""))
    return JSONResponse({"ok": True})


@metered("api-requests")
async def waits_for_disconnect(request: Request) -> Response:
    while not await request.is_disconnected():
        await asyncio.sleep(0)
    return JSONResponse({"too": "late"})


@metered("api-requests")
async def sets_its_own_header(request: Request) -> Response:
    return JSONResponse({}, headers={"X-ZeroClick-Usage": "api-requests=99"})


def make_app(ledger: Ledger, **settings: object) -> Starlette:
    app = Starlette(
        routes=[Route("/paid", paid), Route("/disconnect", waits_for_disconnect), Route("/own", sets_its_own_header)]
    )
    config = ZeroClickSettings(meters={"api-requests": {}}, plans=PLANS, ledger="memory://", **settings)  # type: ignore[arg-type]
    app.add_middleware(ZeroClickMiddleware, settings=config, ledger=ledger)
    return app


@pytest.fixture(params=["memory", "sqlite"])
def ledger(request: pytest.FixtureRequest, tmp_path: Path):  # type: ignore[no-untyped-def]
    url = "memory://" if request.param == "memory" else f"sqlite:///{tmp_path / 'l.db'}"
    led = open_ledger(url, plans=PLANS)
    yield led
    led.close()


def test_two_hundred_asyncio_tasks_against_fifty_units(ledger: Ledger) -> None:
    app = make_app(ledger)

    async def crowd() -> list[int]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            responses = await asyncio.gather(
                *(client.get("/paid", headers={"zc-agent-id": "crowd"}) for _ in range(200))
            )
        return [r.status_code for r in responses]

    statuses = asyncio.run(crowd())
    assert statuses.count(200) == 50
    assert statuses.count(402) == 150
    assert ledger.balance("crowd").meter("api-requests").used == 50


async def _call(app: Starlette, path: str, messages: list[Mapping[str, object]]) -> list[dict]:
    sent: list[dict] = []
    queue = list(messages)

    async def receive() -> Mapping[str, object]:
        return queue.pop(0) if queue else {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"zc-agent-id", b"gone")],
        "server": ("test", 80),
        "client": ("127.0.0.1", 1),
    }
    await app(scope, receive, send)
    return sent


def test_client_disconnect_before_the_response_releases_the_hold(ledger: Ledger) -> None:
    app = make_app(ledger)
    sent = asyncio.run(_call(app, "/disconnect", [{"type": "http.request", "body": b"", "more_body": False}]))
    start = next(m for m in sent if m["type"] == "http.response.start")
    assert all(k != b"x-zeroclick-usage" for k, _ in start["headers"])
    assert ledger.balance("gone").meter("api-requests").used == 0


def test_the_app_cannot_set_the_usage_header_itself(ledger: Ledger) -> None:
    app = make_app(ledger)

    async def go() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            return await client.get("/own", headers={"zc-agent-id": "b"})

    response = asyncio.run(go())
    assert response.headers.get_list("x-zeroclick-usage") == ["api-requests=1"]


SHARED = Response("cached")
SHARED.raw_headers.append((b"X-ZeroClick-Usage", b"api-requests=99"))  # not lower-cased, as a raw app might send


def test_a_reused_response_with_its_own_usage_header_is_neither_trusted_nor_changed(ledger: Ledger) -> None:
    async def cached(request: Request) -> Response:
        return SHARED

    app = Starlette(routes=[Route("/cached", metered("api-requests")(cached))])
    config = ZeroClickSettings(meters={"api-requests": {}}, plans=PLANS, ledger="memory://")
    app.add_middleware(ZeroClickMiddleware, settings=config, ledger=ledger)
    before = list(SHARED.raw_headers)

    async def go() -> list[httpx.Response]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            return [await client.get("/cached", headers={"zc-agent-id": "b"}) for _ in range(2)]

    for response in asyncio.run(go()):
        assert response.headers.get_list("x-zeroclick-usage") == ["api-requests=1"]
    assert SHARED.raw_headers == before
    assert ledger.balance("b").meter("api-requests").used == 2


class BrokenLedger(MemoryLedger):
    def reserve(self, buyer: str, amounts: Mapping[str, int]) -> Hold | Refusal:
        raise OSError("disk on fire")


@pytest.mark.parametrize(("policy", "status"), [("deny", 503), ("allow", 200)])
def test_ledger_outage_follows_the_policy_and_never_leaks(policy: str, status: int) -> None:
    app = make_app(BrokenLedger(plans=PLANS), on_ledger_error=policy)

    async def go() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            return await client.get("/paid", headers={"zc-agent-id": "b"})

    response = asyncio.run(go())
    assert response.status_code == status
    assert "disk on fire" not in response.text
    if status == 503:
        assert response.json()["error"] == "ledger_unavailable"
        assert response.headers["retry-after"] == "1"


@pytest.mark.parametrize("buyer", ["has space", "x" * 300, "tab\there", "a,b"])
def test_malformed_buyer_identity_is_401(buyer: str) -> None:
    app = make_app(MemoryLedger(plans=PLANS))

    async def go() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            return await client.get("/paid", headers={"zc-agent-id": buyer})

    response = asyncio.run(go())
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_buyer_identity"


BAD_APP = """
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from zc_middleware import ZeroClickSettings, metered
from zc_middleware.starlette import ZeroClickMiddleware

@metered("api-requets")
async def typo(request):
    return PlainTextResponse("x")

app = Starlette(routes=[Route("/typo", typo)])
app.add_middleware(ZeroClickMiddleware, settings=ZeroClickSettings(meters={"api-requests": {}}, ledger="memory://"))
"""


def test_unknown_meter_stops_uvicorn_at_startup(tmp_path: Path) -> None:
    (tmp_path / "bad_app.py").write_text(BAD_APP)
    result = subprocess.run(
        [sys.executable, "-m", "uvicorn", "bad_app:app", "--port", "0", "--lifespan", "on"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "api-requets" in result.stderr


def test_fastapi_signature_and_openapi_survive_metered() -> None:
    fastapi = pytest.importorskip("fastapi")
    app = fastapi.FastAPI()

    @app.get("/items/{item_id}")
    @metered("api-requests")
    async def item(item_id: int, q: str | None = None) -> dict[str, object]:
        return {"item_id": item_id, "q": q}

    app.add_middleware(
        ZeroClickMiddleware, settings=ZeroClickSettings(meters={"api-requests": {}}, plans=PLANS, ledger="memory://")
    )
    params = app.openapi()["paths"]["/items/{item_id}"]["get"]["parameters"]
    assert {p["name"] for p in params} == {"item_id", "q"}

    async def go() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            return await client.get("/items/7?q=hi", headers={"zc-agent-id": "b"})

    response = asyncio.run(go())
    assert response.json() == {"item_id": 7, "q": "hi"}
    assert response.headers["x-zeroclick-usage"] == "api-requests=1"


def _websocket_app() -> Starlette:
    from starlette.routing import Mount, WebSocketRoute
    from starlette.websockets import WebSocket

    @metered("api-requests")
    async def paid_socket(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text("served a paid action")
        await websocket.close()

    async def free_socket(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text("free")
        await websocket.close()

    app = Starlette(
        routes=[WebSocketRoute("/free-ws", free_socket), Mount("/v1", routes=[WebSocketRoute("/ws", paid_socket)])]
    )
    config = ZeroClickSettings(meters={"api-requests": {}}, plans=PLANS, ledger="memory://")
    app.add_middleware(ZeroClickMiddleware, settings=config)
    return app


async def _asgi(app: Starlette, scope: dict[str, object], incoming: list[dict[str, object]]) -> list[dict[str, object]]:
    """Run one ASGI connection by hand; returns what the app sent."""
    sent: list[dict[str, object]] = []
    queue = list(incoming)

    async def receive() -> dict[str, object]:
        return queue.pop(0) if queue else {"type": "websocket.disconnect", "code": 1000}

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    await app(scope, receive, send)  # type: ignore[arg-type]
    return sent


def _socket(path: str) -> dict[str, object]:
    return {
        "type": "websocket",
        "path": path,
        "root_path": "",
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [(b"zc-agent-id", b"a")],
        "scheme": "ws",
        "subprotocols": [],
    }


def test_a_metered_websocket_route_is_refused_at_start_up_and_never_served() -> None:
    app = _websocket_app()
    startup = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent = asyncio.run(_asgi(app, {"type": "lifespan"}, startup))
    assert sent[0]["type"] == "lifespan.startup.failed"  # as for an unknown meter: the server won't start
    assert "WebSocket route '/v1/ws' is metered" in str(sent[0]["message"])  # the full path
    # with the lifespan off, the route is still never served unchecked: closed before it is accepted
    sent = asyncio.run(_asgi(app, _socket("/v1/ws"), [{"type": "websocket.connect"}]))
    assert sent == [{"type": "websocket.close", "code": 1008, "reason": "metered routes are HTTP only"}]
    sent = asyncio.run(_asgi(app, _socket("/free-ws"), [{"type": "websocket.connect"}]))
    assert [m["type"] for m in sent] == ["websocket.accept", "websocket.send", "websocket.close"]


def test_a_metered_endpoint_class_prices_every_method_and_stacks_with_its_handlers() -> None:
    from starlette.endpoints import HTTPEndpoint

    @metered("api-requests")
    class Items(HTTPEndpoint):
        @metered("compute-seconds", 5)
        async def get(self, request: Request) -> Response:
            return JSONResponse({})

        async def post(self, request: Request) -> Response:
            return JSONResponse({})

    app = Starlette(routes=[Route("/items", Items)])
    plans = {"p": {"default": True, "includes": {"api-requests": {"limit": 9}, "compute-seconds": {"limit": 9}}}}
    config = ZeroClickSettings(meters={"api-requests": {}, "compute-seconds": {}}, plans=plans, ledger="memory://")
    app.add_middleware(ZeroClickMiddleware, settings=config)

    async def go() -> list[httpx.Response]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            return [
                await client.post("/items"),
                await client.get("/items", headers={"zc-agent-id": "a"}),
                await client.post("/items", headers={"zc-agent-id": "a"}),
            ]

    anonymous, get, post = asyncio.run(go())
    assert anonymous.status_code == 401  # the class is metered: no method of it is free
    assert get.headers["x-zeroclick-usage"] == "api-requests=1, compute-seconds=5"
    assert post.headers["x-zeroclick-usage"] == "api-requests=1"


def test_a_custom_identify_sees_a_repeated_header_joined_as_under_wsgi_and_django() -> None:
    app = Starlette(routes=[Route("/paid", paid)])
    config = ZeroClickSettings(meters={"api-requests": {}}, plans=PLANS, ledger="memory://")
    app.add_middleware(ZeroClickMiddleware, settings=config, identify=lambda get: get("x-buyer"))

    async def go() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            return await client.get("/paid", headers=[("x-buyer", "alice"), ("x-buyer", "bob")])

    response = asyncio.run(go())
    assert response.status_code == 401  # "alice,bob" is no buyer id: neither of them is billed
    assert response.json()["error"] == "invalid_buyer_identity"


# -- apps shaped in ways that must never make a paid route free ----------------------------------
def _get(app: Any, *requests: tuple[str, dict[str, str]]) -> list[httpx.Response]:
    async def go() -> list[httpx.Response]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            return [await client.get(path, headers=headers) for path, headers in requests]

    return asyncio.run(go())


def _settings(**extra: Any) -> ZeroClickSettings:
    return ZeroClickSettings(meters={"api-requests": {}}, plans=PLANS, ledger="memory://", **extra)


async def _free(request: Request) -> Response:
    return JSONResponse({"free": True})


def test_host_routing_in_a_process_that_imports_fastapi_is_priced_by_host() -> None:
    pytest.importorskip("fastapi")  # FastAPI wraps every route it flattens, Starlette apps' too
    from starlette.routing import Host

    app = Starlette(
        routes=[
            Host("api.local", Starlette(routes=[Route("/s", paid)])),
            Host("{sub}.example", Starlette(routes=[Route("/s", _free)])),
        ]
    )
    app.add_middleware(ZeroClickMiddleware, settings=_settings())
    free, paid_one = _get(app, ("http://www.example/s", {}), ("http://api.local/s", {}))
    assert free.status_code == 200
    assert paid_one.status_code == 401  # not the free host's cached answer


def test_routes_added_or_replaced_at_run_time_are_priced_again() -> None:
    app = Starlette(routes=[Route("/free", _free)])
    app.add_middleware(ZeroClickMiddleware, settings=_settings())
    assert [r.status_code for r in _get(app, ("/late", {}), ("/free", {}))] == [404, 200]  # both known free
    app.add_route("/late", paid)
    app.router.routes[:] = [r for r in app.router.routes if getattr(r, "path", None) != "/free"]
    app.add_route("/free", paid)  # the same number of routes as before
    assert [r.status_code for r in _get(app, ("/late", {}), ("/free", {}))] == [401, 401]


def test_a_mounted_app_wrapped_in_middleware_is_priced() -> None:
    from starlette.middleware.gzip import GZipMiddleware
    from starlette.routing import Mount, Router

    app = Starlette(routes=[Mount("/gz", GZipMiddleware(Router(routes=[Route("/s", paid)])))])
    app.add_middleware(ZeroClickMiddleware, settings=_settings())
    assert _get(app, ("/gz/s", {}))[0].status_code == 401


def test_wrapping_an_app_directly_prices_its_routes_and_a_routerless_app_fails_start_up() -> None:
    inner = Starlette(routes=[Route("/s", paid)])
    wrapped = ZeroClickMiddleware(inner, settings=_settings())
    assert _get(wrapped, ("/s", {}))[0].status_code == 401

    async def plain(scope: Any, receive: Any, send: Any) -> None: ...

    sent = asyncio.run(
        _asgi(ZeroClickMiddleware(plain, settings=_settings()), {"type": "lifespan"}, [{"type": "lifespan.startup"}])
    )  # type: ignore[arg-type]
    assert sent[0]["type"] == "lifespan.startup.failed" and "no router" in str(sent[0]["message"])


def test_installed_twice_or_around_a_mounted_app_with_its_own_it_debits_once() -> None:
    from starlette.routing import Mount

    ledger = MemoryLedger(plans=PLANS)
    sub = Starlette(routes=[Route("/s", paid)])
    sub.add_middleware(ZeroClickMiddleware, settings=_settings(), ledger=ledger)
    app = Starlette(routes=[Route("/s", paid), Mount("/sub", sub)])
    app.add_middleware(ZeroClickMiddleware, settings=_settings(), ledger=ledger)
    app.add_middleware(ZeroClickMiddleware, settings=_settings(), ledger=ledger)
    responses = _get(app, ("/s", {"zc-agent-id": "once"}), ("/sub/s", {"zc-agent-id": "once"}))
    assert [r.headers["x-zeroclick-usage"] for r in responses] == ["api-requests=1", "api-requests=1"]
    assert ledger.balance("once").meter("api-requests").used == 2


def test_a_route_name_in_settings_prices_it_in_every_mount_and_a_partial_keeps_its_marks() -> None:
    import functools

    from starlette.routing import Mount

    async def scoped(request: Request, tenant: str) -> Response:
        return JSONResponse({"tenant": tenant})

    app = Starlette(
        routes=[
            Mount("/v2", routes=[Route("/search", _free, name="search")], name="v2"),
            Route("/partial", functools.partial(metered("api-requests")(scoped), tenant="acme")),
        ]
    )
    app.add_middleware(ZeroClickMiddleware, settings=_settings(routes={"search": {"api-requests": 1}}))
    assert [r.status_code for r in _get(app, ("/v2/search", {}), ("/partial", {}))] == [401, 401]


def test_middleware_inside_ours_is_named_at_start_up(caplog: pytest.LogCaptureFixture) -> None:
    from starlette.middleware.gzip import GZipMiddleware

    class StripVersion:
        def __init__(self, app: Any) -> None:
            self.app = app

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            await self.app(scope, receive, send)

    app = Starlette(routes=[Route("/s", paid)])
    app.add_middleware(StripVersion)
    app.add_middleware(GZipMiddleware)
    app.add_middleware(ZeroClickMiddleware, settings=_settings())
    asyncio.run(_asgi(app, {"type": "lifespan"}, [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]))
    warnings = [r.getMessage() for r in caplog.records if "inside ZeroClickMiddleware" in r.getMessage()]
    assert len(warnings) == 1 and "StripVersion" in warnings[0] and "GZip" not in warnings[0]


def test_a_wrapped_app_mounted_in_another_prices_its_own_routes() -> None:
    from starlette.routing import Mount

    inner = Starlette(routes=[Route("/s", paid), Route("/f", _free)])
    parent = Starlette(routes=[Route("/f", paid), Mount("/sub", ZeroClickMiddleware(inner, settings=_settings()))])
    statuses = [r.status_code for r in _get(parent, ("/sub/s", {}), ("/sub/f", {}))]
    assert statuses == [401, 200]  # by the sub-app's routes, not the parent's /f


def test_a_route_added_inside_a_mount_after_its_path_was_not_found_is_priced() -> None:
    from starlette.routing import Mount, Router

    sub = Router(routes=[])
    app = Starlette(routes=[Mount("/v1", sub)])
    app.add_middleware(ZeroClickMiddleware, settings=_settings())
    assert _get(app, ("/v1/late", {}))[0].status_code == 404
    sub.routes.append(Route("/late", paid))
    assert _get(app, ("/v1/late", {}))[0].status_code == 401


def test_a_request_made_in_process_from_a_paid_handler_is_checked_on_its_own() -> None:
    ledger = MemoryLedger(plans=PLANS)
    inner_statuses: list[int] = []

    @metered("api-requests")
    async def calls_itself(request: Request) -> Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            inner_statuses.append((await client.get("/paid")).status_code)  # no identity
            inner_statuses.append((await client.get("/paid", headers={"zc-agent-id": "bob"})).status_code)
        return JSONResponse({})

    app = Starlette(routes=[Route("/paid", paid), Route("/outer", calls_itself)])
    app.add_middleware(ZeroClickMiddleware, settings=_settings(), ledger=ledger)
    assert _get(app, ("/outer", {"zc-agent-id": "alice"}))[0].status_code == 200
    assert inner_statuses == [401, 200]
    assert ledger.balance("bob").meter("api-requests").used == 1


def test_odd_endpoints_and_routers_are_priced_without_failing() -> None:
    from starlette.routing import Mount

    class Endpoint:  # an ASGI endpoint object that keeps the app it belongs to as .app
        app: Any = None

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            await JSONResponse({})(scope, receive, send)

    class IterRouter:  # routes handed out as an iterator: nothing to tell a change by
        def __init__(self, routes: list[Any]) -> None:
            self._routes = routes

        @property
        def routes(self) -> Any:
            return iter(self._routes)

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            await self._routes[0].handle(scope, receive, send)

    endpoint = Endpoint()
    app = Starlette(routes=[Route("/obj", endpoint), Mount("/t", IterRouter([Route("/s", paid)]))])
    endpoint.app = app
    app.add_middleware(ZeroClickMiddleware, settings=_settings())
    sent = asyncio.run(_asgi(app, {"type": "lifespan"}, [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]))
    assert sent[0]["type"] == "lifespan.startup.complete"
    assert [r.status_code for r in _get(app, ("/obj", {}), ("/t/s", {}), ("/t/s", {}))] == [200, 401, 401]

    class IterApp:  # an app of its own whose router hands out an iterator, wrapped directly
        router = IterRouter([Route("/s", paid)])

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            await self.router(scope, receive, send)

    wrapped = ZeroClickMiddleware(IterApp(), settings=_settings())  # type: ignore[arg-type]
    assert [r.status_code for r in _get(wrapped, ("/s", {}), ("/s", {}))] == [401, 401]
