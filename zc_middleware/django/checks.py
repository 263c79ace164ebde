"""System checks: ``manage.py check`` reports a bad ``ZEROCLICK`` setup before any traffic.

Stable ids:

* ``zc_middleware.E001`` the ``ZEROCLICK`` setting is malformed (one error per problem, naming the key);
* ``zc_middleware.E002`` a view is metered on a meter ``ZEROCLICK["METERS"]`` does not declare;
* ``zc_middleware.W001`` the middleware is not in ``MIDDLEWARE``, so nothing is metered;
* ``zc_middleware.W002`` ``ZEROCLICK["ROUTES"]`` names a route no URL pattern has.

The checks ask the core on a throwaway ``memory://`` ledger, so ``check`` never opens the real store.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.apps import AppConfig
from django.conf import settings
from django.core import checks
from django.core.checks import CheckMessage, Tags, register

from ..errors import ConfigError
from ..gate import Gate
from .conf import build_settings, checking_gate
from .routing import Endpoint, endpoints, route_name

__all__ = ["check_middleware", "check_settings", "check_urls"]

MIDDLEWARE_PATHS = frozenset(
    {"zc_middleware.django.ZeroClickMiddleware", "zc_middleware.django.middleware.ZeroClickMiddleware"}
)


@register()
def check_settings(app_configs: Sequence[AppConfig] | None = None, **kwargs: Any) -> list[CheckMessage]:
    _, problems = build_settings(getattr(settings, "ZEROCLICK", None))
    return [
        checks.Error(
            f"ZEROCLICK setting is malformed: {problem}",
            hint="Keys are the upper-case ZeroClickSettings fields: METERS, PLANS, ROUTES, LEDGER, ...; "
            "ZEROCLICK_* environment variables give mappings as JSON.",
            id="zc_middleware.E001",
        )
        for problem in problems
    ]


@register()
def check_middleware(app_configs: Sequence[AppConfig] | None = None, **kwargs: Any) -> list[CheckMessage]:
    if MIDDLEWARE_PATHS.intersection(getattr(settings, "MIDDLEWARE", None) or ()):
        return []
    return [
        checks.Warning(
            "zc_middleware.django is installed but its middleware is not in MIDDLEWARE: no route is metered.",
            hint="Add 'zc_middleware.django.ZeroClickMiddleware' to MIDDLEWARE.",
            id="zc_middleware.W001",
        )
    ]


@register(Tags.urls)
def check_urls(app_configs: Sequence[AppConfig] | None = None, **kwargs: Any) -> list[CheckMessage]:
    config, _ = build_settings(getattr(settings, "ZEROCLICK", None))
    if config is None or not getattr(settings, "ROOT_URLCONF", None):
        return []  # E001 already says why
    try:
        found = list(endpoints())
    except Exception:
        return []  # Django's own urls checks report a URLconf that does not import
    gate = checking_gate(config)
    try:
        messages = _unknown_meters(found, gate)
    finally:
        gate.close()
    names = {e.url_name for e in found} | {e.view_name for e in found}
    messages += [
        checks.Warning(
            f"ZEROCLICK['ROUTES'] prices {route!r}, but no URL pattern is named so: that route stays free.",
            hint="Use the url name (path(..., name='...')) or 'namespace:name'.",
            id="zc_middleware.W002",
        )
        for route in config.routes
        if route not in names
    ]
    return messages


def _unknown_meters(found: list[Endpoint], gate: Gate) -> list[CheckMessage]:
    messages: list[CheckMessage] = []
    seen: set[int] = set()
    for endpoint in found:
        route = route_name(gate.settings.routes, endpoint.url_name, endpoint.view_name)
        for _, view in endpoint.views():
            if id(view) in seen:
                continue
            seen.add(id(view))
            try:
                gate.charge_for(view, route)
            except ConfigError as exc:
                messages.append(
                    checks.Error(
                        f"{endpoint.route!r}: {exc.message}",
                        hint="Declare the meter in ZEROCLICK['METERS'] or fix the @metered(...) name.",
                        obj=view,
                        id="zc_middleware.E002",
                    )
                )
    return messages
