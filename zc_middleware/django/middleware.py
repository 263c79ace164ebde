"""Dual-mode Django middleware: ask the Gate in ``process_view``, render its answer, settle after.

Django resolves the URL *inside* ``get_response``, after this middleware's
``__call__`` has started. So the request's usage counter is bound, unarmed,
in ``__call__`` (the view and everything it calls see it through the
ContextVar) and armed in ``process_view``, where Django hands over the view
its resolver matched. Under ASGI a sync ``process_view`` runs in a worker
thread whose context never flows back, which is why only the counter
*object* is shared, never a ``.set()`` made there.

``__call__`` and ``__acall__`` share every step; only the Gate calls differ.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextvars import Token
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.handlers.wsgi import WSGIRequest
from django.http import HttpRequest, HttpResponse
from django.http.response import HttpResponseBase

from ..decision import Allow, Deny
from ..environ import buyer_of, header_getter
from ..errors import ConfigError
from ..gate import Charge, Gate
from ..identity import HeaderGetter
from ..policy import CONTRACT, HeaderMap, apply_free, apply_paid, apply_refused, succeeded
from ..usage import Usage, bind_counter, unbind_counter
from . import conf
from .checks import check_middleware
from .conf import get_gate
from .routing import Routing, endpoints, route_name
from .signed import access, verify
from .streaming import settle_at_close

__all__ = ["ZeroClickMiddleware"]

_STATE = "_zeroclick"
GetResponse = Callable[[HttpRequest], Any]
CheckArgs = tuple["str | None", HeaderGetter, Charge, Usage]


class _Request:
    """One request through the middleware: the Gate that serves it, its usage counter (bound before
    Django resolves the view, armed when the Gate grants it), and whether the Gate refused it."""

    __slots__ = ("gate", "refused", "usage")

    def __init__(self, gate: Gate) -> None:
        self.gate = gate
        self.usage = Usage()
        self.refused: Deny | None = None

    def bind(self, request: HttpRequest) -> Token[Usage | None]:
        setattr(request, _STATE, self)
        return bind_counter(self.usage)


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
        self._routing = Routing(_validate_urlconf())

    # -- the request around the view: the twins share every step ------------------------
    def __call__(self, request: HttpRequest) -> Any:
        if self.async_mode:
            return self.__acall__(request)
        gate = conf._gate or get_gate()
        if request.path_info == gate.access_path:  # ZeroClick's entitlement writes: never the app's
            return _deny_response(gate.access.handle(*access(gate, request)))  # type: ignore[union-attr]
        state = _Request(gate)
        token = state.bind(request)
        response = None
        try:
            response = self.get_response(request)
        finally:  # a view that raised (response None) releases its hold
            unbind_counter(token)
            if (success := _outcome(state, request, response)) is not None:
                state.gate.finish(state.usage, success=success)
        return response

    async def __acall__(self, request: HttpRequest) -> Any:
        gate = conf._gate or get_gate()
        if request.path_info == gate.access_path:  # ZeroClick's entitlement writes: never the app's
            return _deny_response(await gate.access.ahandle(*access(gate, request)))  # type: ignore[union-attr]
        state = _Request(gate)
        token = state.bind(request)
        response = None
        try:
            response = await self.get_response(request)
        finally:  # a view that raised, or was cancelled as the client left, releases its hold
            unbind_counter(token)
            if (success := _outcome(state, request, response)) is not None:
                await state.gate.afinish(state.usage, success=success)
        return response

    # -- the decision, once Django has resolved the view ---------------------------
    def _check(self, request: HttpRequest, view_func: object) -> tuple[_Request, CheckArgs] | HttpResponse | None:
        """The request's state and what to ask the Gate (buyer, header getter, charge, usage), the
        refusal of a request not signed by the proxy, or ``None`` for a free view."""
        state = getattr(request, _STATE, None)
        if state.__class__ is not _Request:
            return None  # process_view without __call__: not a request this middleware saw
        gate = state.gate
        routing = self._routing
        if routing.gate is not gate:  # ZEROCLICK changed (tests): price with the request's own Gate
            routing = self._routing = Routing(gate)
        try:
            charge = routing.by_view[view_func]
        except (KeyError, TypeError):
            charge = routing.charge(request, view_func)
        if charge is None:
            return None
        if gate.signatures is not None and (deny := verify(gate, request)) is not None:
            return _decided(state, deny)
        buyer = buyer_of(gate, request.META, routing.meta_key)
        return state, (buyer, header_getter(request.META), charge, state.usage)

    def process_view(
        self, request: HttpRequest, view_func: object, view_args: tuple[Any, ...], view_kwargs: dict[str, Any]
    ) -> HttpResponse | None:
        if (found := self._check(request, view_func)).__class__ is not tuple:
            return found  # free (None), or a refused signature
        return _decided(found[0], found[0].gate.check_buyer(*found[1]))

    async def _aprocess_view(
        self, request: HttpRequest, view_func: object, view_args: tuple[Any, ...], view_kwargs: dict[str, Any]
    ) -> HttpResponse | None:
        if (found := self._check(request, view_func)).__class__ is not tuple:
            return found  # free (None), or a refused signature
        return _decided(found[0], await found[0].gate.acheck_buyer(*found[1]))


def _decided(state: _Request, decision: Allow | Deny) -> HttpResponse | None:
    if isinstance(decision, Deny):
        state.refused = decision
        return _deny_response(decision)  # returned from process_view: the view never runs
    return None


class _Headers:
    """Django's response headers as the response policy edits them. ``ResponseHeaders`` keeps
    ``{lower-case name: (name, value)}`` in ``_store`` (Django 4.2 to 6.0); its own ``get`` raises and
    catches a ``KeyError`` for a missing header and its ``__setitem__`` re-validates the value, which
    cost microseconds on every paid response. The values written here are the policy's own (meter
    names and integers, directives the app already set), plain ASCII without line breaks."""

    __slots__ = ("_store",)

    def __init__(self, store: dict[str, tuple[str, str]]) -> None:
        self._store = store

    def names(self) -> Iterable[str]:
        return self._store.keys()

    def get(self, name: str, default: str | None = None) -> str | None:
        item = self._store.get(name.lower())
        return default if item is None else item[1]

    def pop(self, name: str, default: str | None = None) -> str | None:
        item = self._store.pop(name.lower(), None)
        return default if item is None else item[1]

    def __setitem__(self, name: str, value: str) -> None:
        self._store[name.lower()] = (name, value)


class _Public:
    """The same through ``ResponseHeaders``' public methods, should its ``_store`` ever change shape."""

    __slots__ = ("_headers",)

    def __init__(self, headers: Any) -> None:
        self._headers = headers

    def names(self) -> Iterable[str]:
        return [name.lower() for name in self._headers]

    def get(self, name: str, default: str | None = None) -> str | None:
        return self._headers.get(name, default)  # type: ignore[no-any-return]

    def pop(self, name: str, default: str | None = None) -> str | None:
        return self._headers.pop(name, default)  # type: ignore[no-any-return]

    def __setitem__(self, name: str, value: str) -> None:
        self._headers[name] = value


