"""One request's usage: the counter :func:`record_usage` adds to, and the ContextVar that finds it.

An adapter creates one :class:`Usage` per request that may be paid and binds
it (:func:`bind_counter`) around everything that runs the handler; the Gate
arms it with the route's :class:`~zc_middleware.meters.Charge` when it grants
the request. Handlers only mutate the object, because thread pools copy the
context forward but never back, so a ``.set()`` made in a worker thread would
be lost.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextvars import Token
from typing import TYPE_CHECKING

from ._text import did_you_mean
from .errors import ZcError
from .guard import counter_var
from .meters import MAX_QUANTITY, Charge, check_quantity, normalize_meter_name

if TYPE_CHECKING:
    from .decision import Allow

__all__ = ["Usage", "bind_counter", "current_counter", "record_usage", "unbind_counter"]

_UNARMED = Charge.build(())


class Usage:
    """The usage of one request, meter by meter, in the order settings declare.

    ``values`` is the route's shared ``charge.base`` until the first :meth:`add`
    copies it (``touched``): most requests record nothing, and pay for no copy.
    """

    # Class-level defaults, no ``__init__`` and no ``__slots__``: one is made for every request that
    # may be paid, and pays only for what it changes.
    #: what the route costs; empty until :meth:`arm`
    charge: Charge = _UNARMED
    values: dict[str, int] = _UNARMED.base
    #: the Gate's grant, once it allowed the request (who pays, the hold)
    allow: Allow | None = None
    #: what the usage header said, once it has gone out (``None`` before)
    reported: Mapping[str, int] | None = None
    #: settled or released: recording more is an error
    closed = False
    #: ``record_usage`` was called: ``values`` is this request's own copy
    touched = False
    #: the meters a metered function may be metered on to run in this request: the charge's, once granted
    covered: frozenset[str] = frozenset()
    #: metered functions may run unchecked under this counter (a test's opt-in, :mod:`zc_middleware.testing`)
    unchecked_ok = False

    @property
    def holds(self) -> Mapping[str, int]:
        """``{meter: units checked beforehand}``."""
        return self.charge.amounts

    def arm(self, charge: Charge) -> None:
        """Start counting ``charge``. A counter bound before routing (Django binds in ``__call__``,
        resolves in ``process_view``) is created empty; the Gate arms it when it grants the request."""
        self.charge = charge
        self.values = charge.base
        self.touched = False
        if self.allow is not None:  # what the guards of metered functions read (zc_middleware.guard)
            self.covered = charge.meters

    def add(self, meter: str, quantity: object) -> None:
        qty = check_quantity(quantity)
        if self.closed:
            raise ZcError("request_finished", "this request's usage was already settled")
        values = self.values
        name = meter if meter in values else self._resolve(meter)
        total = values[name] + qty
        if total > MAX_QUANTITY:
            raise ZcError("invalid_quantity", f"usage of {name!r} would exceed {MAX_QUANTITY}")
        if not self.touched:
            self.values = values = dict(values)
            self.touched = True
        values[name] = total

    def _resolve(self, meter: str) -> str:
        if self.charge is _UNARMED:  # bound before routing (Django), and the view turned out free
            raise _outside_request()
        name = normalize_meter_name(meter)
        if name in self.values:
            return name
        known = self.charge.known  # to tell an unknown meter from one this route does not check
        if name not in known:
            raise ZcError(
                "unknown_meter", f"meter {meter!r} is not declared in settings.meters" + did_you_mean(name, known)
            )
        raise ZcError(
            "meter_not_metered",
            f"meter {name!r} was not checked for this route; add @metered({name!r}, estimate=...)",
        )

    # -- the usage header ----------------------------------------------------------
    def report(self) -> str | None:
        """The ``X-ZeroClick-Usage`` value now, remembered as what the header said: header meters in
        declaration order, ``meter=integer`` joined by ``", "``, zeros omitted; ``None`` for nothing.
        A meter says at most its hold (the ceiling; the settle bills any excess apart, or not at all)."""
        charge = self.charge
        if not self.touched:  # nothing recorded: the route's own header, worked out once
            self.reported = charge.reported
            return charge.header
        values, holds = self.values, charge.amounts
        self.reported = reported = {m: min(values[m], holds[m]) for m in charge.reported}
        parts = [f"{m}={q}" for m, q in reported.items() if q]
        return ", ".join(parts) if parts else None

    def report_bytes(self) -> bytes:
        """:meth:`report` as ASGI header bytes (``b""`` for nothing); encoded once per route."""
        if not self.touched:
            self.reported = self.charge.reported
            return self.charge.header_bytes
        value = self.report()
        return value.encode("latin-1") if value else b""


_current = counter_var  # the one the guards of metered functions read


def current_counter() -> Usage | None:
    return _current.get()


def record_usage(meter: str, quantity: int) -> None:
    """Add ``quantity`` units of ``meter`` to the current paid request.

    Works in async handlers, sync handlers run in a thread pool, and any code
    they call. Outside a paid request it raises :class:`ZcError`
    (``outside_request``) rather than dropping the usage.
    """
    if not isinstance(meter, str):
        normalize_meter_name(meter)  # raises: a meter is named by a string (a list would be a TypeError)
    counter = _current.get()
    if counter is None:
        check_quantity(quantity)
        raise _outside_request()
    counter.add(meter, quantity)


def _outside_request() -> ZcError:
    return ZcError(
        "outside_request",
        "record_usage() was called outside a metered request; decorate the view with "
        "@metered(...) or use report_usage() for work outside requests",
    )


#: Make a counter the current request's counter; returns the token for :func:`unbind_counter`.
#: (The ContextVar's own methods: adapters call them on every paid request.)
bind_counter: Callable[[Usage | None], Token[Usage | None]] = _current.set
unbind_counter: Callable[[Token[Usage | None]], None] = _current.reset
