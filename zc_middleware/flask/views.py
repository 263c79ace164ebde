"""Which function prices a Flask request: the view, or for a class-based view its handler's marks
stacked on the view's own; and the list of metered rules."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from ..meters import handler_marks

if TYPE_CHECKING:
    from flask import Flask

    from ..gate import Charge, Gate

__all__ = ["handler_for", "route_rows", "views_of"]

_METHODS = ("get", "head", "post", "put", "patch", "delete", "options")


def handler_for(view: object, method: str) -> object:
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


def views_of(view_functions: Mapping[str, Any]) -> Iterator[tuple[object, str | None]]:
    for endpoint, view in view_functions.items():
        yield view, endpoint
        cls = getattr(view, "view_class", None)
        for method in _METHODS if cls is not None else ():
            yield handler_for(view, method.upper()), endpoint


def route_rows(app: Flask, gate: Gate) -> list[tuple[str, str, str, str]]:
    """``(route, methods, endpoint, meters)`` for every metered rule of ``app``, priced by ``gate``."""
    rows: list[tuple[str, str, str, str]] = []
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: (r.rule, r.endpoint)):
        view = app.view_functions.get(rule.endpoint)
        by_charge: dict[Charge, list[str]] = {}
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            charge = gate.charge_for(handler_for(view, method), rule.endpoint)
            if charge is not None:
                by_charge.setdefault(charge, []).append(method)
        for charge, methods in by_charge.items():
            rows.append((rule.rule, ",".join(methods), rule.endpoint, ", ".join(spec.describe() for spec in charge)))
    return rows
