"""Routes the middleware cannot price by method and path alone, served by the Starlette and FastAPI apps.

=====================  ==========================================================================
``GET /hidden/search``  ``@metered("api-requests")``, in a mounted app wrapped in a middleware that
                        keeps it private (no ``.app``, no ``.routes``): the middleware sees no route
``GET /versioned``      ``X-Api-Version: 1``: free ``v1``; ``2``: ``@metered("api-requests")`` ``v2``;
                        two ``Route`` s of a class whose ``matches`` also reads that header
=====================  ==========================================================================
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Match, Mount, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from tests.apps.common import ran
from zc_middleware import metered


class Private:
    """A middleware that keeps what it wraps to itself."""

    def __init__(self, app: ASGIApp) -> None:
        self._wrapped = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._wrapped(scope, receive, send)


class VersionRoute(Route):
    """A route that matches only requests carrying its ``X-Api-Version``."""

    def __init__(self, path: str, endpoint: object, *, version: str) -> None:
        super().__init__(path, endpoint)
        self.version = version.encode()

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] == "http" and (b"x-api-version", self.version) not in scope["headers"]:
            return Match.NONE, {}
        return super().matches(scope)


def _buyer(request: Request) -> str | None:
    return request.headers.get("zc-agent-id")


@metered("api-requests")
async def hidden_search(request: Request) -> Response:
    ran(_buyer(request), "hidden")
    return JSONResponse({"ok": True})


async def v1(request: Request) -> Response:
    ran(_buyer(request), "v1")
    return PlainTextResponse("v1")


@metered("api-requests")
async def v2(request: Request) -> Response:
    ran(_buyer(request), "v2")
    return PlainTextResponse("v2")


def trap_routes() -> list[BaseRoute]:
    return [
        Mount("/hidden", app=Private(Starlette(routes=[Route("/search", hidden_search)]))),
        VersionRoute("/versioned", v1, version="1"),
        VersionRoute("/versioned", v2, version="2"),
    ]
