"""The same paid API on FastAPI: ``uvicorn examples.fastapi_app:app``.

``@metered`` returns the endpoint unchanged, so dependency injection and OpenAPI work as usual.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import FastAPI, Query

from zc_middleware import ZeroClickSettings, metered, record_usage
from zc_middleware.starlette import ZeroClickMiddleware

app = FastAPI(title="acme-search")
app.add_middleware(
    ZeroClickMiddleware,
    settings=ZeroClickSettings(
        service_slug="acme-search",
        meters={"api-requests": {}, "compute-seconds": {}},
        plans={
            "starter": {"default": True, "includes": {"api-requests": {"limit": 3}, "compute-seconds": {"limit": 600}}}
        },
    ),
)


@app.get("/search")
@metered("api-requests")
async def search(q: str = "") -> dict[str, list[str]]:
    return {"results": [f"result for {q!r}"]}


@app.post("/render")
@metered("compute-seconds", estimate=30)
def render(pages: Annotated[int, Query(ge=1, le=10)] = 1) -> dict[str, int]:  # 2 a page: never past the 30 checked
    record_usage("compute-seconds", 2 * pages)
    return {"pages": pages}


@app.get("/health")
async def health() -> dict[str, bool]:
    return {"ok": True}
