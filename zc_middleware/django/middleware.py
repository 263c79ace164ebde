"""Dual-mode Django middleware: ask the Gate in ``process_view``, render its answer, settle after.

Django resolves the URL *inside* ``get_response``, after this middleware's
``__call__`` has started. So the request's usage counter is bound, unarmed,
in ``__call__`` (the view and everything it calls see it through the
ContextVar) and armed in ``process_view``, where Django hands over the view
its resolver matched. Under ASGI a sync ``process_view`` runs in a worker
thread whose context never flows back, which is why only the counter
*object* is shared, never a ``.set()`` made there.

``__call__`` and ``__acall__`` share every decision; only the ledger calls
are written twice.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.handlers.wsgi import WSGIRequest
from django.http import HttpRequest, HttpResponse
from django.http.response import HttpResponseBase

from ..decision import Allow, Deny, private_cache_control
from ..errors import ConfigError
from ..gate import Charge, Gate
from ..meters import bind_counter, unbind_counter
from ..wsgi import REWRITTEN, WSGIBody, buyer_key, buyer_of, header_getter
from . import conf
from .checks import check_middleware
from .conf import get_gate
from .routing import endpoints, route_name, view_for
from .streaming import settle_at_close

__all__ = ["ZeroClickMiddleware"]

_USAGE = "X-ZeroClick-Usage"
_USAGE_KEY = _USAGE.lower()
_CDN_ONLY = REWRITTEN - {_USAGE_KEY, "cache-control"}  # what only CDNs read: dropped from paid responses
_STATE = "_zeroclick"
_CACHE_SIZE = 4096
GetResponse = Callable[[HttpRequest], Any]
RouteKey = tuple[object, str | None, str | None, str | None]


class _Exchange(WSGIBody):
    """One request through the middleware: the usage counter, bound before Django resolves the
    view; the Gate arms it and fills it in (it becomes the ``Allow``) when the view is paid."""

    #: the Gate allowed the view: settle or release when the response is done
    granted = False
    #: the Gate refused the view: its answer leaves without any usage header
    refused = False

    def __init__(self, gate: Gate) -> None:
        # One frame, no super().__init__(): every other field starts at its class default.
        self.known = gate.known
        self.gate = gate


class _Routing:
    """What one Gate prices each resolved view at, and where its buyer header sits in ``META``."""

    __slots__ = ("by_view", "charges", "gate", "meta_key")

    def __init__(self, gate: Gate) -> None:
        self.gate = gate
        self.charges: dict[RouteKey, Charge | None] = {}
        #: function views' prices, when settings ``ROUTES`` is empty and so the view alone decides
        self.by_view: dict[object, Charge | None] = {}
        #: ``HTTP_ZC_AGENT_ID`` for the default identity; ``None`` with a custom ``identify``
        self.meta_key = buyer_key(gate)

    def charge(self, request: HttpRequest, view_func: object) -> Charge | None:
        """What ``view_func`` costs for this request (:attr:`by_view` is looked up first, inline)."""
        match = request.resolver_match
        method = request.method
        url_name, view_name = (match.url_name, match.view_name) if match is not None else (None, None)
        key = (view_func, method, url_name, view_name)
        try:
            return self.charges[key]
        except KeyError:
            pass
        except TypeError:  # an unhashable view: priced on every request
            return self._price(view_func, method, url_name, view_name)
        charge = self._price(view_func, method, url_name, view_name)
        if len(self.charges) >= _CACHE_SIZE:
            self.charges.clear()
        self.charges[key] = charge
        if not self.gate.settings.routes and getattr(view_func, "view_class", None) is None:
            if len(self.by_view) >= _CACHE_SIZE:
                self.by_view.clear()
            self.by_view[view_func] = charge  # neither the method nor the URL name changes its price
        return charge

    def _price(
        self, view_func: object, method: str | None, url_name: str | None, view_name: str | None
    ) -> Charge | None:
        route = route_name(self.gate.settings.routes, url_name, view_name)
        return self.gate.charge_for(view_for(view_func, method), route)


class ZeroClickMiddleware:
    """``MIDDLEWARE = [..., "zc_middleware.django.ZeroClickMiddleware"]``; settings from ``ZEROCLICK``."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: GetResponse) -> None:
        self.get_response = get_response
        self.async_mode = iscoroutinefunction(get_response)
        if self.async_mode:
            markcoroutinefunction(self)
            # Django adapts process_view to the handler's mode; in async mode the handler is
            # async, so an async process_view is called inline instead of through the single
            # thread-sensitive executor on every request.
            self.process_view = self._aprocess_view  # type: ignore[method-assign]
        problem = next((m for m in check_middleware() if m.is_serious()), None)
        if problem is not None:  # E003, E004: a paid request would be debited twice, or served from a cache
            raise ImproperlyConfigured(f"zc_middleware: {problem.msg}")
        self._routing = _Routing(_validate_urlconf())

    # -- the request around the view ---------------------------------------------
    def __call__(self, request: HttpRequest) -> Any:
        if self.async_mode:
            return self.__acall__(request)
        exchange = request._zeroclick = _Exchange(conf._gate or get_gate())
        token = bind_counter(exchange)
        try:
            response = self.get_response(request)
        except BaseException:
            if exchange.granted:
                exchange.gate.finish(exchange, success=False)
            raise
        finally:
            unbind_counter(token)
        if exchange.granted:
            success = _respond(exchange, response, request)
            if success is not None:
                exchange.gate.finish(exchange, success=success)
        elif exchange.refused:
            _refused(response.headers)  # middleware below ours may have changed the Gate's answer
        return response

    async def __acall__(self, request: HttpRequest) -> Any:
        exchange = request._zeroclick = _Exchange(conf._gate or get_gate())
        token = bind_counter(exchange)
        try:
            response = await self.get_response(request)
        except BaseException:  # CancelledError included: Django cancels the view when the client leaves
            if exchange.granted:
                await exchange.gate.afinish(exchange, success=False)
            raise
        finally:
            unbind_counter(token)
        if exchange.granted:
            success = _respond(exchange, response, request)
            if success is not None:
                await exchange.gate.afinish(exchange, success=success)
        elif exchange.refused:
            _refused(response.headers)  # middleware below ours may have changed the Gate's answer
        return response

    # -- the decision, once Django has resolved the view ---------------------------
    def _charge(self, request: HttpRequest, view_func: object) -> tuple[_Exchange, Charge, str | None] | None:
        """The request's exchange, what its view costs and the buyer, or ``None`` for a free view."""
        exchange = getattr(request, _STATE, None)
        if exchange.__class__ is not _Exchange:
            return None  # process_view without __call__: not a request this middleware saw
        gate = exchange.gate
        routing = self._routing
        if routing.gate is not gate:  # ZEROCLICK changed (tests): price with the request's own Gate
            routing = self._routing = _Routing(gate)
        try:
            charge = routing.by_view[view_func]
        except (KeyError, TypeError):
            charge = routing.charge(request, view_func)
        if charge is None:
            return None
        return exchange, charge, buyer_of(gate, request.META, routing.meta_key)

    def process_view(
        self, request: HttpRequest, view_func: object, view_args: tuple[Any, ...], view_kwargs: dict[str, Any]
    ) -> HttpResponse | None:
        found = self._charge(request, view_func)
        if found is None:
            return None
        exchange, charge, buyer = found
        decision = exchange.gate.check_buyer(buyer, header_getter(request.META), charge, exchange)
        return _decided(exchange, decision)

    async def _aprocess_view(
        self, request: HttpRequest, view_func: object, view_args: tuple[Any, ...], view_kwargs: dict[str, Any]
    ) -> HttpResponse | None:
        found = self._charge(request, view_func)
        if found is None:
            return None
        exchange, charge, buyer = found
        gate = exchange.gate
        if gate.inline:  # embedded ledgers answer in microseconds: no coroutine, no thread hop
            decision = gate.check_buyer(buyer, header_getter(request.META), charge, exchange)
        else:
            decision = await gate.acheck_buyer(buyer, header_getter(request.META), charge, exchange)
        return _decided(exchange, decision)


