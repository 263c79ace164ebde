"""Pure ASGI middleware for Starlette and FastAPI.

Not ``BaseHTTPMiddleware``: that buffers responses, breaks streaming and
drops context variables set downstream. This middleware edits headers only on
``http.response.start``, sends it exactly once, and passes every other message
through untouched.

Whether a request is paid is decided from the router's own match, run on a
copy of the scope before the app is called: the same ``Route.matches`` the
router will use, on the decoded ``scope["path"]``, so ``/a%2Fb`` is matched
exactly as the router will match it. Under uvicorn, ``scope["path"]`` is
already percent-decoded and ``raw_path`` is not; we never read ``raw_path``.
"""

from __future__ import annotations

import inspect
import logging
import sys
from collections.abc import Iterable, Iterator
from typing import Any

try:
    from starlette.routing import Host, Match, Mount, WebSocketRoute
    from starlette.types import ASGIApp, Message, Receive, Scope, Send
except ImportError:  # pragma: no cover - exercised by tests/test_optional_imports.py
    raise ImportError("zc_middleware.starlette needs Starlette: pip install 'zc-middleware[starlette]'") from None

from .decision import Allow, Deny
from .errors import ConfigError
from .gate import Charge, Gate, Identify
from .ledger import Ledger
from .meters import bind_counter, handler_marks, unbind_counter
from .settings import ZeroClickSettings
from .wsgi import REWRITTEN, paid_headers

__all__ = ["ZeroClickMiddleware", "route_rows"]

log = logging.getLogger("zc_middleware")
_USAGE = b"x-zeroclick-usage"
_CACHE_SIZE = 4096
_CHECKED = "zc_middleware.checked"  # in the scope of a request a ZeroClickMiddleware has checked
_REWRITTEN = frozenset(name.encode("latin-1") for name in REWRITTEN)
View = tuple[object, "str | None"]


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


def _join(prefix: str | None, name: str | None) -> str | None:
    return f"{prefix}:{name}" if prefix and name else name


def _match(routes: Iterable[Any], scope: dict[str, Any], prefix: str | None) -> tuple[View | None, bool]:
    """``((view, route_name) | None, cacheable)`` for the route the router will pick."""
    cacheable = True
    for route in _flat(routes):
        match, child = route.matches(scope)
        if isinstance(getattr(route, "original_route", route), Host):  # FastAPI wraps routes
            cacheable = False  # depends on the Host header, not only the path
        if match is not Match.FULL:
            continue  # PARTIAL is a 405 the router answers without running a handler
        endpoint = child.get("endpoint", getattr(route, "endpoint", None))
        name = getattr(route, "name", None)
        subroutes = _subroutes(route, endpoint)
        if subroutes is not None:  # Mount / Host
            scope.update(child)
            found, sub_cacheable = _match(subroutes, scope, _join(prefix, name) if name else prefix)
            return found, cacheable and sub_cacheable
        return (_view(endpoint, scope.get("method", "")), _join(prefix, name)), cacheable
    return None, cacheable


def _routes(routes: Iterable[Any], prefix: str | None = None) -> Iterator[tuple[Any, object, str | None]]:
    """``(route, endpoint, route name)`` of every route, mounts and included routers flattened."""
    for route in _flat(routes):
        endpoint = getattr(route, "endpoint", None) or getattr(route, "app", None)
        name = getattr(route, "name", None)
        subroutes = _subroutes(route, endpoint)
        if subroutes is not None:
            yield from _routes(subroutes, _join(prefix, name) if name else prefix)
        else:
            yield route, endpoint, _join(prefix, name)


def _walk(routes: Iterable[Any]) -> Iterator[View]:
    for _, endpoint, name in _routes(routes):
        if inspect.isclass(endpoint):
            for method in ("get", "head", "post", "put", "patch", "delete", "options"):
                if hasattr(endpoint, method):
                    yield _view(endpoint, method.upper()), name
        elif endpoint is not None:
            yield endpoint, name


def _websockets(routes: Iterable[Any]) -> Iterator[tuple[object, str | None, str]]:
    """``(endpoint, route name, path)`` of every WebSocket route."""
    for route, endpoint, name in _routes(routes):
        if isinstance(getattr(route, "original_route", route), WebSocketRoute):  # FastAPI wraps routes
            yield endpoint, name, route.path


