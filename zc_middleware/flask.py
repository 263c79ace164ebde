"""The Flask extension: ``ZeroClick(app)`` or ``ZeroClick()`` + ``init_app(app)``.

Flask has matched the URL before ``before_request`` runs, so the paid check
happens there, from ``request.endpoint`` and the view Flask will call; a
``Deny`` is returned as the response and the view never runs. Reporting and
settling are the pure WSGI core's (:mod:`zc_middleware.wsgi`), wrapped around
``app.wsgi_app``: the usage header is written when the status goes to the
server, and the hold is settled when the server closes the body. Not
``response.call_on_close``: werkzeug skips those hooks for
``direct_passthrough`` bodies (``send_file``), which would leave a hold
unsettled for ever.

``record_usage`` works in the view, in everything it calls, in
``after_request``/``teardown_request`` hooks, and in streamed bodies (with
or without ``stream_with_context``): the counter is bound from
``before_request`` until ``app.wsgi_app`` returns, then again around every
step of the body. Usage recorded after the header went out (in a streamed
body, or in ``teardown_request``, which Flask runs after the response has
started) is late, exactly as under Starlette: it goes through the batch
channel, and without an ``api_key`` it is only logged.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime
from typing import Any

try:
    import click
    from flask import Flask, Response, current_app, request
    from flask.cli import AppGroup
    from werkzeug.datastructures import Headers
except ImportError:  # pragma: no cover - exercised by tests/flask/test_flask.py
    raise ImportError("zc_middleware.flask needs Flask: pip install 'zc-middleware[flask]'") from None

from pydantic import ValidationError

from ._text import moment, table
from .decision import Deny, route_repriced
from .errors import ConfigError, ZcError
from .gate import Charge, Gate, Identify
from .ledger import Ledger
from .meters import handler_marks
from .settings import ZeroClickSettings
from .wsgi import (
    Environ,
    Exchange,
    StartResponse,
    WSGIApp,
    buyer_key,
    buyer_of,
    header_getter,
    path_key,
    refused_headers,
    routes_by_path,
)

__all__ = ["ZeroClick", "route_rows", "zeroclick_cli"]

log = logging.getLogger("zc_middleware")

_KEY = "zeroclick"
_EXCHANGE = "zeroclick.exchange"
_METHODS = ("get", "head", "post", "put", "patch", "delete", "options")
_CACHE_SIZE = 4096
_PathKey = tuple[object, object, object]


class _Free:
    """What Flask routed a method and path to, last time: a free view. A request with that method
    and path is sent straight through with this in ``environ``, for ``before_request`` to confirm."""

    __slots__ = ("method", "rule", "view")

    def __init__(self, rule: object, view: object, method: str) -> None:
        self.rule = rule
        self.view = view
        self.method = method


#: what ``environ[_EXCHANGE]`` holds when the request did not go through ``_Settle``
_UNWRAPPED = _Free(None, None, "")


@functools.cache
def _refusal_class(response_class: type[Response]) -> type[Response]:
    """The app's response class for the Gate's answers (``402``, ``401``, ``503``), which leave
    without any usage header and with ``no-store`` (:func:`~zc_middleware.wsgi.refused_headers`):
    ``after_request`` hooks still run on them, and one that reports usage by hand must not bill a
    refused request."""

    class Refusal(response_class):  # type: ignore[valid-type,misc]
        def get_wsgi_headers(self, environ: Environ) -> Headers:
            headers: Headers = super().get_wsgi_headers(environ)
            return Headers(refused_headers(headers.to_wsgi_list()))

    return Refusal


def _handler(view: object, method: str) -> object:
    """What prices ``method`` on ``view``: for a class-based view, the marks of its handler
    (``MethodView.get``) stacked on the view's own (``decorators``, or the ``as_view()`` function
    decorated), see :func:`handler_marks`; else the view itself."""
    cls = getattr(view, "view_class", None)
    if cls is None:
        return view
    dispatch = getattr(cls, "dispatch_request", None)  # every method goes through it
    outer = handler_marks(view, dispatch) if dispatch is not None else view
    handler = getattr(cls, method.lower(), None)
    if handler is None and method == "HEAD":
        handler = getattr(cls, "get", None)
    return handler_marks(outer, handler) if handler is not None else outer


def _views(view_functions: Mapping[str, Any]) -> Iterator[tuple[object, str | None]]:
    for endpoint, view in view_functions.items():
        yield view, endpoint
        cls = getattr(view, "view_class", None)
        for method in _METHODS if cls is not None else ():
            yield _handler(view, method.upper()), endpoint


class _Settle:
    """``app.wsgi_app`` wrapped: an :class:`Exchange` per request in ``environ``, granted by
    ``before_request`` when the route is paid, which then reports and settles.

    A request whose method and path were already routed to a free view goes straight through,
    with no exchange: ``before_request`` checks that Flask matched the same rule, view and method,
    and prices the request again when not (see :meth:`_State.hook`).
    """

    __slots__ = ("free", "gate", "wsgi_app")

    def __init__(self, wsgi_app: WSGIApp, gate: Gate, free: dict[_PathKey, _Free]) -> None:
        self.wsgi_app = wsgi_app
        self.gate = gate
        self.free = free

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        # path_key(environ), inlined: this runs on every request
        free = self.free.get((environ.get("REQUEST_METHOD"), environ.get("SCRIPT_NAME"), environ.get("PATH_INFO")))
        if free is not None:
            environ[_EXCHANGE] = free
            return self.wsgi_app(environ, start_response)
        exchange = environ[_EXCHANGE] = Exchange(self.gate, start_response)
        return exchange.serve(self.wsgi_app, environ)


class _State:
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
        paid = self.gate.validate_views(_views(views))
        self.gate.warn_unrouted(views)
        self.validated = len(views)
        return paid

    def revalidate(self) -> None:
        """Views were added after ``init_app`` (Flask has no start-up hook to check them at): check
        them now, without raising (see :meth:`Gate.log_view_problems`)."""
        views = self.app.view_functions
        self.gate.log_view_problems(_views(views))
        self.validated = len(views)

    def _price(self, view: object, endpoint: str, method: str) -> Charge | None:
        return self.gate.charge_for(_handler(view, method), endpoint)

    def _paths_decide(self) -> bool:
        """Whether free paths may be remembered by :func:`~zc_middleware.wsgi.path_key`."""
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
        if len(self.free) >= _CACHE_SIZE:
            self.free.clear()
        self.free[key] = free

    def _no_longer_free(self, environ: Environ) -> Response:
        """A request sent straight through as free reached a paid view: a view was swapped in
        ``app.view_functions``, or a converter changed its mind. Nothing ran; the client retries,
        and this path is never sent straight through again."""
        key = path_key(environ)
        self.free.clear()
        if len(self._volatile) >= _CACHE_SIZE:
            self._volatile.clear()
        self._volatile.add(key)
        log.warning("zc_middleware: a path routed to a free view before now reaches a paid one; answered 503 once")
        return self._respond(self.gate.deny(route_repriced()))

    def _respond(self, deny: Deny) -> Response:
        refusal = _refusal_class(self.app.response_class)  # type: ignore[arg-type]  # classes hash
        return refusal(deny.body, status=deny.status, headers=list(deny.headers))

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
                    charge = charges[key]
                except KeyError:
                    charge = charges[key] = self._price(view, endpoint, method)
                except TypeError:  # an unhashable view: priced on every request
                    charge = self._price(view, endpoint, method)
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
            buyer = buyer_of(gate, environ, buyer_header)
            decision = gate.check_buyer(buyer, header_getter(environ), charge, exchange)
            if decision is not exchange:  # anything but the exchange itself, armed, is a refusal
                exchange.refused = True
                return self._respond(decision)  # type: ignore[arg-type]
            exchange.grant()  # type: ignore[union-attr]  # ``is`` the decision: mypy narrows it to that
            return None

        return before_request


class ZeroClick:
    """The Flask extension. Explicit arguments win over ``app.config["ZEROCLICK"]``, which wins over
    ``ZEROCLICK_*`` environment variables; the app's config is read, never written."""

    def __init__(
        self,
        app: Flask | None = None,
        *,
        settings: ZeroClickSettings | Mapping[str, Any] | None = None,
        ledger: Ledger | None = None,
        identify: Identify | None = None,
    ) -> None:
        self.settings = settings
        self.ledger = ledger
        self.identify = identify
        if app is not None:
            self.init_app(app)

    def settings_for(self, app: Flask) -> ZeroClickSettings:
        """The validated settings ``app`` gets, from the explicit ones, its config and the environment."""
        if isinstance(self.settings, ZeroClickSettings):
            return self.settings
        raw = app.config.get("ZEROCLICK", {})
        if not isinstance(raw, Mapping):
            raise ConfigError("invalid_settings", f'app.config["ZEROCLICK"] must be a dict, got {type(raw).__name__}')
        merged = _lower(raw, 'app.config["ZEROCLICK"]')
        merged.update(_lower(self.settings or {}, "settings"))
        try:
            return ZeroClickSettings(**merged)
        except ValidationError as exc:
            raise ConfigError("invalid_settings", f'app.config["ZEROCLICK"]: {exc}') from None

    def init_app(self, app: Flask) -> None:
        """Check every view's meters now (an unknown meter is a :class:`ConfigError`), then hook in."""
        if _KEY in app.extensions:
            raise ConfigError("already_initialised", f"ZeroClick is already set up on app {app.name!r}")
        gate = Gate(self.settings_for(app), ledger=self.ledger, identify=self.identify)
        # Middleware already wrapping app.wsgi_app sits between ours and Flask: no path shortcut.
        state = _State(app, gate, shortcut="wsgi_app" not in vars(app))
        try:
            state.validate()
        except Exception:
            if self.ledger is None:
                gate.close()
            raise
        app.extensions[_KEY] = state
        # First, like an outermost middleware: nothing else runs for a request the plan does not cover.
        app.before_request_funcs.setdefault(None, []).insert(0, state.hook())
        app.wsgi_app = _Settle(app.wsgi_app, gate, state.free)  # type: ignore[method-assign]
        app.cli.add_command(zeroclick_cli)

    def gate_for(self, app: Flask | None = None) -> Gate:
        """The :class:`Gate` of ``app`` (default: the current app)."""
        return _state(app if app is not None else current_app).gate


