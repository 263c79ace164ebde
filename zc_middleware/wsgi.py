"""Pure WSGI: hold, report and settle a paid request around any WSGI app; ``ZeroClickWSGI`` for werkzeug apps.

The shared core (:class:`Flow`, :func:`serve`, :func:`deny_body`) knows no
framework; the Flask extension uses it too. A WSGI body may be iterated after
the app returned, and on another thread (gunicorn's gthread worker iterates
on the thread that called the app, other servers do not promise it), so:

* the usage header is written in ``start_response``, the moment the status
  and headers are handed to the server (the WSGI twin of ASGI's
  ``http.response.start``), exactly once and replacing any the app set;
* the usage counter is bound around every ``next()`` of the body and around
  its ``close()``, so :func:`~zc_middleware.record_usage` works in streaming
  generators on whatever thread iterates them;
* the hold is settled or released in ``close()``, which PEP 3333 servers call
  once the body is done or the client went away.

``ZeroClickWSGI`` decides "is this route paid" from the werkzeug ``Map`` the
app routes with, never from the raw path. PEP 3333 gives ``PATH_INFO``
already percent-decoded (gunicorn turns ``/a%2Fb`` into ``/a/b``), and the
map sees exactly the ``PATH_INFO`` the app's own ``bind_to_environ`` sees.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from http import HTTPStatus
from types import TracebackType
from typing import TYPE_CHECKING, Any

from .decision import Allow, Deny
from .gate import Charge, Gate, HeaderGetter, Identify
from .ledger import Ledger
from .meters import bind_counter, unbind_counter
from .settings import ZeroClickSettings

if TYPE_CHECKING:
    from werkzeug.routing import Map

__all__ = ["Environ", "Flow", "StartResponse", "WSGIApp", "ZeroClickWSGI", "deny_body", "header_getter", "serve"]

Environ = dict[str, Any]
ExcInfo = tuple[type[BaseException], BaseException, TracebackType] | tuple[None, None, None]
StartResponse = Callable[..., Callable[[bytes], object]]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]

_USAGE = "x-zeroclick-usage"
_CACHE_SIZE = 4096
_SPECIAL = {"content-type": "CONTENT_TYPE", "content-length": "CONTENT_LENGTH"}


def header_getter(environ: Environ) -> HeaderGetter:
    """Look request headers up in ``environ`` (``zc-agent-id`` is ``HTTP_ZC_AGENT_ID``)."""

    def get_header(name: str) -> str | None:
        key = _SPECIAL.get(name) or "HTTP_" + name.upper().replace("-", "_")
        value = environ.get(key)
        return value if isinstance(value, str) else None

    return get_header


def deny_body(deny: Deny, start_response: StartResponse) -> list[bytes]:
    """Send the gate's ``Deny`` as it is: status, headers, body."""
    headers = [*deny.headers, ("content-length", str(len(deny.body)))]
    start_response(f"{deny.status} {HTTPStatus(deny.status).phrase}", headers)
    return [deny.body]


class Flow:
    """One request's state: the ``Allow`` once granted, the status sent, whether the body failed first."""

    __slots__ = ("allow", "failed", "started", "status", "token")

    def __init__(self) -> None:
        self.allow: Allow | None = None
        self.token: object | None = None
        self.status: int | None = None
        #: the body produced a chunk: the server has sent (or is sending) the headers
        self.started = False
        #: the body raised before producing anything: the server answers 500 instead
        self.failed = False

    def grant(self, allow: Allow) -> None:
        """Run the handler under ``allow``: its counter is bound until :func:`serve` returns."""
        self.allow = allow
        self.token = bind_counter(allow.counter)

    def unbind(self) -> None:
        if self.token is not None:
            token, self.token = self.token, None
            unbind_counter(token)

    def finish(self, gate: Gate) -> None:
        # Once a usage header went out the proxy bills it, so the ledger keeps it even if
        # the body later fails; before that, any failure releases the hold (as in starlette.py).
        allow = self.allow
        if allow is not None:
            success = self.status is not None and self.status < 400 and not self.failed
            gate.finish(allow, success=success)


