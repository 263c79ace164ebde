"""The scenario app on Starlette (run with ``uvicorn tests.apps.starlette_app:app``)."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.apps.asgi_traps import trap_routes
from tests.apps.common import (
    BARE,
    CHUNKS,
    CONTRACT_HEADERS,
    OWN_HEADERS,
    RUNS,
    do_work,
    echo,
    free_work,
    overuse_work,
    ran,
    settings,
)
from zc_middleware import metered
from zc_middleware.starlette import ZeroClickMiddleware


def buyer(request: Request) -> str | None:
    return request.headers.get("zc-agent-id")


async def free(request: Request) -> Response:
    free_work(buyer(request))
    return PlainTextResponse("free")


@metered("api-requests")
async def search(request: Request) -> Response:
    ran(buyer(request), "search")
    return JSONResponse({"ok": True}, headers=OWN_HEADERS)


@metered("compute-seconds", estimate=30)
def render(request: Request) -> Response:  # sync: runs in the thread pool
    ran(buyer(request), "render")
    do_work()
    return JSONResponse({"rendered": True})


@metered("api-requests")
async def fail(request: Request) -> Response:
    ran(buyer(request), "fail")
    raise RuntimeError("boom")


@metered("api-requests")
async def missing(request: Request) -> Response:
    ran(buyer(request), "missing")
    return JSONResponse({"error": "not here"}, status_code=404, headers=OWN_HEADERS)


@metered("api-requests")
async def stream(request: Request) -> Response:
    ran(buyer(request), "stream")

    async def body():  # type: ignore[no-untyped-def]
        for chunk in CHUNKS:
            yield chunk

    return StreamingResponse(body(), media_type="text/plain")


@metered("api-requests")
async def echo_body(request: Request) -> Response:
    return JSONResponse(echo(buyer(request), await request.body()))


async def configured(request: Request) -> Response:
    ran(buyer(request), "configured")
    return PlainTextResponse("configured")


async def ab(request: Request) -> Response:
    ran(buyer(request), "ab")
    return PlainTextResponse("ab")


@metered("cpu-seconds", estimate=5)
async def overuse(request: Request) -> Response:
    overuse_work()
    return PlainTextResponse("overused")


async def relay(request: Request) -> Response:
    return PlainTextResponse("relay", headers=CONTRACT_HEADERS)


@metered("api-requests")
async def reasoned(request: Request) -> Response:
    return PlainTextResponse("reasoned", headers=CONTRACT_HEADERS)


@metered("api-requests")
async def refused(request: Request) -> Response:
    return PlainTextResponse("refused", status_code=402, headers=CONTRACT_HEADERS)


async def runs(request: Request) -> Response:
    return JSONResponse(dict(RUNS))


app = Starlette(
    routes=[
        Route("/free", free),
        Route("/search", search),
        Route("/render", render, methods=["POST"]),
        Route("/fail", fail),
        Route("/missing", missing),
        Route("/stream", stream),
        Route("/configured", configured),
        Route("/a/b", ab, name="ab"),
        Route("/echo", echo_body, methods=["POST"]),
        Route("/runs", runs),
        *trap_routes(),
        Route("/overuse", overuse),
        Route("/relay", relay),
        Route("/reasoned", reasoned),
        Route("/refused", refused),
    ]
)
if not BARE:
    app.add_middleware(ZeroClickMiddleware, settings=settings())


# -- many hosts: a route whose cost varies per request (see tests.apps.common.vary_work) -------------
from tests.apps.common import VARY_ESTIMATE, vary_work  # noqa: E402


@metered("compute-seconds", estimate=VARY_ESTIMATE)
async def vary(request: Request) -> Response:
    vary_work(request.query_params.get("units"))
    return PlainTextResponse("varied")


app.router.routes.append(Route("/vary", vary))
