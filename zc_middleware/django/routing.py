"""What Django's own resolver matched, turned into the ``(view, route name)`` the Gate prices.

Never the raw path: Django has already resolved the URL when ``process_view``
runs, so ``/a%2Fb`` is priced exactly as it is routed.

Where ``@metered`` ends up, as seen on Django 4.2-5.2:

* function views (sync or async): on the function, or reachable through
  ``__wrapped__`` / the ``__dict__`` that ``functools.wraps`` copies;
* ``method_decorator(metered(...), name="dispatch")``: ``as_view()`` copies
  ``dispatch.__dict__`` onto the view function, so it is on ``view_func``;
* ``method_decorator(metered(...), name="get")``: on ``view_class.get`` only,
  so the handler for ``request.method`` is looked up the way ``View.dispatch``
  does (``head`` falls back to ``get``), and its marks are stacked on
  ``dispatch``'s (:func:`~zc_middleware.meters.handler_marks`);
* Django's own ``View.options`` is free, unless ``dispatch`` is metered: a
  metered ``dispatch`` runs (checked) for every method.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

from django.http import HttpRequest
from django.urls import URLPattern, URLResolver, get_resolver
from django.views import View

from .._cache import remember
from ..environ import buyer_key
from ..gate import Charge, Gate
from ..meters import handler_marks, metered_specs

__all__ = ["Endpoint", "Routing", "endpoints", "route_name", "view_for"]


def view_for(view_func: object, method: str | None) -> object:
    """The callable whose ``@metered`` marks price a request to ``view_func`` with ``method``."""
    cls = getattr(view_func, "view_class", None)
    if cls is None or not method:
        return view_func
    verb = method.lower()
    if verb not in getattr(cls, "http_method_names", ()):
        return view_func  # View.dispatch answers 405 without calling a handler
    handler = getattr(cls, verb, None)
    if handler is None and verb == "head":
        handler = getattr(cls, "get", None)
    if handler is View.options and not metered_specs(view_func):
        return handler  # Django's own answer (an Allow header): free, as Flask's automatic OPTIONS is
    # ...unless ``dispatch`` is metered: it runs for every method, and a metered function runs checked
    return handler_marks(view_func, handler) if handler is not None else view_func


def route_name(routes: Mapping[str, object], url_name: str | None, view_name: str | None) -> str | None:
    """The name settings ``ROUTES`` know this match by: ``namespace:name`` if listed, else ``name``."""
    if view_name and view_name in routes:
        return view_name
    return url_name


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One URL pattern: its full route text, names, and the view Django calls."""

    route: str
    url_name: str | None
    view_name: str | None
    callback: object

    def views(self) -> Iterator[tuple[str, object]]:
        """``(method, view)`` pairs; ``"ANY"`` for a function view, which takes every method."""
        cls = getattr(self.callback, "view_class", None)
        if cls is None:
            yield "ANY", self.callback
            return
        for verb in cls.http_method_names:
            if hasattr(cls, verb):  # options too: one the view defines runs through a metered dispatch
                yield verb.upper(), view_for(self.callback, verb)


def endpoints(urlconf: str | None = None) -> Iterator[Endpoint]:
    """Every URL pattern of ``urlconf`` (default ``ROOT_URLCONF``), includes flattened."""
    yield from _walk(get_resolver(urlconf).url_patterns, "", None)


def _walk(patterns: Iterable[object], prefix: str, namespace: str | None) -> Iterator[Endpoint]:
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            ns = pattern.namespace
            inner = f"{namespace}:{ns}" if namespace and ns else (ns or namespace)
            yield from _walk(pattern.url_patterns, prefix + str(pattern.pattern), inner)
        elif isinstance(pattern, URLPattern):
            name = pattern.name
            view_name = f"{namespace}:{name}" if namespace and name else name
            yield Endpoint(prefix + str(pattern.pattern), name, view_name, pattern.callback)


RouteKey = tuple[object, str | None, str | None, str | None]


class Routing:
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
        charge = remember(self.charges, key, self._price(view_func, method, url_name, view_name))
        if not self.gate.settings.routes and getattr(view_func, "view_class", None) is None:
            remember(self.by_view, view_func, charge)  # neither the method nor the URL name changes its price
        return charge

    def _price(
        self, view_func: object, method: str | None, url_name: str | None, view_name: str | None
    ) -> Charge | None:
        route = route_name(self.gate.settings.routes, url_name, view_name)
        return self.gate.charge_for(view_for(view_func, method), route)
