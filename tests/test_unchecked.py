"""A metered handler never runs unchecked, under each adapter's real server.

Without the middleware every adapter's metered handlers refuse to run (a 500, the body never ran);
in Starlette and FastAPI a metered handler the middleware could not see (a mount hiding its app) or
could not price by method and path alone (a route class matching on a header) is refused or priced
per request, never served free.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import Served, serve_adapter
from tests.servers import ADAPTERS

_PAID = [("GET", "/search", "search"), ("POST", "/render", "render"), ("GET", "/stream", "stream")]


@pytest.fixture(scope="module", params=sorted(ADAPTERS))
def bare(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """A scenario app served with no middleware at all."""
    yield from serve_adapter(request.param, tmp_path_factory, ZC_TEST_BARE="1")


@pytest.fixture(scope="module", params=["fastapi", "starlette"])
def asgi(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """The Starlette or FastAPI scenario app, with the middleware (and the routes of ``tests.apps.asgi_traps``)."""
    yield from serve_adapter(request.param, tmp_path_factory)


def call(served: Served, method: str, path: str, buyer: str | None = None, **headers: str) -> httpx.Response:
    if buyer:
        headers["zc-agent-id"] = buyer
    return httpx.request(method, served.base + path, headers=headers, timeout=10)


def runs(served: Served, buyer: str, what: str) -> int:
    return int(httpx.get(served.base + "/runs", timeout=10).json().get(f"{buyer}:{what}", 0))


@pytest.mark.parametrize(("method", "path", "what"), _PAID)
def test_without_the_middleware_a_metered_handler_refuses_to_run(
    bare: Served, method: str, path: str, what: str
) -> None:
    buyer = f"bare-{bare.name}-{what}"
    response = call(bare, method, path, buyer)
    assert response.status_code == 500
    assert "x-zeroclick-usage" not in response.headers
    assert runs(bare, buyer, what) == 0  # refused before its body ran
    assert call(bare, "GET", "/free", buyer).status_code == 200  # free routes are served as ever


def test_a_metered_handler_in_a_mount_the_middleware_cannot_see_into_refuses_to_run(asgi: Served) -> None:
    buyer = f"hidden-{asgi.name}"
    response = call(asgi, "GET", "/hidden/search", buyer)
    assert response.status_code == 500
    assert "x-zeroclick-usage" not in response.headers
    assert runs(asgi, buyer, "hidden") == 0
    assert asgi.ledger.balance(buyer).meter("api-requests").used == 0


@pytest.mark.parametrize("first", ["1", "2"])
def test_a_route_matching_on_a_header_is_priced_per_request(asgi: Served, first: str) -> None:
    buyer = f"versioned-{asgi.name}-{first}"
    order = [first, "2" if first == "1" else "1"] * 2
    for version in order:
        response = call(asgi, "GET", "/versioned", buyer, **{"x-api-version": version})
        assert response.status_code == 200
        assert response.text == f"v{version}"
        assert response.headers.get("x-zeroclick-usage") == ("api-requests=1" if version == "2" else None)
        # free v1 needs no identity, whatever ran before it on the same path
        if version == "1":
            assert call(asgi, "GET", "/versioned", None, **{"x-api-version": "1"}).status_code == 200
    assert runs(asgi, buyer, "v2") == 2
    assert runs(asgi, buyer, "v1") == 2
    assert asgi.ledger.balance(buyer).meter("api-requests").used == 2
