"""Starlette and FastAPI routing as the middleware sees it: the route a request will reach, every route.

Whether a request is paid is decided from the router's own match, run on a
copy of the scope before the app is called: the same ``Route.matches`` the
router will use, on the decoded ``scope["path"]``, so ``/a%2Fb`` is matched
exactly as the router will match it. Under uvicorn, ``scope["path"]`` is
already percent-decoded and ``raw_path`` is not; we never read ``raw_path``.

A match may be remembered per method and path only when every route tried
matches on method and path alone: Starlette's and FastAPI's own route classes
(a ``Host`` excepted). A route class with its own ``matches`` (one that reads a
header, say) is matched again on every request.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from starlette.routing import Host, Match, Mount, WebSocketRoute

from .._cache import remember
from ..meters import handler_marks
from ..pricing import View

if TYPE_CHECKING:
    from ..gate import Charge, Gate

__all__ = ["by_path", "match", "named", "route_rows", "views", "websockets"]


def _flat(routes: Iterable[Any]) -> Iterable[Any]:
    """FastAPI >= 0.16x includes routers lazily; its ``iter_route_contexts`` flattens them."""
    fastapi_routing = sys.modules.get("fastapi.routing")
    flatten = getattr(fastapi_routing, "iter_route_contexts", None)
    return flatten(list(routes)) if flatten is not None else routes


def _view(endpoint: object, method: str) -> object:
    if inspect.isclass(endpoint):  # HTTPEndpoint: the handler is a method named after the verb
        handler = getattr(endpoint, method.lower(), None)
        if handler is None and method == "HEAD":
            handler = getattr(endpoint, "get", None)
        return handler_marks(endpoint, handler) if handler is not None else endpoint  # a metered class too
    return endpoint


def _subroutes(route: Any, app: object) -> Any:
    """The routes of what ``route`` hands requests to: for a ``Mount`` or a ``Host``, its app's, also
    through middleware wrapping that app (``Mount("/v1", GZipMiddleware(router))``: each keeps what
    it wraps as ``.app``); ``None`` for an endpoint."""
    mounts = isinstance(getattr(route, "original_route", route), (Mount, Host))  # FastAPI wraps routes
    for _ in range(16 if mounts else 1):
        if app is None or inspect.isfunction(app) or inspect.ismethod(app):
            return None
        routes = getattr(app, "routes", None)
        if routes is not None:
            return routes
        app = getattr(app, "app", None)
    return None


_trusted: dict[type, bool] = {}
_OWN = ("starlette.routing", "fastapi.routing")


def by_path(route: Any) -> bool:
    """Whether ``route`` matches on method and path alone: its class matches as Starlette's or
    FastAPI's own routes do (``Route``, ``Mount``, ``WebSocketRoute``, ``APIRoute``; not ``Host``)."""
    cls = type(getattr(route, "original_route", route))  # FastAPI wraps routes
    trusted = _trusted.get(cls)
    if trusted is None:
        own = getattr(getattr(cls, "matches", None), "__module__", None) in _OWN
        trusted = remember(_trusted, cls, own and not issubclass(cls, Host))
    return trusted


def _matches(route: Any, scope: dict[str, Any]) -> tuple[Match, dict[str, Any]]:
    """``route.matches(scope)`` as the router runs it. FastAPI (>= 0.16x) wraps an included ``APIRoute``
    in a route context whose own ``matches`` replays the route's path only; its router calls the
    route's class's ``matches`` with the context in ``scope["fastapi"]``, so a class of the seller's
    own (one that reads a header) is asked the same way here."""
    original = getattr(route, "original_route", route)
    api_route = getattr(sys.modules.get("fastapi.routing"), "APIRoute", None)
    if original is route or by_path(route) or api_route is None or not isinstance(original, api_route):
        return route.matches(scope)  # type: ignore[no-any-return]
    state = scope.setdefault("fastapi", {})  # the probe's own: the request's is never touched
    state["effective_route_context"] = route
    try:
        return original.matches(scope)  # type: ignore[no-any-return]
    finally:
        state.pop("effective_route_context", None)


