"""What a route costs: meter names, the ``@metered`` marker, and a route's :class:`Charge`.

``@metered`` marks a view and guards it (:mod:`zc_middleware.guard`): the
function it returns keeps the signature (FastAPI dependency injection,
OpenAPI), sync/async nature and attributes of the one it was given, and
refuses to run in a request the middleware did not check for its meters.
Adapters read the mark after the framework's own router has matched the request. What a request records is
counted by :mod:`zc_middleware.usage`.
"""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TypeVar

from ._cache import remember
from .errors import ConfigError, ZcError
from .guard import VERBS, guarded, guarded_partial, is_guard

__all__ = [
    "MAX_QUANTITY",
    "Charge",
    "MeterSpec",
    "check_quantity",
    "handler_marks",
    "metered",
    "metered_specs",
    "normalize_meter_name",
]

F = TypeVar("F", bound=Callable[..., object])

#: Larger quantities are refused as a bug rather than billed (they also stay exact in JSON doubles).
MAX_QUANTITY = 2**53 - 1
_ATTR = "__zeroclick_meters__"
_LABEL = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")  # fullmatch: ``$`` accepts a trailing newline
_SEPARATORS = re.compile(r"[\s_]+")


def normalize_meter_name(name: object) -> str:
    """Return the kebab-case label for ``name``.

    ``"Compute Seconds"`` and ``"compute_seconds"`` both become
    ``"compute-seconds"``; anything that is not letters, digits and single
    separators is refused with a message saying why.
    """
    if not isinstance(name, str):
        raise ConfigError("invalid_meter", f"meter name must be a string, got {type(name).__name__} {name!r}")
    label = _SEPARATORS.sub("-", name.strip()).lower()
    if not _LABEL.fullmatch(label):
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
    whatever the handler records with :func:`record_usage` is added to it, up to
    ``hold``: the hold is a ceiling (see :mod:`zc_middleware.ceilings`).
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
    """Mark a view as paid on ``meter``, and guard it.

    ``@metered("api-requests")`` holds and bills 1 unit; ``quantity=n`` holds
    and bills ``n``. ``@metered("compute-seconds", estimate=30)`` requires 30
    units to be covered and bills what the handler records. Stack the
    decorator for several meters; the same meter twice is an error.

    The function returned refuses to run (``ZcError("unchecked")``) in a
    request the middleware did not check for its meters (:mod:`zc_middleware.guard`).
    On a class, the mark prices every handler method and each is guarded.
    """
    spec = MeterSpec.make(meter, quantity, estimate)
    alone = frozenset((spec.meter,))

    def mark(view: F) -> F:
        if type(view) is functools.partial and not view.__dict__:
            # Django's method_decorator: a new partial of the bound method, on every request
            view.__dict__[_ATTR] = (spec,)
            return guarded_partial(view, alone)  # type: ignore[arg-type,return-value]
        target = getattr(view, "__func__", view)  # bound methods share their function's mark
        existing: tuple[MeterSpec, ...] = getattr(target, _ATTR, ())
        if any(s.meter == spec.meter for s in existing):
            cls = getattr(target, "view_class", None)  # Django's and Flask's as_view() functions
            name = f"{cls.__qualname__}.as_view()" if cls is not None else getattr(target, "__qualname__", target)
            raise ConfigError("duplicate_metered", f"{name!s} is already metered on {spec.meter!r}")
        specs = (*existing, spec)
        meters = frozenset(s.meter for s in specs) if existing else alone
        if inspect.isclass(view):
            setattr(view, _ATTR, specs)
            for verb in VERBS:
                handler = getattr(view, verb, None)
                if inspect.isfunction(handler):
                    setattr(view, verb, guarded(handler, meters))
            return view
        guarded_before = is_guard(view)
        for obj in (target, guarded_before[0] if guarded_before else None):
            # The function itself is marked too: a router that registered it before this decorator ran
            # (@metered above @app.get) still prices it, though only what it returns here is guarded.
            if obj is not None:
                setattr(getattr(obj, "__func__", obj), _ATTR, specs)
        guard = guarded(view, meters)
        setattr(guard, _ATTR, specs)
        return guard  # type: ignore[return-value]

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
        stacked = remember(_stacked, key, _Stacked(view, handler))
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
    known: frozenset[str]
    """Every meter settings declare: a meter recorded on this route must be one of ours."""
    meters: frozenset[str]
    """This route's meters: a metered function runs in its requests only if its meters are among them."""

    @classmethod
    def build(
        cls,
        specs: Iterable[MeterSpec],
        header_meters: frozenset[str] | None = None,
        batch_meters: frozenset[str] = frozenset(),
        known: frozenset[str] = frozenset(),
    ) -> Charge:
        """``header_meters``: the meters reported in the usage header (``None``: all but the batch
        ones); ``known``: every meter settings declare."""
        charge = cls(specs)
        charge.known = known
        charge.amounts = {spec.meter: spec.hold for spec in charge}
        charge.meters = frozenset(charge.amounts)
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
