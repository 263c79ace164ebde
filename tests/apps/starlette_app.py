"""The scenario app on Starlette (run with ``uvicorn tests.apps.starlette_app:app``)."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.apps.common import CHUNKS, OWN_HEADERS, RUNS, do_work, free_work, ran, settings
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


async def configured(request: Request) -> Response:
    ran(buyer(request), "configured")
    return PlainTextResponse("configured")


async def ab(request: Request) -> Response:
    ran(buyer(request), "ab")
    return PlainTextResponse("ab")


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
        Route("/runs", runs),
    ]
)
app.add_middleware(ZeroClickMiddleware, settings=settings())


# -- many hosts: a route whose cost varies per request (see tests.apps.common.vary_work) -------------
from tests.apps.common import VARY_ESTIMATE, vary_work  # noqa: E402


@metered("compute-seconds", estimate=VARY_ESTIMATE)
async def vary(request: Request) -> Response:
    vary_work(request.query_params.get("units"))
    return PlainTextResponse("varied")


app.router.routes.append(Route("/vary", vary))