def _paths(routes: Iterable[Any], prefix: str = "") -> Iterator[tuple[str, Any, object]]:
    """``(full path, route, endpoint)`` of every route, mounts and included routers flattened."""
    for route in _flat(routes):
        endpoint = getattr(route, "endpoint", None) or getattr(route, "app", None)
        path = prefix + getattr(route, "path", "")
        subroutes = _subroutes(route, endpoint)
        if subroutes is not None:
            yield from _paths(subroutes, path)
        else:
            yield path, route, endpoint


def route_rows(app: Any, gate: Gate) -> list[tuple[str, str, str, str]]:
    """``(route, methods, name, meters)`` for every metered HTTP route of a Starlette or FastAPI
    ``app``, priced by ``gate`` as :class:`ZeroClickMiddleware` prices them."""
    pricer = ZeroClickMiddleware(app, gate=gate)
    names = dict(((id(route), name) for route, _, name in _routes(app.router.routes)))
    rows: list[tuple[str, str, str, str]] = []
    for path, route, endpoint in _paths(app.router.routes):
        if endpoint is None or isinstance(getattr(route, "original_route", route), WebSocketRoute):
            continue
        name = names.get(id(route))
        methods = sorted(set(getattr(route, "methods", None) or ("GET",)) - {"HEAD", "OPTIONS"})
        by_charge: dict[Charge, list[str]] = {}
        for method in methods:
            charge = gate.charge_for(*pricer._named((_view(endpoint, method), name)))
            if charge is not None:
                by_charge.setdefault(charge, []).append(method)
        for charge, used in by_charge.items():
            rows.append((path, ",".join(used), name or "-", ", ".join(spec.describe() for spec in charge)))
    return sorted(rows)