def _lower(raw: Mapping[str, Any], where: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in raw.items():
        name = key.lower() if isinstance(key, str) else key
        if name in out:
            raise ConfigError("invalid_settings", f"{where} gives {name!r} twice (keys are case-insensitive)")
        out[name] = value
    return out


def _state(app: Flask) -> _State:
    state = app.extensions.get(_KEY)
    if not isinstance(state, _State):
        raise ZcError("not_initialised", f"ZeroClick is not set up on app {app.name!r}: call ZeroClick(app)")
    return state


zeroclick_cli = AppGroup("zeroclick", help="ZeroClick metering: paid routes, buyers' balances and plans.")


def route_rows(app: Flask, gate: Gate) -> list[tuple[str, str, str, str]]:
    """``(route, methods, endpoint, meters)`` for every metered rule of ``app``, priced by ``gate``."""
    rows: list[tuple[str, str, str, str]] = []
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: (r.rule, r.endpoint)):
        view = app.view_functions.get(rule.endpoint)
        by_charge: dict[Charge, list[str]] = {}
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            charge = gate.charge_for(_handler(view, method), rule.endpoint)
            if charge is not None:
                by_charge.setdefault(charge, []).append(method)
        for charge, methods in by_charge.items():
            rows.append((rule.rule, ",".join(methods), rule.endpoint, ", ".join(spec.describe() for spec in charge)))
    return rows


