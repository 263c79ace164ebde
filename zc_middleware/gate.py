"""The core every adapter asks: which route is paid, may this buyer run it, what to bill.

Adapters build a header getter and hand over the view the router matched; the
gate answers with an :class:`~zc_middleware.decision.Allow` or
:class:`~zc_middleware.decision.Deny`, and later settles or releases the hold.
Only the ledger call is written twice (sync and async); everything around it
is shared.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from .decision import Allow, Deny, identity_required, ledger_unavailable, payment_required
from .errors import ConfigError
from .ledger import Ledger, open_ledger
from .ledger.base import Hold, Refusal
from .meters import MeterSpec, UsageCounter, metered_specs
from .settings import ZeroClickSettings

__all__ = ["Charge", "Gate", "HeaderGetter", "Identify", "header_identity"]

log = logging.getLogger("zc_middleware")

HeaderGetter = Callable[[str], "str | None"]
"""Looks up a request header by lower-case name."""
Identify = Callable[[HeaderGetter], "str | None"]
"""Returns the buyer id of a request, or ``None`` when there is none. One replaceable step."""
Charge = tuple[MeterSpec, ...]

_BUYER = re.compile(r"^[\x21-\x7e]{1,256}$")


def header_identity(header: str) -> Identify:
    """The default identity step: the buyer id is the value of ``header`` (``zc-agent-id``)."""
    name = header.lower()

    def identify(get_header: HeaderGetter) -> str | None:
        return get_header(name)

    return identify


class Gate:
    """Plan checks, holds and usage reporting, independent of any web framework."""

    def __init__(
        self,
        settings: ZeroClickSettings,
        *,
        ledger: Ledger | None = None,
        identify: Identify | None = None,
    ) -> None:
        self.settings = settings
        self.ledger = ledger if ledger is not None else open_ledger(settings.ledger, plans=settings.plans)
        self.identify = identify or header_identity(settings.identity_header)
        self._order = {name: i for i, name in enumerate(settings.meters)}
        self._known = frozenset(settings.meters)
        self._header_meters = tuple(m for m, c in settings.meters.items() if c.channel == "header")
        self._charges: dict[Any, Charge | None] = {}
        #: True when the ledger does its I/O inline (no async methods of its own): async adapters
        #: then call check()/finish() directly instead of paying for a coroutine per request.
        self.inline = type(self.ledger).areserve is Ledger.areserve and type(self.ledger).aadjust is Ledger.aadjust
        #: what happened, for operators: allowed, denied_<status>, settled, released, ledger_errors, ...
        self.stats: Counter[str] = Counter()

    # -- which routes are paid ----------------------------------------------
    def charge_for(self, view: object, route: str | None = None) -> Charge | None:
        """The meters ``view`` (matched as ``route``) costs, or ``None`` for a free route.

        Settings ``routes`` entries override the decorator meter by meter, so an
        operator can re-price a route without a deploy.
        """
        key = (view, route)
        try:
            return self._charges[key]
        except KeyError:
            pass
        except TypeError:  # unhashable view
            return self._compute_charge(view, route)
        charge = self._charges[key] = self._compute_charge(view, route)
        return charge

    def _compute_charge(self, view: object, route: str | None) -> Charge | None:
        specs = {spec.meter: spec for spec in metered_specs(view)}
        if route is not None:
            specs.update((spec.meter, spec) for spec in self.settings.route_specs(route))
        for meter in specs:
            if meter not in self._known:
                where = getattr(view, "__qualname__", route)
                raise ConfigError(
                    "unknown_meter",
                    f"{where} is metered on {meter!r}, which settings.meters does not declare",
                )
        if not specs:
            return None
        return tuple(sorted(specs.values(), key=lambda s: self._order[s.meter]))

    def validate_views(self, views: Iterable[tuple[object, str | None]]) -> int:
        """Check every view's meters at start-up; returns how many routes are paid."""
        return sum(self.charge_for(view, route) is not None for view, route in views)

    # -- the check -------------------------------------------------------------
    def _buyer(self, get_header: HeaderGetter) -> str | Deny:
        buyer = self.identify(get_header)
        if buyer is None or buyer == "":
            return identity_required(self.settings.identity_header)
        if not _BUYER.match(buyer):
            return identity_required(self.settings.identity_header, invalid=True)
        return buyer

    def _interpret(
        self, buyer: str, charge: Charge, result: Hold | Refusal | BaseException, counter: UsageCounter | None
    ) -> Allow | Deny:
        if isinstance(result, BaseException):
            self.stats["ledger_errors"] += 1
            log.error("zc_middleware: ledger unavailable (%s: %s)", type(result).__name__, result)
            if self.settings.on_ledger_error == "allow":
                return self._allow(buyer, charge, None, counter)
            return self._deny(ledger_unavailable())
        if isinstance(result, Refusal):
            return self._deny(payment_required(result, self.settings.extend_url))
        return self._allow(buyer, charge, result, counter)

    def new_counter(self) -> UsageCounter:
        """An unarmed counter, for adapters that bind it before the route is known."""
        return UsageCounter((), self._known)

    def _allow(self, buyer: str, charge: Charge, hold: Hold | None, counter: UsageCounter | None) -> Allow:
        self.stats["allowed"] += 1
        if counter is None:
            return Allow(buyer, UsageCounter(charge, self._known), hold)
        counter.arm(charge)
        return Allow(buyer, counter, hold)

    def _deny(self, deny: Deny) -> Deny:
        self.stats[f"denied_{deny.status}"] += 1
        return deny

    def check(self, get_header: HeaderGetter, charge: Charge, *, counter: UsageCounter | None = None) -> Allow | Deny:
        """Identify the buyer and atomically check-and-hold ``charge``.

        ``counter``, when given, is armed with the charge and becomes ``Allow.counter``.
        """
        buyer = self._buyer(get_header)
        if isinstance(buyer, Deny):
            return self._deny(buyer)
        result: Hold | Refusal | BaseException
        try:
            result = self.ledger.reserve(buyer, {spec.meter: spec.hold for spec in charge})
        except Exception as exc:
            result = exc
        return self._interpret(buyer, charge, result, counter)

    async def acheck(
        self, get_header: HeaderGetter, charge: Charge, *, counter: UsageCounter | None = None
    ) -> Allow | Deny:
        buyer = self._buyer(get_header)
        if isinstance(buyer, Deny):
            return self._deny(buyer)
        result: Hold | Refusal | BaseException
        try:
            amounts = {spec.meter: spec.hold for spec in charge}
            if self.inline:  # embedded ledgers answer in microseconds: no coroutine, no thread hop
                result = self.ledger.reserve(buyer, amounts)
            else:
                result = await self.ledger.areserve(buyer, amounts)
        except Exception as exc:
            result = exc
        return self._interpret(buyer, charge, result, counter)

    # -- reporting -------------------------------------------------------------
    def usage_header(self, allow: Allow) -> str | None:
        """The ``X-ZeroClick-Usage`` value, and remember it was reported.

        Declaration order, ``meter=integer`` joined by ``", "``, zero quantities
        omitted; ``None`` when there is nothing to report.
        """
        values = allow.counter.values
        allow.counter.reported = reported = {m: values[m] for m in self._header_meters if m in values}
        parts = [f"{m}={q}" for m, q in reported.items() if q]
        return ", ".join(parts) if parts else None

    def _settlement(self, allow: Allow, success: bool) -> Mapping[str, int] | None:
        """What to debit (``{}`` releases), or ``None`` when there is nothing to do."""
        if allow.finished:
            return None
        allow.finished = True
        counter = allow.counter
        counter.closed = True
        if not success:
            self.stats["released"] += 1
            return {} if allow.hold is not None else None
        self.stats["settled"] += 1
        used = dict(counter.values)
        for meter, value in used.items():
            if value > counter.holds[meter]:
                self.stats["over_estimate"] += 1
                log.warning(
                    "zc_middleware: %s used %d of %r, more than the %d checked beforehand",
                    allow.buyer,
                    value,
                    meter,
                    counter.holds[meter],
                )
        if counter.reported is not None:
            late = {m: used[m] - q for m, q in counter.reported.items() if used[m] != q}
            if late:
                self._late_usage(allow, late)
        return used if allow.hold is not None else None

    def _late_usage(self, allow: Allow, late: Mapping[str, int]) -> None:
        self.stats["late_usage"] += 1
        log.warning(
            "zc_middleware: usage recorded after the response headers were sent is not in X-ZeroClick-Usage for %s: %s",
            allow.buyer,
            dict(late),
        )

    def finish(self, allow: Allow, *, success: bool) -> None:
        """Settle the hold at the counted usage (``success``) or release it. Never raises."""
        used = self._settlement(allow, success)
        if used is None:
            return
        assert allow.hold is not None
        try:
            self.ledger.adjust(allow.hold, used)
        except Exception:
            self.stats["ledger_errors"] += 1
            log.exception("zc_middleware: could not settle the hold of %s", allow.buyer)

    async def afinish(self, allow: Allow, *, success: bool) -> None:
        used = self._settlement(allow, success)
        if used is None:
            return
        assert allow.hold is not None
        try:
            if self.inline:
                self.ledger.adjust(allow.hold, used)
            else:
                await self.ledger.aadjust(allow.hold, used)
        except Exception:
            self.stats["ledger_errors"] += 1
            log.exception("zc_middleware: could not settle the hold of %s", allow.buyer)

    def close(self) -> None:
        self.ledger.close()