class ZeroClickMiddleware:
    """``app.add_middleware(ZeroClickMiddleware, settings=ZeroClickSettings(...))``."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        settings: ZeroClickSettings | None = None,
        ledger: Ledger | None = None,
        identify: Identify | None = None,
        gate: Gate | None = None,
    ) -> None:
        self.app = app
        if gate is None:
            gate = Gate(settings if settings is not None else ZeroClickSettings(), ledger=ledger, identify=identify)  # type: ignore[call-arg]
        self.gate = gate
        self._identity = gate.identity_header.encode("latin-1") if gate.identity_header else None
        self._cache: dict[tuple[str, str, str], Charge | None] = {}
        #: the router's route list :attr:`_cache` was filled from, its length and last route then:
        #: routes added or removed at run time (``add_route``, ``include_router``) make it stale
        self._routes: list[Any] = []
        self._routes_len = 0
        self._routes_last: object = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                await self._lifespan(scope, receive, send)
            elif scope["type"] == "websocket" and self._charge(scope, None) is not None:
                await _refuse_websocket(receive, send)  # refused at start-up too: see validate()
            else:
                await self.app(scope, receive, send)
            return
        key = (scope["method"], scope["path"], scope.get("root_path", ""))
        try:
            charge = self._cache[key]
        except KeyError:
            charge = self._charge(scope, key)
        else:
            routes = self._routes  # a path known free may be paid now: inline, on every free request
            if charge is None and (len(routes) != self._routes_len or (routes and routes[-1] is not self._routes_last)):
                self._cache.clear()
                charge = self._charge(scope, key)
        if charge is None or _CHECKED in scope:
            # free; or paid and already checked by a ZeroClickMiddleware outside this one (installed
            # twice, or around a mounted app that has its own): never debited twice
            await self.app(scope, receive, send)
            return
        # A paid request, written out in one coroutine: this is the per-request cost of the middleware.
        gate = self.gate
        exchange = _Exchange(gate, scope["headers"], receive, send)
        if self._identity is not None:  # the default identity: one header, read straight from the scope
            buyer = None
            for name, value in exchange.headers:
                if name == self._identity:
                    # Repeated, joined as WSGI servers and Django join it: two buyers are not an id.
                    buyer = value.decode("latin-1") if buyer is None else f"{buyer},{value.decode('latin-1')}"
        else:
            buyer = gate.identify(exchange.header)
        if gate.inline:
            decision = gate.check_buyer(buyer, exchange.header, charge, exchange)
        else:
            decision = await gate.acheck_buyer(buyer, exchange.header, charge, exchange)
        if isinstance(decision, Deny):
            await _send_deny(send, decision)
            return
        token = bind_counter(exchange)
        scope[_CHECKED] = True  # the scope mounted apps and routers pass on, updated in place
        try:
            await self.app(scope, exchange.receive, exchange.send)
        finally:
            unbind_counter(token)
            # Once a usage header went out the proxy bills it, so the ledger keeps it
            # even if the body later fails; before that, any failure releases the hold.
            status = exchange.status
            success = status is not None and status < 400 and not exchange.disconnected_early
            if gate.inline:
                gate.finish(exchange, success=success)
            else:
                await gate.afinish(exchange, success=success)

    # -- routing -----------------------------------------------------------------
    def _router(self, app: object) -> Any:
        """The router of the app this middleware serves: the app it wraps (``ZeroClickMiddleware(app)``,
        mounted anywhere), else ``scope["app"]`` (set by Starlette and FastAPI before their middleware
        stack, in which this one then sits)."""
        router = getattr(self.app, "router", None)
        return router if router is not None else getattr(app, "router", None)

    def _charge(self, scope: Scope, key: tuple[str, str, str] | None) -> Charge | None:
        router = self._router(scope.get("app"))
        if router is None:
            return None  # no router to ask: validate() refused to start
        routes = router.routes
        probe = dict(scope)
        probe.pop("fastapi", None)  # FastAPI keeps routing state here; never touch the real one
        found, cacheable = _match(routes, probe, None)
        if found is None:
            return None  # 404, 405: the app answers. Not remembered: a route may be added there later
        charge = self.gate.charge_for(*self._named(found))
        if not isinstance(routes, list):
            return charge  # nothing to tell a change of routes by: priced on every request
        if key is not None and not self._cache:  # remember the routes the cache is filled from
            self._routes, self._routes_len, self._routes_last = routes, len(routes), routes[-1] if routes else None
        if cacheable and key is not None:
            if len(self._cache) >= _CACHE_SIZE:
                self._cache.clear()
            self._cache[key] = charge
        return charge

    def _named(self, view: View) -> View:
        """The route name settings ``routes`` price it by: the full ``mount:name`` if listed there,
        else the route's own name, in whatever mount it is (as Django's URL namespaces)."""
        endpoint, name = view
        if name is None or name in self.gate.settings.routes:
            return view
        return endpoint, name.rpartition(":")[2]

    def validate(self, app: object) -> int:
        """Check every route's meters against settings; returns how many routes are paid."""
        router = self._router(app)
        if router is None:
            raise ConfigError(
                "no_router",
                "ZeroClickMiddleware found no router to price routes with: add it to a Starlette or FastAPI "
                "app with app.add_middleware(ZeroClickMiddleware, ...), or wrap such an app directly",
            )
        self._warn_about_inner_middleware(app)
        for endpoint, name, path in _websockets(router.routes):
            if self.gate.charge_for(*self._named((endpoint, name))) is not None:
                raise ConfigError(
                    "metered_websocket",
                    f"the WebSocket route {path!r} is metered, but zc_middleware meters HTTP requests only "
                    "(a WebSocket session has no response to carry a usage header); check the plan and report "
                    "its usage with report_usage() (batch) in the handler instead",
                )
        views = list(_walk(router.routes))
        named = [self._named(view) for view in views]
        self.gate.warn_unrouted({name for _, name in views} | {name for _, name in named})
        return self.gate.validate_views(named)

    def _warn_about_inner_middleware(self, app: object) -> None:
        """Middleware added before this one runs inside it, after the route was priced: one that
        rewrites the path or the method (a method override, a prefix stripper) would change the
        route that runs. Starlette's and FastAPI's own middleware never do."""
        stack = [getattr(m, "cls", None) for m in getattr(app, "user_middleware", ())]  # outermost first
        if ZeroClickMiddleware not in stack:
            return
        inner = stack[stack.index(ZeroClickMiddleware) + 1 :]
        mine = [
            cls
            for cls in inner
            if cls is not ZeroClickMiddleware
            and not getattr(cls, "__module__", "").startswith(("starlette.", "fastapi."))
        ]
        if mine:
            names = ", ".join(getattr(cls, "__qualname__", repr(cls)) for cls in mine)
            log.warning(
                "zc_middleware: %s run(s) inside ZeroClickMiddleware, after a request's route was priced; if "
                "any rewrites the path or the method, add ZeroClickMiddleware after it (outermost)",
                names,
            )

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        first = await receive()
        if first["type"] == "lifespan.startup":
            try:
                paid = self.validate(scope.get("app"))
            except Exception as exc:
                log.error("zc_middleware: %s", exc)
                await send({"type": "lifespan.startup.failed", "message": str(exc)})
                return
            log.info("zc_middleware: %d paid routes, ledger %s", paid, self.gate.settings.ledger)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return first
            return await receive()

        async def send_after_flush(message: Message) -> None:
            # Deliver queued usage (bounded by settings.shutdown_timeout) before the server exits;
            # in a worker thread so the loop keeps serving whatever is still draining.
            if message["type"] in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
                if self.gate.reporter is not None:
                    import anyio.to_thread

                    await anyio.to_thread.run_sync(self.gate.close_reporter)
            await send(message)

        await self.app(scope, replay, send_after_flush)