def _headers(response: HttpResponseBase) -> HeaderMap:
    store = getattr(response.headers, "_store", None)
    return _Headers(store) if store.__class__ is dict else _Public(response.headers)


def _deny_response(deny: Deny) -> HttpResponse:
    response = HttpResponse(deny.body, status=deny.status)
    for name, value in deny.headers:
        response[name] = value
    response["Content-Length"] = str(len(deny.body))
    return response


def _outcome(state: _Request, request: HttpRequest, response: HttpResponseBase | None) -> bool | None:
    """Apply the response policy to ``response`` (``None``: the view raised) and say how to settle
    now: ``True``/``False``, or ``None`` for nothing to settle (free, refused, or settled when a
    streamed body closes)."""
    usage = state.usage
    if usage.allow is None:  # not granted
        if response is not None:
            if state.refused is not None:  # middleware below ours may have changed the Gate's answer
                apply_refused(_headers(response), state.refused.reason)
            else:  # free: the contract's headers the app set never go out
                store = getattr(response.headers, "_store", None)
                if store.__class__ is not dict or not CONTRACT.isdisjoint(store):  # dict: one look, in C
                    apply_free(_headers(response))
        return None
    if response is None:
        return False
    success = succeeded(response.status_code, False)
    apply_paid(_headers(response), usage.report() if success else None)
    if not response.streaming:
        return success
    # As for any WSGI body: once the headers went out the proxy bills them, so the ledger keeps the
    # usage even if the body fails later; a body failing before that releases the hold.
    gate = state.gate
    settle_at_close(
        response,
        usage,
        lambda body: gate.finish(usage, success=succeeded(response.status_code, body.failed)),
        headers_first=not isinstance(request, WSGIRequest),
    )
    return None


def _validate_urlconf() -> Gate:
    """Fail at start-up, not on a request: bad settings, an unopenable ledger, a view metered on
    a meter settings do not declare. Django builds the middleware when the WSGI/ASGI application is
    created, so gunicorn and uvicorn refuse to start instead of answering 500s."""
    try:
        gate = get_gate()
    except ConfigError as exc:  # e.g. a ledger that cannot be opened
        raise ImproperlyConfigured(f"zc_middleware: {exc.message}") from exc
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