def _with_usage(gate: Gate, allow: Allow, headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    value = gate.usage_header(allow)
    edited = [(k, v) for k, v in headers if k.lower() != _USAGE]
    if value:
        edited.append(("X-ZeroClick-Usage", value))
    return edited


def serve(gate: Gate, app: WSGIApp, environ: Environ, start_response: StartResponse, flow: Flow) -> Iterable[bytes]:
    """Call ``app``; if ``flow`` is granted (before or during the call), report and settle at close.

    A request still ungranted when ``app`` returns is free: its body is passed on untouched.
    """

    def start(
        status: str, headers: list[tuple[str, str]], exc_info: ExcInfo | None = None
    ) -> Callable[[bytes], object]:
        allow = flow.allow
        if allow is not None:
            code = int(status[:3])
            flow.status = code
            if code < 400:
                headers = _with_usage(gate, allow, headers)
        if exc_info is None:
            return start_response(status, headers)
        return start_response(status, headers, exc_info)

    try:
        result = app(environ, start)
    except BaseException:
        flow.unbind()
        flow.failed = True
        flow.finish(gate)
        raise
    flow.unbind()
    if flow.allow is None:
        return result
    try:
        iterator = iter(result)
    except TypeError:
        flow.failed = True
        flow.finish(gate)
        raise TypeError(
            f"the WSGI application returned {type(result).__name__}, not an iterable of bytes "
            "(a view must return a response)"
        ) from None
    return _SettlingBody(gate, flow, result, iterator)


class _SettlingBody:
    """The app's body, with the counter bound around each step; settles the hold in ``close()``.

    Wrapping means a paid route's ``wsgi.file_wrapper`` body loses the server's
    sendfile path; free routes' bodies are never wrapped.
    """

    __slots__ = ("_flow", "_gate", "_inner", "_iterator")

    def __init__(self, gate: Gate, flow: Flow, inner: Iterable[bytes], iterator: Iterator[bytes]) -> None:
        self._gate = gate
        self._flow = flow
        self._inner = inner
        self._iterator = iterator

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        flow = self._flow
        assert flow.allow is not None
        token = bind_counter(flow.allow.counter)  # bound only around next(): never across a yield to the server
        try:
            chunk = next(self._iterator)
        except StopIteration:
            raise
        except BaseException:
            if not flow.started:
                flow.failed = True
            raise
        finally:
            unbind_counter(token)
        flow.started = True
        return chunk

    def close(self) -> None:
        flow = self._flow
        assert flow.allow is not None
        token = bind_counter(flow.allow.counter)  # a generator's ``finally`` may still record usage
        try:
            close = getattr(self._inner, "close", None)
            if close is not None:
                close()
        finally:
            unbind_counter(token)
            flow.finish(self._gate)


class ZeroClickWSGI:
    """WSGI middleware for werkzeug apps that route with a ``werkzeug.routing.Map``.

    ``ZeroClickWSGI(app, url_map=url_map, views={"search": search, ...}, settings=...)``:
    ``views`` maps endpoint names to the view functions, whose ``@metered`` marks
    are read; a route named in settings ``routes`` is its endpoint name. Endpoints
    that are themselves callables need no ``views`` entry.
    """

    def __init__(
        self,
        app: WSGIApp,
        *,
        url_map: Map,
        views: Mapping[Any, object] | None = None,
        settings: ZeroClickSettings | None = None,
        ledger: Ledger | None = None,
        identify: Identify | None = None,
        gate: Gate | None = None,
    ) -> None:
        try:
            from werkzeug.exceptions import HTTPException
        except ImportError:  # pragma: no cover - a werkzeug Map comes with werkzeug
            raise ImportError("zc_middleware.wsgi.ZeroClickWSGI needs Werkzeug: pip install werkzeug") from None
        self._no_route = HTTPException
        self.app = app
        self.url_map = url_map
        self.views: dict[Any, object] = dict(views or {})
        if gate is None:
            env_settings = settings if settings is not None else ZeroClickSettings()  # type: ignore[call-arg]  # from ZEROCLICK_*
            gate = Gate(env_settings, ledger=ledger, identify=identify)
        self.gate = gate
        self._cache: dict[tuple[object, object, object], Charge | None] = {}
        self._rule_count = -1
        self._by_path = False
        self.validate()
        self._cacheable()

    def _view(self, endpoint: object) -> tuple[object, str | None]:
        view = self.views.get(endpoint)
        if view is None and callable(endpoint):
            view = endpoint
        return view, endpoint if isinstance(endpoint, str) else None

    def validate(self) -> int:
        """Check every routed view's meters against settings (at construction); returns how many are paid."""
        endpoints = {rule.endpoint for rule in self.url_map.iter_rules()}
        return self.gate.validate_views(self._view(endpoint) for endpoint in endpoints)

    def _cacheable(self) -> bool:
        """Without host matching or subdomains, method and path alone decide the match."""
        rules = getattr(self.url_map, "_rules", None)  # werkzeug's own list; absent: never cache
        if not isinstance(rules, list):
            return False
        if len(rules) != self._rule_count:
            self.validate()  # rules added after construction
            self._cache.clear()
            self._rule_count = len(rules)
            self._by_path = not self.url_map.host_matching and not any(r.subdomain for r in rules)
        return self._by_path

    def _charge(self, environ: Environ) -> Charge | None:
        key = (environ.get("REQUEST_METHOD"), environ.get("SCRIPT_NAME"), environ.get("PATH_INFO"))
        cacheable = self._cacheable()
        if cacheable and key in self._cache:
            return self._cache[key]
        try:
            endpoint, _ = self.url_map.bind_to_environ(environ).match()
        except self._no_route:
            charge = None  # 404, 405, a slash redirect: the app answers, no handler of ours runs
        else:
            charge = self.gate.charge_for(*self._view(endpoint))
        if cacheable:
            if len(self._cache) >= _CACHE_SIZE:
                self._cache.clear()
            self._cache[key] = charge
        return charge

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        charge = self._charge(environ)
        if charge is None:
            return self.app(environ, start_response)
        decision = self.gate.check(header_getter(environ), charge)
        if isinstance(decision, Deny):
            return deny_body(decision, start_response)
        flow = Flow()
        flow.grant(decision)
        return serve(self.gate, self.app, environ, start_response, flow)