def _decided(exchange: _Exchange, decision: Allow | Deny) -> HttpResponse | None:
    if decision is not exchange:  # anything but the exchange itself, armed, is a refusal
        exchange.refused = True
        return _deny_response(decision)  # type: ignore[arg-type]  # returned from process_view: the view never runs
    exchange.granted = True
    return None


def _deny_response(deny: Deny) -> HttpResponse:
    response = HttpResponse(deny.body, status=deny.status)
    for name, value in deny.headers:
        response[name] = value
    response["Content-Length"] = str(len(deny.body))
    return response


def _respond(exchange: _Exchange, response: HttpResponseBase, request: HttpRequest) -> bool | None:
    """Put the usage header on the response: ours on a success, replacing the view's own; none on a
    failure. Returns how to settle now, or ``None`` when the body settles at close."""
    success: bool = response.status_code < 400
    headers = response.headers
    _set_usage(headers, exchange.gate.usage_header(exchange) if success else None)
    _set_private(headers)
    if response.streaming:
        # As for any WSGI body: once the headers went out the proxy bills them, so the ledger keeps
        # the usage even if the body fails later; a body failing before that releases the hold.
        gate = exchange.gate
        settle_at_close(
            response,
            exchange,
            lambda: gate.finish(exchange, success=success and not exchange.failed),
            headers_first=not isinstance(request, WSGIRequest),
        )
        return None
    return success


