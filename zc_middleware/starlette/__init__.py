"""Pure ASGI middleware for Starlette and FastAPI: ``app.add_middleware(ZeroClickMiddleware, settings=...)``.

Not ``BaseHTTPMiddleware``: that buffers responses, breaks streaming and
drops context variables set downstream. Whether a request is paid is decided
from the router's own match (:mod:`.routes`); a paid request runs through an
:class:`~.exchange.Exchange` that applies the response policy on
``http.response.start`` and passes every other message through untouched.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

try:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send
except ImportError:  # pragma: no cover - exercised by tests/test_optional_imports.py
    raise ImportError("zc_middleware.starlette needs Starlette: pip install 'zc-middleware[starlette]'") from None

from .._cache import remember
from ..decision import Deny, misconfigured
from ..errors import ConfigError
from ..gate import Charge, Gate, GateOptions
from ..policy import succeeded
from ..pricing import View
from ..settings import MeterConfig, ZeroClickSettings
from ..signing import asgi_target
from ..usage import Usage, bind_counter, unbind_counter
from .exchange import Exchange, free_send, read_body, refuse_websocket, send_deny, zc_headers
from .routes import match, named, route_rows, views, websockets

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["ZeroClickMiddleware", "route_rows"]

log = logging.getLogger("zc_middleware")
_CHECKED = "zc_middleware.checked"  # in the scope of a request a ZeroClickMiddleware has checked


class ZeroClickMiddleware:
    """``app.add_middleware(ZeroClickMiddleware, settings=ZeroClickSettings(...))``."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        settings: ZeroClickSettings | None = None,
        gate: Gate | None = None,
        **options: Unpack[GateOptions],
    ) -> None:
        """``settings`` (default: ``ZEROCLICK_*`` variables) and ``ledger=``/``identify=`` build the
        :class:`Gate`; or pass a ``gate`` built already."""
        self.app = app
        #: a ledger this middleware opens itself is closed at lifespan shutdown; one passed in is the caller's
        self._owns_ledger = gate is None and options.get("ledger") is None
        #: why the settings or the store could not be used: start-up fails with it (ASGI lifespan)
        self.startup_error: ConfigError | None = None
        #: the answer to every HTTP request when there are no settings to price routes with
        self._misconfigured: Deny | None = None
        # Starlette builds its middleware inside the first ASGI call, the lifespan one, and a server
        # on ``--lifespan auto`` reads an exception there as "no lifespan support" and serves on, with
        # every request failing the same way. So nothing raises here: start-up fails with the reason,
        # and without lifespan a broken store answers paid requests 503 and serves free ones.
        if gate is None:
            try:
                config = settings if settings is not None else ZeroClickSettings()  # type: ignore[call-arg]
            except (ConfigError, ValidationError) as exc:  # ZEROCLICK_* variables that do not validate
                if not isinstance(exc, ConfigError):
                    exc = ConfigError("invalid_settings", f"ZEROCLICK_* variables: {exc}")
                self.startup_error = exc
                log.error("zc_middleware: %s", self.startup_error.message)
                self._misconfigured = misconfigured()
                # a stand-in that reads no variable (the broken one would raise again); never priced with
                config = ZeroClickSettings.model_construct(meters={"unused": MeterConfig()}, ledger="memory://")
            try:
                gate = Gate(config, **options)
            except ConfigError as exc:
                log.error("zc_middleware: %s", exc.message)
                self.startup_error = exc
                gate = Gate.unavailable(config, exc, identify=options.get("identify"))
        self.gate = gate
        self._identity = gate.identity_header.encode("latin-1") if gate.identity_header else None
        self._access_path = gate.access_path
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
                await refuse_websocket(receive, send)  # refused at start-up too: see validate()
            else:
                await self.app(scope, receive, send)
            return
        if self._misconfigured is not None:  # no settings: no route can be priced, none is served
            await send_deny(send, self._misconfigured)
            return
        if scope["path"] == self._access_path:  # ZeroClick's entitlement writes: never the app's
            await self._access(scope, receive, send)
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
        if charge is None:  # free: the contract's headers the app set never go out
            await self.app(scope, receive, free_send(send))
            return
        if _CHECKED in scope:
            # paid and already checked by a ZeroClickMiddleware outside this one (installed twice, or
            # around a mounted app that has its own), whose policy applies: never debited twice
            await self.app(scope, receive, send)
            return
        # A paid request, written out in one coroutine: this is the per-request cost of the middleware.
        gate = self.gate
        signatures = gate.signatures
        if signatures is not None:  # the proxy's signature covers the body: read it once, replay it
            read = await read_body(receive, signatures.max_body)
            if read is None:
                return  # the client left before its body was in: nothing ran, nothing to answer
            body, receive = read
        exchange = Exchange(Usage(), scope["headers"], receive, send)
        if signatures is not None:  # the proxy's headers, gathered in one pass
            signed = zc_headers(exchange.headers).get
            deny = gate.verify(scope["method"], asgi_target(scope), body, signed)
            if deny is not None:
                await send_deny(send, deny)
                return
            identity = gate.identity_header
            if identity is None:
                buyer = gate.identify(exchange.header)
            else:  # zc-agent-id (the default) is among the headers just gathered
                buyer = signed(identity) if identity.startswith("zc-") else exchange.header(identity)
        elif self._identity is not None:  # the default identity: one header, read straight from the scope
            buyer = None
            for name, value in exchange.headers:
                if name == self._identity:
                    # Repeated, joined as WSGI servers and Django join it: two buyers are not an id.
                    buyer = value.decode("latin-1") if buyer is None else f"{buyer},{value.decode('latin-1')}"
        else:
            buyer = gate.identify(exchange.header)
        if gate.inline:
            decision = gate.check_buyer(buyer, exchange.header, charge, exchange.usage)
        else:
            decision = await gate.acheck_buyer(buyer, exchange.header, charge, exchange.usage)
        if decision.__class__ is Deny:
            await send_deny(send, decision)
            return
        token = bind_counter(exchange.usage)
        scope[_CHECKED] = True  # the scope mounted apps and routers pass on, updated in place
        try:
            await self.app(scope, exchange.receive, exchange.send)
        finally:
            unbind_counter(token)
            # Once a usage header went out the proxy bills it, so the ledger keeps it
            # even if the body later fails; before that, any failure releases the hold.
            success = succeeded(exchange.status, exchange.disconnected_early)
            if gate.inline:
                gate.finish(exchange.usage, success=success)
            else:
                await gate.afinish(exchange.usage, success=success)

    async def _access(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A request at the access path, answered by :class:`~zc_middleware.access.Access`."""
        access = self.gate.access
        assert access is not None
        body: bytes | None = b""
        if scope["method"] == "POST":
            read = await read_body(receive, access.max_body)
            if read is None:
                return  # the client left before its body was in: nothing to apply, nobody to answer
            body = read[0]
        answer = await access.ahandle(scope["method"], asgi_target(scope), body, zc_headers(scope["headers"]).get)
        await send_deny(send, answer)

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
        found, cacheable = match(routes, probe, None)
        if found is None:
            return None  # 404, 405: the app answers. Not remembered: a route may be added there later
        charge = self.gate.charge_for(*self._named(found))
        if not isinstance(routes, list):
            return charge  # nothing to tell a change of routes by: priced on every request
        if key is not None and not self._cache:  # remember the routes the cache is filled from
            self._routes, self._routes_len, self._routes_last = routes, len(routes), routes[-1] if routes else None
        if cacheable and key is not None:
            remember(self._cache, key, charge)
        return charge

    def _named(self, view: View) -> View:
        return named(view, self.gate.settings.routes)

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
        for endpoint, name, path in websockets(router.routes):
            if self.gate.charge_for(*self._named((endpoint, name))) is not None:
                raise ConfigError(
                    "metered_websocket",
                    f"the WebSocket route {path!r} is metered, but zc_middleware meters HTTP requests only "
                    "(a WebSocket session has no response to carry a usage header); check the plan and report "
                    "its usage with report_usage() (batch) in the handler instead",
                )
        found = list(views(router.routes))
        priced = [self._named(view) for view in found]
        self.gate.warn_unrouted({name for _, name in found} | {name for _, name in priced})
        return self.gate.validate_views(priced)

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
                if self.startup_error is not None:
                    raise self.startup_error
                paid = self.validate(scope.get("app"))
            except Exception as exc:  # the server reports it (uvicorn: "ERROR: ..."), and exits
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
                if self._owns_ledger:  # its connections and pools, before the loop they belong to ends
                    await self.gate.ledger.aclose()
            await send(message)

        await self.app(scope, replay, send_after_flush)