class _Exchange(Allow):
    """One paid request: the grant the gate fills in (and so the usage counter), and the
    ``receive``/``send`` pair that adds the usage header and notes status and early disconnects."""

    #: the status of the ``http.response.start`` that really went out
    status: int | None = None
    disconnected_early = False

    def __init__(self, gate: Gate, headers: Iterable[tuple[bytes, bytes]], receive: Receive, send: Send) -> None:
        # One frame, no super().__init__(): every other field of the grant starts at its class default.
        self.known = gate.known
        self.gate = gate
        self.headers = headers
        self._receive = receive
        self._send = send

    def header(self, name: str) -> str | None:
        """A request header by lower-case name (ASGI servers send header names lower-cased); a
        repeated one joined with commas, as WSGI servers and Django join it."""
        raw = name.encode("latin-1")
        values = [value.decode("latin-1") for key, value in self.headers if key == raw]
        return ",".join(values) if values else None

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            status = message["status"]
            raw = _paid_headers(message.get("headers", ()))
            if status < 400 and not self.disconnected_early:
                if not self.touched:  # nothing recorded yet: the route's header, encoded once
                    self.reported = self.charge.reported
                    if self.charge.header is not None:
                        raw.append((_USAGE, self.charge.header_bytes))
                else:
                    value = self.gate.usage_header(self)
                    if value:
                        raw.append((_USAGE, value.encode("latin-1")))
            message = {**message, "headers": raw}  # the app's message and header list stay untouched
            await self._send(message)
            self.status = status  # only once the start really went out
            return
        await self._send(message)

    async def receive(self) -> Message:
        message = await self._receive()
        if message["type"] == "http.disconnect" and self.status is None:
            self.disconnected_early = True
        return message


def _paid_headers(headers: Iterable[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """:func:`zc_middleware.wsgi.paid_headers` for ASGI's byte pairs: the app's own usage header
    dropped, whatever its case or the status, and ``Cache-Control`` made private."""
    raw = list(headers)  # any iterable: read once, and never the app's own list
    for key, _ in raw:
        if key.lower() in _REWRITTEN:
            break
    else:  # the common case: none of them is there
        raw.append((b"cache-control", b"private"))
        return raw
    # the app set either itself: rewritten as WSGI's are (ASGI names are lower-case)
    text = paid_headers([(key.decode("latin-1"), value.decode("latin-1")) for key, value in raw])
    return [(key.lower().encode("latin-1"), value.encode("latin-1")) for key, value in text]


async def _refuse_websocket(receive: Receive, send: Send) -> None:
    """A metered WebSocket route (never served unchecked): closed before it is accepted, which
    servers answer with ``403``."""
    await receive()  # websocket.connect
    await send({"type": "websocket.close", "code": 1008, "reason": "metered routes are HTTP only"})


async def _send_deny(send: Send, deny: Deny) -> None:
    headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in deny.headers]
    headers.append((b"content-length", str(len(deny.body)).encode("latin-1")))
    await send({"type": "http.response.start", "status": deny.status, "headers": headers})
    await send({"type": "http.response.body", "body": deny.body})
