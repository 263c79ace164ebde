"""Meter names, the ``@metered`` marker and the per-request usage counter.

``@metered`` only marks a view: it returns the very function it was given, so
signatures (FastAPI dependency injection, OpenAPI), ``functools.wraps`` chains
and decorator order are untouched. Adapters read the mark after the
framework's own router has matched the request.

One ``ContextVar`` holds the counter of the current request. The adapter sets it
once and resets it in ``finally``; handlers only mutate the object, because
thread pools copy the context forward but never back.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Mapping
from contextvars import ContextVar, Token
from dataclasses import dataclass
from typing import TypeVar

from .errors import ConfigError, ZcError

__all__ = [
    "MAX_QUANTITY",
    "Charge",
    "MeterSpec",
    "UsageCounter",
    "current_counter",
    "handler_marks",
    "metered",
    "metered_specs",
    "normalize_meter_name",
    "record_usage",
]

F = TypeVar("F", bound=Callable[..., object])

#: Larger quantities are refused as a bug rather than billed (they also stay exact in JSON doubles).
MAX_QUANTITY = 2**53 - 1
_ATTR = "__zeroclick_meters__"
_LABEL = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
_SEPARATORS = re.compile(r"[\s_]+")


def normalize_meter_name(name: object) -> str:
    """Return the kebab-case label for ``name``.

    ``"Compute Seconds"`` and ``"compute_seconds"`` both become
    ``"compute-seconds"``; anything that is not letters, digits and single
    separators is refused with a message saying why.
    """
    if not isinstance(name, str):
        raise ConfigError("invalid_meter", f"meter name must be a string, got {type(name).__name__}")
    label = _SEPARATORS.sub("-", name.strip()).lower()
    if not _LABEL.match(label):
        raise ConfigError(
            "invalid_meter",
            f"meter name {name!r} is not a kebab-case label (letters, digits and single "
            "hyphens, e.g. 'api-requests'); spaces and underscores are turned into hyphens",
        )
    return label


def check_quantity(quantity: object, *, what: str = "quantity") -> int:
    """Refuse bools, floats (NaN included), negatives and absurd values with a clear error."""
    if isinstance(quantity, bool) or not isinstance(quantity, int):
        raise ZcError(
            "invalid_quantity",
            f"{what} must be a non-negative int, got {quantity!r} ({type(quantity).__name__}); "
            "round explicitly, e.g. math.ceil(seconds)",
        )
    if quantity < 0 or quantity > MAX_QUANTITY:
        raise ZcError("invalid_quantity", f"{what} must be between 0 and {MAX_QUANTITY}, got {quantity}")
    return quantity


@dataclass(frozen=True, slots=True)
class MeterSpec:
    """What one meter costs on one route.

    ``hold`` units must be covered before the handler runs; ``base`` units are
    billed on success even if the handler records nothing (``quantity``), and
    whatever the handler records with :func:`record_usage` is added to it.
    """

    meter: str
    hold: int
    base: int

    @classmethod
    def make(cls, meter: str, quantity: int | None = None, estimate: int | None = None) -> MeterSpec:
        name = normalize_meter_name(meter)
        if estimate is not None:
            if quantity is not None:
                raise ConfigError(
                    "invalid_metered",
                    f"meter {name!r}: give either a fixed quantity or an estimate, not both",
                )
            est = check_quantity(estimate, what=f"estimate for {name!r}")
            if est == 0:
                raise ConfigError("invalid_metered", f"estimate for {name!r} must be at least 1")
            return cls(name, est, 0)
        qty = check_quantity(1 if quantity is None else quantity, what=f"quantity for {name!r}")
        if qty == 0:
            raise ConfigError("invalid_metered", f"quantity for {name!r} must be at least 1")
        return cls(name, qty, qty)

    def describe(self) -> str:
        """For people: ``api-requests=1``, or ``compute-seconds (estimate 30)``."""
        return f"{self.meter}={self.base}" if self.base == self.hold else f"{self.meter} (estimate {self.hold})"


def metered(meter: str, quantity: int | None = None, *, estimate: int | None = None) -> Callable[[F], F]:
    """Mark a view as paid on ``meter``.

    ``@metered("api-requests")`` holds and bills 1 unit; ``quantity=n`` holds
    and bills ``n``. ``@metered("compute-seconds", estimate=30)`` requires 30
    units to be covered and bills what the handler records. Stack the
    decorator for several meters; the same meter twice is an error.
    """
    spec = MeterSpec.make(meter, quantity, estimate)

    def mark(view: F) -> F:
        target = getattr(view, "__func__", view)  # bound methods share their function's mark
        existing: tuple[MeterSpec, ...] = getattr(target, _ATTR, ())
        if any(s.meter == spec.meter for s in existing):
            cls = getattr(target, "view_class", None)  # Django's and Flask's as_view() functions
            name = f"{cls.__qualname__}.as_view()" if cls is not None else getattr(target, "__qualname__", target)
            raise ConfigError("duplicate_metered", f"{name!s} is already metered on {spec.meter!r}")
        setattr(target, _ATTR, (*existing, spec))
        return view

    return mark


def metered_specs(view: object) -> tuple[MeterSpec, ...]:
    """The specs ``@metered`` put on ``view`` (following ``__wrapped__`` chains and ``functools.partial``)."""
    seen = 0
    while view is not None and seen < 16:
        specs = getattr(view, _ATTR, None)
        if specs is not None:
            return tuple(specs)
        view = view.func if isinstance(view, functools.partial) else getattr(view, "__wrapped__", None)
        seen += 1
    return ()


class _Stacked:
    """The marks of a class-based view and of its handler for one verb, stacked (see :func:`handler_marks`).
    The same meter on both raises when the marks are read, that is when the Gate prices it."""

    def __init__(self, view: object, handler: object) -> None:
        self.__qualname__ = getattr(handler, "__qualname__", repr(handler))
        outer, inner = metered_specs(view), metered_specs(handler)
        self._specs = (*outer, *inner)
        self._problem: ConfigError | None = None
        twice = [spec.meter for spec in inner if any(s.meter == spec.meter for s in outer)]
        if twice:
            self._problem = ConfigError(
                "duplicate_metered",
                f"{self.__qualname__} is metered on {twice[0]!r}, and so is the whole view "
                f"({getattr(view, '__qualname__', view)!s}): meter it in one place",
            )

    @property
    def __zeroclick_meters__(self) -> tuple[MeterSpec, ...]:  # what metered_specs reads (_ATTR)
        if self._problem is not None:
            raise self._problem
        return self._specs


_stacked: dict[tuple[object, object], _Stacked] = {}


def handler_marks(view: object, handler: object) -> object:
    """What prices a request that a class-based ``view`` hands to ``handler``, its method for the
    request's verb: the marks of both, as stacked decorators would apply. ``view`` is what the
    router calls (Django's ``as_view()`` function, which carries ``dispatch``'s marks; Flask's, which
    its ``decorators`` mark; a Starlette ``HTTPEndpoint`` class). The same meter on both is a
    :class:`ConfigError` when it is priced, like decorating a view twice."""
    if not metered_specs(view):
        return handler
    if not metered_specs(handler):
        return view
    key = (view, handler)
    stacked = _stacked.get(key)
    if stacked is None:
        if len(_stacked) >= 4096:  # views are few; bounded all the same, like every cache here
            _stacked.clear()
        stacked = _stacked[key] = _Stacked(view, handler)
    return stacked


class Charge(tuple[MeterSpec, ...]):
    """What one route costs: its :class:`MeterSpec` s in declaration order (a tuple), plus
    what every request of the route would otherwise recompute, worked out once per route."""

    amounts: dict[str, int]
    """``{meter: hold}``, the reservation handed to the ledger. Read-only."""
    base: dict[str, int]
    """``{meter: base quantity}``, what a request bills before it records anything. Read-only."""
    exact: bool
    """No meter is an estimate and none is on the batch channel: a request whose handler records
    nothing settles at exactly its hold, which leaves the ledger untouched."""
    header: str | None
    """The usage header when the handler records nothing (the base quantities)."""
    header_bytes: bytes
    """``header`` encoded (``b""`` when there is none)."""
    reported: dict[str, int]
    """What ``header`` reports, meter by meter. Read-only."""

    @classmethod
    def build(
        cls,
        specs: Iterable[MeterSpec],
        header_meters: frozenset[str] | None = None,
        batch_meters: frozenset[str] = frozenset(),
    ) -> Charge:
        """``header_meters``: the meters reported in the usage header (``None``: all but the batch ones)."""
        charge = cls(specs)
        charge.amounts = {spec.meter: spec.hold for spec in charge}
        charge.base = {spec.meter: spec.base for spec in charge}
        charge.exact = all(spec.base == spec.hold and spec.meter not in batch_meters for spec in charge)
        charge.reported = {
            spec.meter: spec.base
            for spec in charge
            if (spec.meter in header_meters if header_meters is not None else spec.meter not in batch_meters)
        }
        parts = [f"{meter}={quantity}" for meter, quantity in charge.reported.items() if quantity]
        charge.header = ", ".join(parts) if parts else None
        charge.header_bytes = (charge.header or "").encode("latin-1")
        return charge


_UNARMED = Charge.build(())


class UsageCounter:
    """The usage of one request, meter by meter, in the order settings declare.

    ``values`` is the route's shared ``charge.base`` until the first :meth:`add`
    copies it (``touched``): most requests record nothing, and pay for no copy.
    """

    # Class-level defaults (no ``__slots__``): a new counter pays only for what it changes.
    #: what the route costs; empty until :meth:`arm`
    charge: Charge = _UNARMED
    values: dict[str, int] = _UNARMED.base
    #: what the usage header said, once it has gone out (``None`` before)
    reported: Mapping[str, int] | None = None
    #: settled or released: recording more is an error
    closed = False
    #: ``record_usage`` was called: ``values`` is this request's own copy
    touched = False

    def __init__(self, specs: Iterable[MeterSpec] = (), known: frozenset[str] = frozenset()) -> None:
        self.known = known
        if specs:
            self.arm(specs)

    @property
    def holds(self) -> Mapping[str, int]:
        """``{meter: units checked beforehand}``."""
        return self.charge.amounts

    def arm(self, specs: Iterable[MeterSpec]) -> None:
        """Start counting ``specs`` (a :class:`Charge`, or specs to build one from). A counter bound
        before routing (Django binds in ``__call__``, resolves in ``process_view``) is created empty;
        the Gate arms it when it grants the request."""
        charge = specs if isinstance(specs, Charge) else Charge.build(specs)
        self.charge = charge
        self.values = charge.base
        self.touched = False

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
        if name not in self.known:
            raise ZcError("unknown_meter", f"meter {meter!r} is not declared in settings.meters")
        raise ZcError(
            "meter_not_metered",
            f"meter {name!r} was not checked for this route; add @metered({name!r}, estimate=...)",
        )


_current: ContextVar[UsageCounter | None] = ContextVar("zc_usage_counter", default=None)


def current_counter() -> UsageCounter | None:
    return _current.get()


def record_usage(meter: str, quantity: int) -> None:
    """Add ``quantity`` units of ``meter`` to the current paid request.

    Works in async handlers, sync handlers run in a thread pool, and any code
    they call. Outside a paid request it raises :class:`ZcError`
    (``outside_request``) rather than dropping the usage.
    """
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
bind_counter: Callable[[UsageCounter | None], Token[UsageCounter | None]] = _current.set
unbind_counter: Callable[[Token[UsageCounter | None]], None] = _current.reset
