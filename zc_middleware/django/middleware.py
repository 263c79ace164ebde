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
from django.http import HttpRequest, HttpResponse
from django.http.response import HttpResponseBase

from ..decision import Allow, Deny
from ..errors import ConfigError
from ..gate import Charge, Gate
from ..meters import bind_counter, unbind_counter
from .conf import get_gate
from .routing import endpoints, route_name, view_for
from .streaming import settle_at_close

__all__ = ["ZeroClickMiddleware"]

_USAGE = "X-ZeroClick-Usage"
_STATE = "_zeroclick"
GetResponse = Callable[[HttpRequest], Any]


class _Flow:
    """One request's state: the Gate it started with, its counter, and the hold once granted."""

    __slots__ = ("allow", "counter", "gate")

    def __init__(self, gate: Gate) -> None:
        self.gate = gate
        self.counter: Allow = gate.new_counter()
        self.allow: Allow | None = None


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
        _validate_urlconf()

    # -- the request around the view ---------------------------------------------
    def __call__(self, request: HttpRequest) -> Any:
        if self.async_mode:
            return self.__acall__(request)
        flow = _start(request)
        token = bind_counter(flow.counter)
        try:
            response = self.get_response(request)
        except BaseException:
            if flow.allow is not None:
                flow.gate.finish(flow.allow, success=False)
            raise
        finally:
            unbind_counter(token)
        success = _respond(flow, response)
        if success is not None and flow.allow is not None:
            flow.gate.finish(flow.allow, success=success)
        return response

    async def __acall__(self, request: HttpRequest) -> Any:
        flow = _start(request)
        token = bind_counter(flow.counter)
        try:
            response = await self.get_response(request)
        except BaseException:  # CancelledError included: Django cancels the view when the client leaves
            if flow.allow is not None:
                await _afinish(flow.gate, flow.allow, success=False)
            raise
        finally:
            unbind_counter(token)
        success = _respond(flow, response)
        if success is not None and flow.allow is not None:
            await _afinish(flow.gate, flow.allow, success=success)
        return response

    # -- the decision, once Django has resolved the view ---------------------------
    def process_view(
        self, request: HttpRequest, view_func: object, view_args: tuple[Any, ...], view_kwargs: dict[str, Any]
    ) -> HttpResponse | None:
        found = _charge(request, view_func)
        if found is None:
            return None
        flow, charge = found
        return _decided(flow, flow.gate.check(request.headers.get, charge, counter=flow.counter))

    async def _aprocess_view(
        self, request: HttpRequest, view_func: object, view_args: tuple[Any, ...], view_kwargs: dict[str, Any]
    ) -> HttpResponse | None:
        found = _charge(request, view_func)
        if found is None:
            return None
        flow, charge = found
        gate = flow.gate
        if gate.inline:  # embedded ledgers answer in microseconds: no coroutine, no thread hop
            decision = gate.check(request.headers.get, charge, counter=flow.counter)
        else:
            decision = await gate.acheck(request.headers.get, charge, counter=flow.counter)
        return _decided(flow, decision)


def _start(request: HttpRequest) -> _Flow:
    flow = _Flow(get_gate())
    setattr(request, _STATE, flow)
    return flow


def _charge(request: HttpRequest, view_func: object) -> tuple[_Flow, Charge] | None:
    flow: _Flow | None = getattr(request, _STATE, None)
    if flow is None:
        return None  # process_view without __call__: not a request this middleware saw
    match = request.resolver_match
    route = None
    if match is not None:
        route = route_name(flow.gate.settings.routes, match.url_name, match.view_name)
    charge = flow.gate.charge_for(view_for(view_func, request.method), route)
    return None if charge is None else (flow, charge)


def _decided(flow: _Flow, decision: Allow | Deny) -> HttpResponse | None:
    if isinstance(decision, Deny):
        return _deny_response(decision)  # returned from process_view: the view never runs
    flow.allow = decision
    return None


def _deny_response(deny: Deny) -> HttpResponse:
    response = HttpResponse(deny.body, status=deny.status)
    for name, value in deny.headers:
        response[name] = value
    response["Content-Length"] = str(len(deny.body))
    return response


def _respond(flow: _Flow, response: HttpResponseBase) -> bool | None:
    """Add the usage header; returns how to settle now, or ``None`` (free, denied, or settled at close)."""
    allow = flow.allow
    if allow is None:
        return None
    gate = flow.gate
    success: bool = response.status_code < 400
    if success:
        value = gate.usage_header(allow)
        if _USAGE in response:
            del response[_USAGE]  # the proxy trusts this header: only the gate writes it
        if value:
            response[_USAGE] = value
    if response.streaming:
        settle_at_close(response, allow.counter, lambda: gate.finish(allow, success=success))
        return None
    return success


async def _afinish(gate: Gate, allow: Allow, *, success: bool) -> None:
    if gate.inline:
        gate.finish(allow, success=success)
    else:
        await gate.afinish(allow, success=success)


def _validate_urlconf() -> None:
    """Fail at start-up, not on a request: bad settings, an unopenable ledger, a view metered on
    a meter settings do not declare. Django builds the middleware when the WSGI/ASGI application is
    created, so gunicorn and uvicorn refuse to start instead of answering 500s."""
    gate = get_gate()
    if not getattr(settings, "ROOT_URLCONF", None):
        return
    try:
        gate.validate_views(
            (view, route_name(gate.settings.routes, e.url_name, e.view_name))
            for e in endpoints()
            for _, view in e.views()
        )
    except ConfigError as exc:
        raise ImproperlyConfigured(f"zc_middleware: {exc.message}") from exc
