"""FastAPI sees a guarded endpoint as the function it wraps: dependency injection and OpenAPI."""

from __future__ import annotations

import asyncio

import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from fastapi import APIRouter, Depends, FastAPI, Header, Query  # noqa: E402
from fastapi.routing import APIRoute  # noqa: E402
from pydantic import BaseModel  # noqa: E402
from starlette.routing import Match  # noqa: E402
from starlette.types import Scope  # noqa: E402

from zc_middleware import ZeroClickSettings, metered  # noqa: E402
from zc_middleware.starlette import ZeroClickMiddleware  # noqa: E402

PLANS = {"p": {"default": True, "includes": {"api-requests": {"limit": 9}}}}


class Order(BaseModel):
    """A body model: its annotation is a string (``from __future__ import annotations``) that FastAPI
    resolves in the endpoint's module, through the guard."""

    sku: str
    count: int


def page_size(size: int = Query(default=10, le=100)) -> int:
    return size


def make_app() -> FastAPI:
    app = FastAPI()

    @app.get("/items/{item_id}")
    @metered("api-requests")
    async def item(
        item_id: int,
        size: int = Depends(page_size),
        zc_agent_id: str | None = Header(default=None),
    ) -> dict[str, object]:
        return {"item": item_id, "size": size, "buyer": zc_agent_id}

    @app.get("/sync/{item_id}")
    @metered("api-requests")
    def sync_item(item_id: int, size: int = Depends(page_size)) -> dict[str, int]:  # run in the thread pool
        return {"item": item_id, "size": size}

    @app.post("/orders")
    @metered("api-requests")
    async def order(body: Order) -> Order:
        return body

    config = ZeroClickSettings(meters={"api-requests": {}}, plans=PLANS, ledger="memory://")  # type: ignore[arg-type]
    app.add_middleware(ZeroClickMiddleware, settings=config)
    return app


def test_dependency_injection_resolves_through_a_metered_endpoint() -> None:
    app = make_app()

    async def go() -> list[httpx.Response]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            headers = {"zc-agent-id": "agent-1"}
            return [
                await client.get("/items/7?size=3", headers=headers),
                await client.get("/sync/8", headers=headers),
                await client.get("/items/x", headers=headers),
                await client.post("/orders", headers=headers, json={"sku": "a", "count": 2}),
            ]

    item, sync_item, invalid, order = asyncio.run(go())
    assert item.status_code == 200
    assert item.json() == {"item": 7, "size": 3, "buyer": "agent-1"}
    assert item.headers["x-zeroclick-usage"] == "api-requests=1"
    assert sync_item.json() == {"item": 8, "size": 10}
    assert invalid.status_code == 422  # FastAPI validated the path parameter, as for any endpoint
    assert order.json() == {"sku": "a", "count": 2}


def test_openapi_documents_a_metered_endpoints_parameters() -> None:
    schema = make_app().openapi()
    names = {p["name"] for p in schema["paths"]["/items/{item_id}"]["get"]["parameters"]}
    assert names == {"item_id", "size", "zc-agent-id"}
    body = schema["paths"]["/orders"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/Order"}


def test_an_api_route_class_matching_on_a_header_is_priced_as_fastapi_routes_it() -> None:
    """Two included routers on one path: a route class of the seller's own picks v2 by a header."""

    class V2Route(APIRoute):
        def matches(self, scope: Scope) -> tuple[Match, Scope]:
            if (b"x-api-version", b"2") not in scope.get("headers", []):
                return Match.NONE, {}
            return super().matches(scope)

    app = FastAPI()
    v2 = APIRouter(route_class=V2Route)
    v1 = APIRouter()

    @v2.get("/v")
    @metered("api-requests")
    async def paid() -> str:
        return "v2"

    @v1.get("/v")
    async def free() -> str:
        return "v1"

    app.include_router(v2)
    app.include_router(v1)
    config = ZeroClickSettings(meters={"api-requests": {}}, plans=PLANS, ledger="memory://")  # type: ignore[arg-type]
    app.add_middleware(ZeroClickMiddleware, settings=config)

    async def go() -> list[httpx.Response]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            return [await client.get("/v", headers={"x-api-version": v, "zc-agent-id": "a"}) for v in "1212"]

    for version, response in zip("1212", asyncio.run(go()), strict=True):
        assert response.json() == f"v{version}"
        assert response.headers.get("x-zeroclick-usage") == ("api-requests=1" if version == "2" else None)