def _join(prefix: str | None, name: str | None) -> str | None:
    return f"{prefix}:{name}" if prefix and name else name


def match(routes: Iterable[Any], scope: dict[str, Any], prefix: str | None) -> tuple[View | None, bool]:
    """``((view, route_name) | None, cacheable)`` for the route the router will pick."""
    cacheable = True
    for route in _flat(routes):
        kind, child = _matches(route, scope)
        if cacheable and not by_path(route):
            cacheable = False  # a Host, or a route class of its own: may depend on more than the path
        if kind is not Match.FULL:
            continue  # PARTIAL is a 405 the router answers without running a handler
        endpoint = child.get("endpoint", getattr(route, "endpoint", None))
        name = getattr(route, "name", None)
        subroutes = _subroutes(route, endpoint)
        if subroutes is not None:  # Mount / Host
            scope.update(child)
            found, sub_cacheable = match(subroutes, scope, _join(prefix, name) if name else prefix)
            return found, cacheable and sub_cacheable
        return (_view(endpoint, scope.get("method", "")), _join(prefix, name)), cacheable
    return None, cacheable


def _routes(
    routes: Iterable[Any], prefix: str | None = None, path: str = ""
) -> Iterator[tuple[Any, object, str | None, str]]:
    """``(route, endpoint, route name, full path)`` of every route, mounts and included routers
    flattened, in one walk (FastAPI's ``iter_route_contexts`` makes new route objects on every walk)."""
    for route in _flat(routes):
        endpoint = getattr(route, "endpoint", None) or getattr(route, "app", None)
        name = getattr(route, "name", None)
        full = path + getattr(route, "path", "")
        subroutes = _subroutes(route, endpoint)
        if subroutes is not None:
            yield from _routes(subroutes, _join(prefix, name) if name else prefix, full)
        else:
            yield route, endpoint, _join(prefix, name), full


def views(routes: Iterable[Any]) -> Iterator[View]:
    for _, endpoint, name, _ in _routes(routes):
        if inspect.isclass(endpoint):
            for method in ("get", "head", "post", "put", "patch", "delete", "options"):
                if hasattr(endpoint, method):
                    yield _view(endpoint, method.upper()), name
        elif endpoint is not None:
            yield endpoint, name


def websockets(routes: Iterable[Any]) -> Iterator[tuple[object, str | None, str]]:
    """``(endpoint, route name, path)`` of every WebSocket route."""
    for route, endpoint, name, path in _routes(routes):
        if isinstance(getattr(route, "original_route", route), WebSocketRoute):  # FastAPI wraps routes
            yield endpoint, name, path


def named(view: View, priced: Iterable[str]) -> View:
    """The route name settings ``routes`` price ``view`` by: the full ``mount:name`` if ``priced``
    lists it, else the route's own name, in whatever mount it is (as Django's URL namespaces)."""
    endpoint, name = view
    if name is None or name in priced:
        return view
    return endpoint, name.rpartition(":")[2]


def route_rows(app: Any, gate: Gate) -> list[tuple[str, str, str, str]]:
    """``(route, methods, name, meters)`` for every metered HTTP route of a Starlette or FastAPI
    ``app``, priced by ``gate`` as :class:`ZeroClickMiddleware` prices them."""
    rows: list[tuple[str, str, str, str]] = []
    for route, endpoint, name, path in _routes(app.router.routes):
        if endpoint is None or isinstance(getattr(route, "original_route", route), WebSocketRoute):
            continue
        methods = sorted(set(getattr(route, "methods", None) or ("GET",)) - {"HEAD", "OPTIONS"})
        by_charge: dict[Charge, list[str]] = {}
        for method in methods:
            charge = gate.charge_for(*named((_view(endpoint, method), name), gate.settings.routes))
            if charge is not None:
                by_charge.setdefault(charge, []).append(method)
        for charge, used in by_charge.items():
            rows.append((path, ",".join(used), name or "-", ", ".join(spec.describe() for spec in charge)))
    return sorted(rows)
