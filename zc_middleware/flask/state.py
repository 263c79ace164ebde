"""One Flask app's ZeroClick state: the ``before_request`` check, and ``app.wsgi_app`` wrapped to settle.

Flask has matched the URL before ``before_request`` runs, so the paid check
happens there, from ``request.endpoint`` and the view Flask will call; a
``Deny`` is returned as the response and the view never runs. Reporting and
settling are the WSGI exchange's (:mod:`zc_middleware.wsgi.exchange`),
wrapped around ``app.wsgi_app``: the usage header is written when the status
goes to the server, and the hold is settled when the server closes the body.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable
from typing import Any

from flask import Flask, Response, request
from werkzeug.datastructures import Headers

from .._cache import SIZE, remember
from ..decision import Deny, route_repriced
from ..environ import Environ, access, buyer_key, buyer_of, header_getter, path_key, verify_signed
from ..errors import ZcError
from ..gate import Charge, Gate
from ..policy import refused_headers
from ..usage import Usage
from ..wsgi import routes_by_path
from ..wsgi.exchange import Exchange, StartResponse, WSGIApp, deny_body, free_start_response
from .views import handler_for, views_of

__all__ = ["KEY", "Settle", "State", "state_of"]

log = logging.getLogger("zc_middleware")

KEY = "zeroclick"
_EXCHANGE = "zeroclick.exchange"
_PathKey = tuple[object, object, object]
#: what a view not priced yet reads as in the price cache
_UNPRICED: Any = object()


class _Free:
    """What Flask routed a method and path to, last time: a free view. A request with that method
    and path is sent straight through with this in ``environ``, for ``before_request`` to confirm."""

    __slots__ = ("method", "rule", "view")

    def __init__(self, rule: object, view: object, method: str) -> None:
        self.rule = rule
        self.view = view
        self.method = method


#: what ``environ[_EXCHANGE]`` holds when the request did not go through ``Settle``
_UNWRAPPED = _Free(None, None, "")


@functools.cache
def _refusal_class(response_class: type[Response]) -> type[Response]:
    """The app's response class for the Gate's answers (``402``, ``401``, ``503``), which leave
    without any usage header and with ``no-store`` (:func:`~zc_middleware.policy.refused_headers`):
    ``after_request`` hooks still run on them, and one that reports usage by hand must not bill a
    refused request."""

    class Refusal(response_class):  # type: ignore[valid-type,misc]
        #: the Gate's reason (``Deny.reason``), the only one that goes out
        reason: str | None = None

        def get_wsgi_headers(self, environ: Environ) -> Headers:
            headers: Headers = super().get_wsgi_headers(environ)
            return Headers(refused_headers(headers.to_wsgi_list(), self.reason))

    return Refusal


class Settle:
    """``app.wsgi_app`` wrapped: an :class:`Exchange` per request in ``environ``, granted by
    ``before_request`` when the route is paid, which then reports and settles.

    A request whose method and path were already routed to a free view goes straight through,
    with no exchange: ``before_request`` checks that Flask matched the same rule, view and method,
    and prices the request again when not (see :meth:`State.hook`).
    """

    __slots__ = ("access_path", "free", "gate", "wsgi_app")

    def __init__(self, wsgi_app: WSGIApp, gate: Gate, free: dict[_PathKey, _Free]) -> None:
        self.wsgi_app = wsgi_app
        self.gate = gate
        self.free = free
        self.access_path = gate.access_path

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == self.access_path:  # ZeroClick's entitlement writes: never the app's
            return deny_body(access(self.gate, environ), start_response)
        # path_key(environ), inlined: this runs on every request
        free = self.free.get((environ.get("REQUEST_METHOD"), environ.get("SCRIPT_NAME"), environ.get("PATH_INFO")))
        if free is not None:
            environ[_EXCHANGE] = free
            return self.wsgi_app(environ, free_start_response(start_response))
        exchange = environ[_EXCHANGE] = Exchange(self.gate, start_response)
        return exchange.serve(self.wsgi_app, environ)


class State:
    """What one app's extension holds: ``app.extensions["zeroclick"]``."""

    def __init__(self, app: Flask, gate: Gate, *, shortcut: bool = True) -> None:
        self.app = app
        self.gate = gate
        self.validated = -1
        self._buyer_key = buyer_key(gate)
        #: ``(view, endpoint, method)`` -> what it costs (``None``: free)
        self._charges: dict[tuple[object, str, str], Charge | None] = {}
        #: ``(REQUEST_METHOD, SCRIPT_NAME, PATH_INFO)`` -> the rule and the free view Flask routed it to
        self.free: dict[_PathKey, _Free] = {}
        #: remember free paths at all: not when other middleware sits between ours and Flask, since
        #: it may rewrite what Flask routes by (the method, with an override header; the path)
        self.shortcut = shortcut
        #: keys that stopped being free while remembered as free: never remembered again
        self._volatile: set[_PathKey] = set()
        self._rule_count = -1
        self._by_path = False

    def validate(self) -> int:
        """Check every view's meters; returns how many routes are paid. Raises :class:`ConfigError`."""
        views = self.app.view_functions
        paid = self.gate.validate_views(views_of(views))
        self.gate.warn_unrouted(views)
        self.validated = len(views)
        return paid

    def revalidate(self) -> None:
        """Views were added after ``init_app`` (Flask has no start-up hook to check them at): check
        them now, without raising (see :meth:`Gate.log_view_problems`)."""
        views = self.app.view_functions
        self.gate.log_view_problems(views_of(views))
        self.validated = len(views)

    def _price(self, view: object, endpoint: str, method: str) -> Charge | None:
        return self.gate.charge_for(handler_for(view, method), endpoint)

    def _paths_decide(self) -> bool:
        """Whether free paths may be remembered by :func:`~zc_middleware.environ.path_key`."""
        url_map = self.app.url_map
        rules = getattr(url_map, "_rules", None)  # werkzeug's own list; absent: never remember
        if not self.shortcut or not isinstance(rules, list):
            return False
        if len(rules) != self._rule_count:
            self.free.clear()
            self._rule_count = len(rules)
            self._by_path = routes_by_path(url_map, rules)
        return self._by_path

    def _remember_free(self, environ: Environ, free: _Free) -> None:
        key = path_key(environ)
        if key in self._volatile or not self._paths_decide():
            return
        remember(self.free, key, free)

    def _no_longer_free(self, environ: Environ) -> Response:
        """A request sent straight through as free reached a paid view: a view was swapped in
        ``app.view_functions``, or a converter changed its mind. Nothing ran; the client retries,
        and this path is never sent straight through again."""
        key = path_key(environ)
        self.free.clear()
        if len(self._volatile) >= SIZE:
            self._volatile.clear()
        self._volatile.add(key)
        log.warning("zc_middleware: a path routed to a free view before now reaches a paid one; answered 503 once")
        return self._respond(self.gate.deny(route_repriced()))

    def _respond(self, deny: Deny) -> Response:
        refusal = _refusal_class(self.app.response_class)  # type: ignore[arg-type]  # classes hash
        response: Response = refusal(deny.body, status=deny.status, headers=list(deny.headers))
        response.reason = deny.reason  # type: ignore[attr-defined]
        return response

    def hook(self) -> Callable[[], Response | None]:
        """The ``before_request`` function: price the view Flask matched; for a paid one, ask the
        Gate and either grant the request's exchange or answer with the Gate's response."""
        app = self.app
        gate = self.gate
        charges = self._charges
        buyer_header = self._buyer_key
        current_request = request._get_current_object  # type: ignore[attr-defined]  # one proxy lookup, not eight

        def before_request() -> Response | None:
            req = current_request()
            rule = req.url_rule
            if rule is None:
                return None  # 404 / 405: Flask answers, no view runs
            environ = req.environ
            exchange = environ.get(_EXCHANGE, _UNWRAPPED)
            endpoint = rule.endpoint
            views = app.view_functions
            view = views.get(endpoint)  # read once: what is priced is what is remembered
            method = req.method
            if exchange.__class__ is _Free and exchange.rule is rule and exchange.view is view:
                if exchange.method == method:
                    return None  # sent straight through as free, and Flask routed it just as before
            if len(views) != self.validated:
                self.revalidate()  # routes added after init_app (Flask refuses new ones after the first request)
            if method == "OPTIONS" and getattr(rule, "provide_automatic_options", False):
                charge = None  # Flask answers OPTIONS itself without calling the view (a property of the rule)
            else:
                key = (view, endpoint, method)
                try:
                    charge = charges.get(key, _UNPRICED)
                except TypeError:  # an unhashable view: priced on every request
                    charge = self._price(view, endpoint, method)
                if charge is _UNPRICED:  # priced outside the lookup: a ConfigError is not chained to a KeyError
                    charge = charges[key] = self._price(view, endpoint, method)
            if exchange.__class__ is not Exchange:
                if exchange is _UNWRAPPED:
                    if charge is None:
                        return None
                    raise ZcError(
                        "not_wrapped",
                        "this request did not go through app.wsgi_app as ZeroClick wrapped it; "
                        "wrap app.wsgi_app in other middleware only after ZeroClick.init_app(app)",
                    )
                if charge is not None:
                    return self._no_longer_free(environ)
            if charge is None:
                self._remember_free(environ, _Free(rule, view, method))  # later requests skip the exchange
                return None
            get_header = header_getter(environ)
            # before anything reads the body (request.stream is lazy)
            if gate.signatures is not None and (denied := verify_signed(gate, environ, get_header)) is not None:
                exchange.refused = denied
                return self._respond(denied)
            usage = Usage()
            decision = gate.check_buyer(buyer_of(gate, environ, buyer_header), get_header, charge, usage)
            if isinstance(decision, Deny):
                exchange.refused = decision
                return self._respond(decision)
            exchange.grant(usage)
            return None

        return before_request


def state_of(app: Flask) -> State:
    state = app.extensions.get(KEY)
    if not isinstance(state, State):
        raise ZcError("not_initialised", f"ZeroClick is not set up on app {app.name!r}: call ZeroClick(app)")
    return state
