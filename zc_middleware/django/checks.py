"""System checks: ``manage.py check`` reports a bad ``ZEROCLICK`` setup before any traffic.

Stable ids:

* ``zc_middleware.E001`` the ``ZEROCLICK`` setting is malformed (one error per problem, naming the key as
  written: ``ZEROCLICK.PLANS.starter.includes: unknown meter ...``);
* ``zc_middleware.E002`` a view is metered on a meter ``ZEROCLICK["METERS"]`` does not declare;
* ``zc_middleware.E003`` the middleware is listed twice in ``MIDDLEWARE`` (every paid request would be
  checked and debited twice);
* ``zc_middleware.E004`` Django's cache middleware (``UpdateCacheMiddleware``, ``CacheMiddleware``) is
  listed after it, so it would store paid responses before they are made private and replay them
  without the plan check;
* ``zc_middleware.W001`` the middleware is not in ``MIDDLEWARE``, so nothing is metered;
* ``zc_middleware.W003`` ``ConditionalGetMiddleware`` is listed before it: a billed 200 it turns into
  a ``304`` loses the usage header, so the ledger is debited for usage ZeroClick never hears of;
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
from django.utils.module_loading import import_string

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
    # one error per problem, each naming its key; the valid keys are listed once, in the message
    # about an unknown key, never in a hint Django would repeat under every error
    return [checks.Error(problem, id="zc_middleware.E001") for problem in problems]


@register()
def check_middleware(app_configs: Sequence[AppConfig] | None = None, **kwargs: Any) -> list[CheckMessage]:
    from django.middleware.cache import UpdateCacheMiddleware
    from django.middleware.http import ConditionalGetMiddleware

    middleware = list(getattr(settings, "MIDDLEWARE", None) or ())
    ours = [i for i, path in enumerate(middleware) if path in MIDDLEWARE_PATHS]
    if not ours:
        return [
            checks.Warning(
                "zc_middleware.django is installed but its middleware is not in MIDDLEWARE: no route is metered.",
                hint="Add 'zc_middleware.django.ZeroClickMiddleware' to MIDDLEWARE.",
                id="zc_middleware.W001",
            )
        ]
    messages: list[CheckMessage] = []
    if len(ours) > 1:
        messages.append(
            checks.Error(
                f"ZeroClickMiddleware is listed {len(ours)} times in MIDDLEWARE: every paid request would be "
                "checked and debited that many times.",
                hint="Keep one entry (settings split over several files may each add it).",
                id="zc_middleware.E003",
            )
        )
    messages += [
        checks.Error(
            f"{path} is listed after ZeroClickMiddleware in MIDDLEWARE: it would store paid responses before "
            "they are made private, and replay them to anyone without the plan check.",
            hint="List Django's cache middleware before ZeroClickMiddleware (UpdateCacheMiddleware first, "
            "as Django's documentation asks).",
            id="zc_middleware.E004",
        )
        for path in middleware[ours[0] + 1 :]
        if _is(path, UpdateCacheMiddleware)  # CacheMiddleware is one
    ]
    messages += [
        checks.Warning(
            f"{path} is listed before ZeroClickMiddleware in MIDDLEWARE: a paid 200 it turns into a 304 "
            "loses the usage header, so the buyer's plan is debited for usage ZeroClick never bills.",
            hint="List ConditionalGetMiddleware after ZeroClickMiddleware.",
            id="zc_middleware.W003",
        )
        for path in middleware[: ours[0]]
        if _is(path, ConditionalGetMiddleware)
    ]
    return messages


def _is(path: str, base: type) -> bool:
    try:
        cls = import_string(path)
    except ImportError:
        return False  # Django reports a middleware that does not import when it loads them
    return isinstance(cls, type) and issubclass(cls, base)


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
                        hint="Meter it either on the whole view (dispatch) or on its handler, not both."
                        if exc.code == "duplicate_metered"
                        else "Declare the meter in ZEROCLICK['METERS'] or fix the @metered(...) name.",
                        obj=view,
                        id="zc_middleware.E002",
                    )
                )
    return messages
