"""Pure WSGI: hold, report and settle a paid request around any WSGI app; ``ZeroClickWSGI`` for werkzeug apps.

The shared core (:class:`Exchange`, :func:`deny_body`) knows no framework;
the Flask extension uses it too. A WSGI body may be iterated after
the app returned, and on another thread (gunicorn's gthread worker iterates
on the thread that called the app, other servers do not promise it), so:

* the usage header is written in ``start_response``, the moment the status
  and headers are handed to the server (the WSGI twin of ASGI's
  ``http.response.start``), exactly once; any the app set is dropped, on
  every status, and the response's ``Cache-Control`` is made ``private``
  (no shared cache may replay a paid response without the plan check);
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
from contextvars import Token
from http import HTTPStatus
from types import GeneratorType, TracebackType
from typing import TYPE_CHECKING, Any

from .decision import Allow, Deny, private_cache_control
from .errors import ConfigError
from .gate import Charge, Gate, HeaderGetter, Identify
from .ledger import Ledger
from .meters import UsageCounter, bind_counter, unbind_counter
from .settings import ZeroClickSettings

if TYPE_CHECKING:
    from werkzeug.routing import Map, Rule

__all__ = [
    "Environ",
    "Exchange",
    "StartResponse",
    "WSGIApp",
    "WSGIBody",
    "ZeroClickWSGI",
    "buyer_key",
    "buyer_of",
    "deny_body",
    "environ_key",
    "header_getter",
    "paid_headers",
    "path_key",
    "refused_headers",
    "routes_by_path",
]

Environ = dict[str, Any]
ExcInfo = tuple[type[BaseException], BaseException, TracebackType] | tuple[None, None, None]
StartResponse = Callable[..., Callable[[bytes], object]]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]

_USAGE = "x-zeroclick-usage"
#: headers of a paid response that :func:`paid_headers` drops or rewrites (lower-case names): ours,
#: ``Cache-Control``, and those only CDNs and caching proxies read, which would override it there
REWRITTEN = frozenset(
    {
        _USAGE,
        "cache-control",
        "cdn-cache-control",  # RFC 9213, and its vendors' own
        "cloudflare-cdn-cache-control",
        "netlify-cdn-cache-control",
        "vercel-cdn-cache-control",
        "surrogate-control",  # Fastly, Varnish
        "edge-control",  # Akamai
        "x-accel-expires",  # nginx proxy_cache
    }
)
_CACHE_SIZE = 4096
_SPECIAL = {"content-type": "CONTENT_TYPE", "content-length": "CONTENT_LENGTH"}


def environ_key(name: str) -> str:
    """Where PEP 3333 (and Django's ``request.META``) keeps request header ``name``: ``zc-agent-id``
    is ``HTTP_ZC_AGENT_ID``."""
    name = name.lower()
    return _SPECIAL.get(name) or "HTTP_" + name.upper().replace("-", "_")


def header_getter(environ: Environ) -> HeaderGetter:
    """Look request headers up in ``environ`` by lower-case name."""

    def get_header(name: str) -> str | None:
        value = environ.get(environ_key(name))
        return value if isinstance(value, str) else None

    return get_header


def buyer_key(gate: Gate) -> str | None:
    """The ``environ`` key of the Gate's identity header; ``None`` when a custom ``identify`` decides."""
    return environ_key(gate.identity_header) if gate.identity_header else None


def buyer_of(gate: Gate, environ: Environ, key: str | None) -> str | None:
    """The buyer id of a request: ``environ[key]`` for the default identity, else ``gate.identify``.
    (The Gate refuses a value that is not a valid id, a non-string included.)"""
    return environ.get(key) if key is not None else gate.identify(header_getter(environ))


def path_key(environ: Environ) -> tuple[object, object, object]:
    """What a werkzeug map routes by when :func:`routes_by_path`: method, script name and path."""
    return environ.get("REQUEST_METHOD"), environ.get("SCRIPT_NAME"), environ.get("PATH_INFO")


def routes_by_path(url_map: Map, rules: list[Rule]) -> bool:
    """Without host matching, subdomains or websocket rules, method and path alone pick the rule."""
    return not url_map.host_matching and not any(r.subdomain or r.websocket for r in rules)


def paid_headers(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """A paid route's response headers as they go out, before the usage header is added: the app's
    own usage header dropped, whatever its case or the status (only the Gate reports usage there,
    and only on a success), ``Cache-Control`` made private (:func:`private_cache_control`), and the
    headers only CDNs and caching proxies read (:data:`REWRITTEN`) dropped."""
    for key, _ in headers:
        if key.lower() in REWRITTEN:
            break
    else:  # the common case: none of them is there
        return [*headers, ("Cache-Control", "private")]
    out = []
    cache = None
    for item in headers:
        name = item[0].lower()
        if name == "cache-control":
            cache = item[1] if cache is None else f"{cache}, {item[1]}"
        elif name not in REWRITTEN:
            out.append(item)
    out.append(("Cache-Control", private_cache_control(cache)))
    return out


def refused_headers(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The Gate's answer (``402``, ``401``, ``503``) as it goes out after hooks or middleware inside
    ours had it: no usage header, and ``Cache-Control: no-store`` whatever they set (a cached ``402``
    would keep refusing a buyer who has paid since)."""
    return [*(item for item in headers if item[0].lower() not in REWRITTEN), ("Cache-Control", "no-store")]


def deny_body(deny: Deny, start_response: StartResponse) -> list[bytes]:
    """Send the gate's ``Deny`` as it is: status, headers, body."""
    headers = [*deny.headers, ("content-length", str(len(deny.body)))]
    start_response(f"{deny.status} {HTTPStatus(deny.status).phrase}", headers)
    return [deny.body]


class WSGIBody(Allow):
    """A paid request's usage counter that is also its WSGI body's runner: iterating it iterates
    ``_iterator`` with the counter bound around each ``next()`` (never across a yield to the
    server), and notes whether the server has started sending and whether the body failed first.
    :class:`Exchange` is one; so is the Django middleware's, for streamed responses."""

    #: the body produced a non-empty chunk: the server has sent (or is sending) the headers
    started = False
    #: the body raised before producing anything: the server answers 500 instead
    failed = False
    _iterator: Iterator[bytes]

    def run(self, iterator: Iterator[bytes]) -> Iterator[bytes]:
        """``iterator``'s chunks, run as this body."""
        self._iterator = iterator
        return iter(self)

    def __iter__(self) -> Iterator[bytes]:
        iterator = self._iterator
        while True:
            token = bind_counter(self)  # bound only around next(): never across a yield to the server
            try:
                chunk = next(iterator)
            except StopIteration:
                return
            except BaseException:
                if not self.started:
                    self.failed = True
                raise
            finally:
                unbind_counter(token)
            if chunk:
                self.started = True  # servers send the headers with the first non-empty chunk
            yield chunk


class Exchange(WSGIBody):
    """One request: the grant-to-be (and so the usage counter), ``start_response`` with the usage
    header added, and, once granted, the response body that settles the hold when it is closed.

    The Flask extension creates one for every request whose method and path it has not yet seen
    routed to a free view (it learns whether the route is paid only in ``before_request``).
    ``ZeroClickWSGI`` routes first and creates one for paid requests only.
    """

    #: the Gate allowed the request: report and settle
    granted = False
    #: the Gate refused the request: its answer leaves without any usage header
    refused = False
    #: the counter binding made by :meth:`grant`, undone when the app returns
    token: Token[UsageCounter | None] | None = None
    #: the status handed to the server
    status: int | None = None
    _inner: Iterable[bytes] = ()

    def __init__(self, gate: Gate, start_response: StartResponse) -> None:
        # One frame, no super().__init__(): every other field starts at its class default.
        self.known = gate.known
        self.gate = gate
        self._start_response = start_response

    def grant(self) -> None:
        """The Gate allowed it: the handler runs with this counter bound until the app returns."""
        self.granted = True
        self.token = bind_counter(self)

    def start_response(
        self, status: str, headers: list[tuple[str, str]], exc_info: ExcInfo | None = None
    ) -> Callable[[bytes], object]:
        granted = self.granted
        if granted:
            code = int(status[:3])
            headers = paid_headers(headers)
            if code < 400:
                value = self.gate.usage_header(self)
                if value:
                    headers.append(("X-ZeroClick-Usage", value))
        elif self.refused:  # a hook or middleware inside ours may have changed the Gate's answer
            headers = refused_headers(headers)
        # A late error start_response (exc_info, headers already out) raises here: the status that
        # settles the hold stays the one that really went out, as in starlette.py.
        if exc_info is None:
            write = self._start_response(status, headers)
        else:
            write = self._start_response(status, headers, exc_info)
        if granted:
            self.status = code
        return write

    def serve(self, app: WSGIApp, environ: Environ) -> Iterable[bytes]:
        """Call ``app``. Still ungranted when it returns: a free request, its body passed on untouched;
        granted (before or during the call): this exchange is the body, and settles at close."""
        try:
            result = app(environ, self.start_response)
        except BaseException:
            if self.granted:
                self._unbind()
                self.failed = True
                self._finish()
            raise
        if not self.granted:
            if result.__class__ is not GeneratorType:
                return result
            # A generator: middleware wrapping the app that calls it only once its body is iterated
            # (werkzeug's DebuggedApplication). The request may be granted then: run it as our body.
            self._iterator = self._inner = result
            return self
        self._unbind()
        try:
            self._iterator = iter(result)
        except TypeError:
            self.failed = True
            self._finish()
            raise TypeError(
                f"the WSGI application returned {type(result).__name__}, not an iterable of bytes "
                "(a view must return a response)"
            ) from None
        self._inner = result
        return self

    def _unbind(self) -> None:
        token = self.token
        if token is not None:
            self.token = None
            unbind_counter(token)

    def _finish(self) -> None:
        # Once a usage header went out the proxy bills it, so the ledger keeps it even if
        # the body later fails; before that, any failure releases the hold (as in starlette.py).
        status = self.status
        self.gate.finish(self, success=status is not None and status < 400 and not self.failed)

    # -- the body: iterated as a WSGIBody, the hold settled in close() ------------------------------
    # Being the body means a paid route's ``wsgi.file_wrapper`` body loses the server's sendfile
    # path; free routes' bodies are never wrapped.
    def close(self) -> None:
        close = getattr(self._inner, "close", None)
        if close is None:
            self._finish()
            return
        token = bind_counter(self)  # a generator's ``finally`` may still record usage
        try:
            close()
        finally:
            unbind_counter(token)
            if self.granted:  # not, for a lazy body (see serve) whose request turned out free
                self._finish()


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
        server_name: str | None = None,
    ) -> None:
        try:
            from werkzeug.exceptions import HTTPException
        except ImportError:  # pragma: no cover - a werkzeug Map comes with werkzeug
            raise ImportError("zc_middleware.wsgi.ZeroClickWSGI needs Werkzeug: pip install werkzeug") from None
        self._no_route = HTTPException
        self.app = app
        self.url_map = url_map
        #: what the app binds its map with (``bind_to_environ(environ, server_name=...)``): subdomain
        #: rules match only with it
        self.server_name = server_name
        if server_name is None and any(rule.subdomain for rule in url_map.iter_rules()):
            raise ConfigError(
                "server_name_required",
                "the URL map has subdomain rules, which match only when bound with the server's name: pass "
                "ZeroClickWSGI(..., server_name=...) as the app passes it to bind_to_environ",
            )
        self.views: dict[Any, object] = dict(views or {})
        if gate is None:
            env_settings = settings if settings is not None else ZeroClickSettings()  # type: ignore[call-arg]  # from ZEROCLICK_*
            gate = Gate(env_settings, ledger=ledger, identify=identify)
        self.gate = gate
        self._buyer_key = buyer_key(gate)
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

    def _views(self) -> Iterator[tuple[object, str | None]]:
        for endpoint in dict.fromkeys(rule.endpoint for rule in self.url_map.iter_rules()):  # in rule order
            yield self._view(endpoint)

    def validate(self) -> int:
        """Check every routed view's meters against settings (at construction); returns how many are paid."""
        views = list(self._views())
        self.gate.warn_unrouted(name for _, name in views)
        return self.gate.validate_views(views)

    def _cacheable(self) -> bool:
        """Whether :meth:`_charge` may cache by :func:`path_key` (see :func:`routes_by_path`)."""
        rules = getattr(self.url_map, "_rules", None)  # werkzeug's own list; absent: never cache
        if not isinstance(rules, list):
            return False
        if len(rules) != self._rule_count:
            self._cache.clear()
            self._rule_count = len(rules)
            self._by_path = routes_by_path(self.url_map, rules)
            # rules added after construction: checked without raising (see Gate.log_view_problems)
            self.gate.log_view_problems(self._views())
        return self._by_path

    def _charge(self, environ: Environ) -> Charge | None:
        key = path_key(environ)
        cacheable = self._cacheable()
        if cacheable and key in self._cache:
            return self._cache[key]
        try:
            endpoint, _ = self.url_map.bind_to_environ(environ, server_name=self.server_name).match()
        except self._no_route:
            # 404, 405, a slash redirect: the app answers, no handler of ours runs. Not remembered: a
            # converter may accept the same path later (a page published since).
            return None
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
        gate = self.gate
        exchange = Exchange(gate, start_response)
        buyer = buyer_of(gate, environ, self._buyer_key)
        decision = gate.check_buyer(buyer, header_getter(environ), charge, exchange)
        if decision is not exchange:  # anything but the exchange itself, armed, is a refusal
            return deny_body(decision, start_response)  # type: ignore[arg-type]
        exchange.grant()
        return exchange.serve(self.app, environ)
