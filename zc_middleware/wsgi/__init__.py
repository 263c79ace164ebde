"""WSGI middleware for werkzeug apps: ``ZeroClickWSGI(app, url_map=..., views=..., settings=...)``.

It decides "is this route paid" from the werkzeug ``Map`` the app routes
with, never from the raw path. PEP 3333 gives ``PATH_INFO`` already
percent-decoded (gunicorn turns ``/a%2Fb`` into ``/a/b``), and the map sees
exactly the ``PATH_INFO`` the app's own ``bind_to_environ`` sees. A paid
request runs as an :class:`~zc_middleware.wsgi.exchange.Exchange`, which the
Flask extension uses too.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from .._cache import remember
from ..decision import Deny
from ..environ import Environ, access, buyer_key, buyer_of, header_getter, path_key, verify_signed
from ..errors import ConfigError
from ..gate import Charge, Gate
from ..identity import Identify
from ..ledger import Ledger
from ..settings import ZeroClickSettings
from ..usage import Usage
from .exchange import Exchange, StartResponse, WSGIApp, deny_body, free_start_response

if TYPE_CHECKING:
    from werkzeug.routing import Map, Rule

__all__ = ["Exchange", "ZeroClickWSGI", "routes_by_path"]


def routes_by_path(url_map: Map, rules: list[Rule]) -> bool:
    """Without host matching, subdomains or websocket rules, method and path alone pick the rule."""
    return not url_map.host_matching and not any(r.subdomain or r.websocket for r in rules)


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
        self._access_path = gate.access_path
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
            remember(self._cache, key, charge)
        return charge

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == self._access_path:  # ZeroClick's entitlement writes: never the app's
            return deny_body(access(self.gate, environ), start_response)
        charge = self._charge(environ)
        if charge is None:
            return self.app(environ, free_start_response(start_response))
        gate = self.gate
        get_header = header_getter(environ)
        if gate.signatures is not None and (deny := verify_signed(gate, environ, get_header)) is not None:
            return deny_body(deny, start_response)
        usage = Usage()
        decision = gate.check_buyer(buyer_of(gate, environ, self._buyer_key), get_header, charge, usage)
        if decision.__class__ is Deny:
            return deny_body(decision, start_response)
        exchange = Exchange(gate, start_response)
        exchange.grant(usage)
        return exchange.serve(self.app, environ)
