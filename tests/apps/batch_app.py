"""A Starlette app with a batch-channel meter and a streaming route (``uvicorn tests.apps.batch_app:app``).

Ledger and outbox share ``ZEROCLICK_LEDGER``'s SQLite file; the API key and
base URL come from ``ZEROCLICK_API_KEY`` / ``ZEROCLICK_API_BASE_URL``.

``POST /render``: ``api-requests`` (header) and ``compute-seconds`` (batch, records 4).
``GET /stream``: ``tokens`` (header), 10 recorded per chunk *after* the headers went out.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from zc_middleware import ZeroClickSettings, metered, record_usage
from zc_middleware.starlette import ZeroClickMiddleware

PLANS = {
    "starter": {
        "default": True,
        "includes": {"api-requests": {"limit": None}, "compute-seconds": {"limit": None}, "tokens": {"limit": None}},
    }
}


async def free(request: Request) -> Response:
    return PlainTextResponse("free")


@metered("api-requests")
@metered("compute-seconds", estimate=30)
def render(request: Request) -> Response:
    record_usage("compute-seconds", 4)
    return JSONResponse({"rendered": True})


@metered("tokens", estimate=100)
async def stream(request: Request) -> Response:
    async def body():  # type: ignore[no-untyped-def]
        for i in range(3):
            record_usage("tokens", 10)
            yield f"chunk-{i}\n".encode()

    return StreamingResponse(body(), media_type="text/plain")


app = Starlette(routes=[Route("/free", free), Route("/render", render, methods=["POST"]), Route("/stream", stream)])
app.add_middleware(
    ZeroClickMiddleware,
    settings=ZeroClickSettings(
        meters={"api-requests": {}, "compute-seconds": {"channel": "batch"}, "tokens": {}},
        plans=PLANS,
        flush_interval=0.05,
    ),
)