@zeroclick_cli.command("routes")
def routes_command() -> None:
    """List the metered routes and what each costs."""
    rows = route_rows(current_app, _state(current_app).gate)
    click.echo(table([("route", "methods", "endpoint", "meters"), *rows]) if rows else "No metered routes.")


@zeroclick_cli.command("balance")
@click.argument("buyer")
def balance_command(buyer: str) -> None:
    """Show BUYER's balance: limit, used, remaining, % used and period, per meter."""
    click.echo(_state(current_app).gate.ledger.balance(buyer).as_table())


def _moment_option(ctx: click.Context, param: click.Parameter, value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        return moment(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param=param) from None


@zeroclick_cli.command("assign")
@click.argument("buyer")
@click.argument("plan")
@click.option("--expires", callback=_moment_option, help="ISO 8601 date-time with offset: the plan stops serving then")
@click.option("--starts", callback=_moment_option, help="ISO 8601 date-time with offset: the plan's periods start then")
def assign_command(buyer: str, plan: str, expires: datetime | None, starts: datetime | None) -> None:
    """Put BUYER on PLAN with fresh allowances, periods starting now (or at --starts)."""
    ledger = _state(current_app).gate.ledger
    try:
        ledger.assign_plan(buyer, plan, starts_at=starts, expires_at=expires)
    except ZcError as exc:
        raise click.ClickException(exc.message) from None
    click.echo(f"Assigned plan {plan} to {buyer}.")
    click.echo(ledger.balance(buyer).as_table())
