"""Which routes are paid and what each costs: ``@metered`` marks, then settings ``routes`` on top."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from ._cache import remember
from ._text import did_you_mean
from .errors import ConfigError
from .meters import Charge, metered_specs
from .settings import ZeroClickSettings

__all__ = ["Pricing", "View"]

log = logging.getLogger("zc_middleware")

View = tuple[object, "str | None"]
"""A view as a router matched it, and the route name settings ``routes`` may price it by."""


class Pricing:
    """What each view costs under one settings object, worked out once per view."""

    def __init__(self, settings: ZeroClickSettings) -> None:
        self.settings = settings
        #: every meter settings declare
        self.known = frozenset(settings.meters)
        self._order = {name: i for i, name in enumerate(settings.meters)}
        self._header_meters = frozenset(m for m, c in settings.meters.items() if c.channel == "header")
        self._batch_meters = settings.batch_meters
        self._charges: dict[View, Charge | None] = {}
        #: what :meth:`log_view_problems` has logged already
        self._logged: set[str] = set()

    def charge_for(self, view: object, route: str | None = None) -> Charge | None:
        """The meters ``view`` (matched as ``route``) costs, or ``None`` for a free route.

        Settings ``routes`` entries override the decorator meter by meter, so an
        operator can re-price a route without a deploy.
        """
        key = (view, route)
        try:
            return self._charges[key]
        except KeyError:
            return remember(self._charges, key, self._compute(view, route))
        except TypeError:  # unhashable view
            return self._compute(view, route)

    def _compute(self, view: object, route: str | None) -> Charge | None:
        specs = {spec.meter: spec for spec in metered_specs(view)}
        if route is not None:
            specs.update((spec.meter, spec) for spec in self.settings.route_specs(route))
        for meter in specs:
            if meter not in self.known:
                where = getattr(view, "__qualname__", route)
                raise ConfigError(
                    "unknown_meter",
                    f"{where} is metered on {meter!r}, which settings.meters does not declare"
                    + did_you_mean(meter, self.known),
                )
        if not specs:
            return None
        ordered = sorted(specs.values(), key=lambda s: self._order[s.meter])
        return Charge.build(ordered, self._header_meters, self._batch_meters, self.known)

    def validate_views(self, views: Iterable[View]) -> int:
        """Check every view's meters at start-up; returns how many routes are paid."""
        return sum(self.charge_for(view, route) is not None for view, route in views)

    def warn_unrouted(self, names: Iterable[str | None]) -> None:
        """Log each ``settings.routes`` entry that names none of ``names`` (the app's route names):
        it prices nothing, and the route it meant stays free."""
        known = {name for name in names if name is not None}
        for route in self.settings.routes:
            if route not in known:
                log.warning(
                    "zc_middleware: settings.routes prices %r, but no route is named so (yet)%s",
                    route,
                    did_you_mean(route, known),
                )

    def log_view_problems(self, views: Iterable[View]) -> int:
        """Check views added after start-up without raising: each one metered on a meter settings do
        not declare is logged, once. Pricing it raises the same :class:`ConfigError`, so its own
        requests fail and never run unbilled; every other view is served. Returns how many are bad."""
        bad = 0
        for view, route in views:
            try:
                self.charge_for(view, route)
            except ConfigError as exc:
                bad += 1
                if exc.message not in self._logged:
                    self._logged.add(exc.message)
                    log.error("zc_middleware: %s; its requests fail until the app is fixed", exc.message)
        return bad
