"""A paid search API on Starlette: ``uvicorn examples.starlette_app:app``.

The ledger is the embedded SQLite file ``zeroclick.db`` unless ``ZEROCLICK_LEDGER`` says otherwise.
Set ``ZEROCLICK_SIGNING_SECRETS='{"<kid>": "<secret>"}'`` (from ZeroClick) so that only requests the
proxy signed can spend a plan; the demo does.
"""

from __future__ import annotations

import time

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from zc_middleware import ZeroClickSettings, metered, record_usage
from zc_middleware.starlette import ZeroClickMiddleware

settings = ZeroClickSettings(
    service_slug="acme-search",
    meters={"api-requests": {}, "compute-seconds": {}},
    plans={
        "starter": {
            "default": True,
            "includes": {
                "api-requests": {"limit": 3, "reset": "month"},
                "compute-seconds": {"limit": 3600, "reset": "day"},
            },
        }
    },
)


@metered("api-requests")  # 1 unit, billed only on success
async def search(request: Request) -> JSONResponse:
    return JSONResponse({"results": [f"result for {request.query_params.get('q', '')!r}"]})


@metered("compute-seconds", estimate=30)  # 30 must be covered; what is recorded is billed
def render(request: Request) -> JSONResponse:
    started = time.monotonic()
    time.sleep(0.01)  # the expensive part
    record_usage("compute-seconds", max(1, round(time.monotonic() - started)))
    return JSONResponse({"rendered": True})


async def health(request: Request) -> JSONResponse:
    return JSONResponse({"ok": True})


app = Starlette(routes=[Route("/search", search), Route("/render", render, methods=["POST"]), Route("/health", health)])
app.add_middleware(ZeroClickMiddleware, settings=settings)
