"""The core every adapter asks: which route is paid, may this buyer run it, what to bill.

Adapters build a header getter and hand over the view the router matched; the
gate answers with an :class:`~zc_middleware.decision.Allow` or
:class:`~zc_middleware.decision.Deny`, and later settles or releases the hold.
Only the ledger call is written twice (sync and async); everything around it
is shared.

Usage leaves by one channel per meter per action: header-channel meters in
``X-ZeroClick-Usage``, batch-channel meters as events in the outbox, keyed
``{request id}:{meter}`` (the proxy's ``zc-request-id``, else a generated id)
so a retried settle cannot bill twice. A header meter's usage recorded after
the header went out (streams, server-sent events) is only the *remainder*
beyond what the header said, and it is queued as a batch event for that
request instead of being lost; no unit is ever reported by both channels.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from .decision import Allow, Deny, identity_required, ledger_unavailable, payment_required
from .errors import ConfigError
from .ledger import Ledger, open_ledger
from .ledger.base import BUYER_ID, Hold, Refusal
from .meters import Charge, metered_specs
from .outbox import Event, make_event
from .outbox.base import MAX_KEY
from .reporter import Reporter, reporter_for
from .settings import ZeroClickSettings

__all__ = ["Charge", "Gate", "HeaderGetter", "Identify", "header_identity"]

log = logging.getLogger("zc_middleware")

HeaderGetter = Callable[[str], "str | None"]
"""Looks up a request header by lower-case name."""
Identify = Callable[[HeaderGetter], "str | None"]
"""Returns the buyer id of a request, or ``None`` when there is none. One replaceable step."""
_REQUEST_ID = re.compile(r"[\x21-\x7e]{1,200}")
_BUYERS_REMEMBERED = 10_000


def _request_key(request_id: str | None) -> str:
    if request_id is None:
        return f"zc-{uuid.uuid4().hex}"
    if _REQUEST_ID.fullmatch(request_id):
        return request_id
    return _digest(request_id)


def _digest(text: str) -> str:
    return "sha256-" + hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()


def _event_key(request: str, meter: str) -> str:
    """``{request id}:{meter}``, or its digest when a long request id and a long meter name would
    pass the batch API's limit on keys (the same request and meter always give the same key)."""
    key = f"{request}:{meter}"
    return key if len(key) <= MAX_KEY else _digest(key)


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
        reporter: Reporter | None = None,
    ) -> None:
        self.settings = settings
        self.ledger = ledger if ledger is not None else open_ledger(settings.ledger, plans=settings.plans)
        #: the batch channel; ``None`` without an API key (then no meter is on the batch channel)
        self.reporter = reporter if reporter is not None else (reporter_for(settings) if settings.api_key else None)
        self._batch_meters = settings.batch_meters
        self._shared_file = self._shares_file()
        if self.reporter is not None:
            self.reporter.start()  # resume what a previous run left in the outbox
        self.identify = identify or header_identity(settings.identity_header)
        #: the lower-case header that names the buyer, or ``None`` with a custom ``identify``:
        #: adapters that can read one header cheaply pass its value to :meth:`check_buyer`
        self.identity_header: str | None = None if identify else settings.identity_header.lower()
        self._order = {name: i for i, name in enumerate(settings.meters)}
        #: every meter settings declare
        self.known = frozenset(settings.meters)
        self._header_meters = tuple(m for m, c in settings.meters.items() if c.channel == "header")
        self._header_set = frozenset(self._header_meters)
        self._charges: dict[Any, Charge | None] = {}
        #: True when the ledger does its I/O inline (no async methods of its own): async adapters
        #: then call check()/finish() directly instead of paying for a coroutine per request.
        self.inline = type(self.ledger).areserve is Ledger.areserve and type(self.ledger).aadjust is Ledger.aadjust
        self._tally: Counter[str] = Counter()
        #: what :meth:`log_view_problems` has logged already
        self._logged_problems: set[str] = set()
        self._buyers: set[str | None] = set()  # ids already found valid
        self._allowed = 0  # the per-request counts are plain ints: cheaper than a Counter's item update
        self._settled = 0

    @property
    def stats(self) -> Counter[str]:
        """What happened so far, for operators: allowed, denied_<status>, settled, released,
        ledger_errors, over_estimate, late_usage, outbox_errors. A snapshot."""
        stats = self._tally.copy()
        for name, count in (("allowed", self._allowed), ("settled", self._settled)):
            if count:
                stats[name] = count
        return stats

    def _shares_file(self) -> bool:
        """Ledger and outbox in one SQLite file: a request's events commit with its settle."""
        from .ledger.sqlite import SQLiteLedger
        from .outbox.sqlite import SQLiteOutbox

        outbox = self.reporter.outbox if self.reporter is not None else None
        if not isinstance(self.ledger, SQLiteLedger) or not isinstance(outbox, SQLiteOutbox):
            return False
        return os.path.realpath(self.ledger.path) == os.path.realpath(outbox.path)

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
            if meter not in self.known:
                where = getattr(view, "__qualname__", route)
                raise ConfigError(
                    "unknown_meter",
                    f"{where} is metered on {meter!r}, which settings.meters does not declare",
                )
        if not specs:
            return None
        ordered = sorted(specs.values(), key=lambda s: self._order[s.meter])
        return Charge.build(ordered, self._header_set, self._batch_meters)

    def validate_views(self, views: Iterable[tuple[object, str | None]]) -> int:
        """Check every view's meters at start-up; returns how many routes are paid."""
        return sum(self.charge_for(view, route) is not None for view, route in views)

    def warn_unrouted(self, names: Iterable[str | None]) -> None:
        """Log each ``settings.routes`` entry that names none of ``names`` (the app's route names):
        it prices nothing, and the route it meant stays free."""
        known = set(names)
        for route in self.settings.routes:
            if route not in known:
                log.warning("zc_middleware: settings.routes prices %r, but no route is named so (yet)", route)

    def log_view_problems(self, views: Iterable[tuple[object, str | None]]) -> int:
        """Check views added after start-up without raising: each one metered on a meter settings do
        not declare is logged, once for the Gate's life. Pricing it raises the same
        :class:`ConfigError`, so its own requests fail and never run unbilled; every other view is
        served. Returns how many views are bad."""
        bad = 0
        for view, route in views:
            try:
                self.charge_for(view, route)
            except ConfigError as exc:
                bad += 1
                if exc.message not in self._logged_problems:
                    self._logged_problems.add(exc.message)
                    log.error("zc_middleware: %s; its requests fail until the app is fixed", exc.message)
        return bad

    # -- the check -------------------------------------------------------------
    def _valid_buyer(self, buyer: str | None) -> bool:
        """:data:`~zc_middleware.ledger.base.BUYER_ID`; valid ids are remembered (bounded)."""
        if not isinstance(buyer, str) or not BUYER_ID.fullmatch(buyer):
            return False
        if len(self._buyers) >= _BUYERS_REMEMBERED:
            self._buyers.clear()
        self._buyers.add(buyer)
        return True

    def _no_buyer(self, buyer: str | None) -> Deny:
        return self.deny(identity_required(self.settings.identity_header, invalid=bool(buyer)))

    def _decide(
        self,
        buyer: str,
        charge: Charge,
        result: Hold | Refusal | BaseException,
        counter: Allow | None,
        get_header: HeaderGetter,
    ) -> Allow | Deny:
        if isinstance(result, Hold):
            hold: Hold | None = result
        elif isinstance(result, Refusal):
            return self.deny(payment_required(result, self.settings.extend_url))
        else:
            self._tally["ledger_errors"] += 1
            log.error("zc_middleware: ledger unavailable (%s: %s)", type(result).__name__, result)
            if self.settings.on_ledger_error != "allow":
                return self.deny(ledger_unavailable())
            hold = None
        self._allowed += 1
        allow = counter if counter is not None else Allow(self.known)
        allow.arm(charge)
        allow.buyer = buyer
        allow.hold = hold
        if self.reporter is not None:
            allow.request_id = get_header(self.settings.request_id_header)
        return allow

    def new_counter(self) -> Allow:
        """An unarmed grant-to-be, for adapters that bind the request's counter before the route
        is known: pass it to :meth:`check` as ``counter`` and, if allowed, it is the ``Allow``."""
        return Allow(self.known)

    def deny(self, deny: Deny) -> Deny:
        """Count ``deny`` in :attr:`stats` (``denied_<status>``) and return it."""
        self._tally[f"denied_{deny.status}"] += 1
        return deny

    def check(self, get_header: HeaderGetter, charge: Charge, *, counter: Allow | None = None) -> Allow | Deny:
        """Identify the buyer and atomically check-and-hold ``charge``.

        ``counter``, when given, is armed with the charge and becomes ``Allow.counter``.
        """
        return self.check_buyer(self.identify(get_header), get_header, charge, counter)

    def check_buyer(
        self, buyer: str | None, get_header: HeaderGetter, charge: Charge, counter: Allow | None = None
    ) -> Allow | Deny:
        """:meth:`check` for an adapter that read the buyer itself (see :attr:`identity_header`)."""
        # From here on ``buyer`` is a str: a remembered or a valid id (the type: ignores below).
        if buyer not in self._buyers and not self._valid_buyer(buyer):
            return self._no_buyer(buyer)
        try:
            result: Hold | Refusal | BaseException = self.ledger.reserve(buyer, charge.amounts)  # type: ignore[arg-type]
        except Exception as exc:
            result = exc
        if counter is None or result.__class__ is not Hold or self.reporter is not None:
            return self._decide(buyer, charge, result, counter, get_header)  # type: ignore[arg-type]
        # The common grant, as _decide makes it, without its frames: this runs on every paid request.
        self._allowed += 1
        counter.charge = charge
        counter.values = charge.base
        counter.touched = False
        counter.buyer = buyer  # type: ignore[assignment]
        counter.hold = result
        return counter

    async def acheck(self, get_header: HeaderGetter, charge: Charge, *, counter: Allow | None = None) -> Allow | Deny:
        return await self.acheck_buyer(self.identify(get_header), get_header, charge, counter)

    async def acheck_buyer(
        self, buyer: str | None, get_header: HeaderGetter, charge: Charge, counter: Allow | None = None
    ) -> Allow | Deny:
        # From here on ``buyer`` is a str: a remembered or a valid id (the type: ignores below).
        if buyer not in self._buyers and not self._valid_buyer(buyer):
            return self._no_buyer(buyer)
        try:
            if self.inline:  # embedded ledgers answer in microseconds: no coroutine, no thread hop
                result: Hold | Refusal | BaseException = self.ledger.reserve(buyer, charge.amounts)  # type: ignore[arg-type]
            else:
                result = await self.ledger.areserve(buyer, charge.amounts)  # type: ignore[arg-type]
        except Exception as exc:
            result = exc
        return self._decide(buyer, charge, result, counter, get_header)  # type: ignore[arg-type]

    # -- reporting -------------------------------------------------------------
    def usage_header(self, allow: Allow) -> str | None:
        """The ``X-ZeroClick-Usage`` value, and remember it was reported.

        Declaration order, ``meter=integer`` joined by ``", "``, zero quantities
        omitted; ``None`` when there is nothing to report.
        """
        if not allow.touched:  # nothing recorded: the route's own header, worked out once
            allow.reported = allow.charge.reported
            return allow.charge.header
        values = allow.values
        allow.reported = reported = {m: values[m] for m in self._header_meters if m in values}
        parts = [f"{m}={q}" for m, q in reported.items() if q]
        return ", ".join(parts) if parts else None

    def _settlement(self, allow: Allow, success: bool) -> tuple[Mapping[str, int] | None, list[Event]]:
        """What to debit (``{}`` releases; ``None``: nothing) and the batch events to queue."""
        if allow.closed:
            return None, []
        allow.closed = True
        if not success:
            self._tally["released"] += 1
            return ({} if allow.hold is not None else None), []
        self._settled += 1
        if not allow.touched and allow.charge.exact:
            return None, []  # nothing recorded on an exact charge: the hold already is the bill
        used = dict(allow.values)
        holds = allow.holds
        for meter, value in used.items():
            if value > holds[meter]:
                self._tally["over_estimate"] += 1
                log.warning(
                    "zc_middleware: %s used %d of %r, more than the %d checked beforehand",
                    allow.buyer,
                    value,
                    meter,
                    holds[meter],
                )
        batch = {m: q for m, q in used.items() if m in self._batch_meters and q}
        if allow.reported is not None:
            late = {m: used[m] - q for m, q in allow.reported.items() if used[m] > q}
            if late:
                self._tally["late_usage"] += 1
                if self.reporter is None:
                    log.warning(
                        "zc_middleware: usage recorded after the response headers were sent cannot be reported "
                        "for %s without an api_key (batch channel): %s",
                        allow.buyer,
                        late,
                    )
                else:
                    batch.update(late)  # header meters: disjoint from the batch meters above
        events = self._events(allow, batch) if batch else []
        return (used if allow.hold is not None else None), events

    def _events(self, allow: Allow, batch: Mapping[str, int]) -> list[Event]:
        request = _request_key(allow.request_id)
        now = time.time()
        return [
            make_event(
                user_id=allow.buyer, meter=m, quantity=q, idempotency_key=_event_key(request, m), clock=lambda: now
            )
            for m, q in batch.items()
        ]

    def _settle(self, allow: Allow, used: Mapping[str, int] | None, events: list[Event]) -> bool:
        """Write what the ledger alone cannot batch with the events; ``True`` when the debit is still to do."""
        if not events:
            return used is not None
        assert self.reporter is not None
        if self._shared_file and used is not None:
            from .outbox.sqlite import insert_events

            assert allow.hold is not None
            now = time.time()
            try:
                new = self.ledger.adjust_with(  # type: ignore[attr-defined]
                    allow.hold, used, lambda conn: insert_events(conn, events, now, strict=False)
                )
            except Exception:
                # the shared transaction rolled back: debit and queue separately, so nothing is lost
                log.warning("zc_middleware: settle with batch events failed for %s", allow.buyer, exc_info=True)
                return True
            self.reporter.notify(new)
            events.clear()
            return False
        return used is not None

    def _queue(self, allow: Allow, events: list[Event]) -> None:
        if not events:
            return
        assert self.reporter is not None
        try:
            self.reporter.enqueue(events, strict=False)
        except Exception:
            self._tally["outbox_errors"] += 1
            log.exception(
                "zc_middleware: could not queue usage of %s; the events were: %s",
                allow.buyer,
                [e.body for e in events],
            )

    def finish(self, allow: Allow, *, success: bool) -> None:
        """Settle the hold at the counted usage (``success``) or release it, and queue batch events. Never raises."""
        if success and not allow.touched and allow.charge.exact and not allow.closed:
            allow.closed = True  # the common case of _settlement, without its calls: nothing to write
            self._settled += 1
            return
        used, events = self._settlement(allow, success)
        if self._settle(allow, used, events) and used is not None:
            assert allow.hold is not None
            try:
                self.ledger.adjust(allow.hold, used)
            except Exception:
                self._tally["ledger_errors"] += 1
                log.exception("zc_middleware: could not settle the hold of %s", allow.buyer)
        self._queue(allow, events)

    async def afinish(self, allow: Allow, *, success: bool) -> None:
        if self.inline:  # embedded ledgers: the sync path, with its no-write fast path
            self.finish(allow, success=success)
            return
        used, events = self._settlement(allow, success)
        if self._settle(allow, used, events) and used is not None:
            assert allow.hold is not None
            try:
                await self.ledger.aadjust(allow.hold, used)
            except Exception:
                self._tally["ledger_errors"] += 1
                log.exception("zc_middleware: could not settle the hold of %s", allow.buyer)
        self._queue(allow, events)

    def close_reporter(self, timeout: float | None = None) -> bool:
        """Deliver pending usage within ``timeout`` (default ``shutdown_timeout``) and stop the sender."""
        return True if self.reporter is None else self.reporter.close(timeout)

    def close(self) -> None:
        self.ledger.close()