def _set_usage(headers: Any, value: str | None) -> None:
    """Replace any usage header the view set, or drop it when ``value`` is ``None``: on a paid
    route only the Gate reports usage, and only on a success."""
    store = getattr(headers, "_store", None)
    if store.__class__ is dict:
        # Django's ResponseHeaders keeps ``{lower-case name: (name, value)}`` (4.2 to 6.1). Its
        # ``__setitem__`` re-validates the value, which costs about 1 µs a request; ours is built from
        # validated meter names and integers, plain ASCII without line breaks.
        if value:
            store[_USAGE_KEY] = (_USAGE, value)
        else:
            store.pop(_USAGE_KEY, None)
        return
    headers.pop(_USAGE, None)
    if value:
        headers[_USAGE] = value


def _refused(headers: Any) -> None:
    """The Gate's answer as middleware below ours left it: no usage header, and ``no-store`` (a cached
    ``402`` would keep refusing a buyer who has paid since)."""
    _set_usage(headers, None)
    for name in _CDN_ONLY:
        headers.pop(name, None)
    headers["Cache-Control"] = "no-store"


def _set_private(headers: Any) -> None:
    """Make a paid response's ``Cache-Control`` private (:func:`private_cache_control`): Django's own
    cache middleware, like any shared cache, then never replays it without the plan check."""
    store = getattr(headers, "_store", None)
    if store.__class__ is dict:  # as in _set_usage; the value is the app's, already validated, or ours
        current = store.get("cache-control")
        store["cache-control"] = ("Cache-Control", private_cache_control(current[1] if current else None))
        for name in _CDN_ONLY:
            store.pop(name, None)
        return
    headers["Cache-Control"] = private_cache_control(headers.get("Cache-Control"))
    for name in _CDN_ONLY:
        headers.pop(name, None)


def _validate_urlconf() -> Gate:
    """Fail at start-up, not on a request: bad settings, an unopenable ledger, a view metered on
    a meter settings do not declare. Django builds the middleware when the WSGI/ASGI application is
    created, so gunicorn and uvicorn refuse to start instead of answering 500s."""
    gate = get_gate()
    if not getattr(settings, "ROOT_URLCONF", None):
        return gate
    try:
        gate.validate_views(
            (view, route_name(gate.settings.routes, e.url_name, e.view_name))
            for e in endpoints()
            for _, view in e.views()
        )
    except ConfigError as exc:
        raise ImproperlyConfigured(f"zc_middleware: {exc.message}") from exc
    return gate
