"""The outbox interface, and the one place an event is validated and serialized.

An event is serialized once, here, and the JSON text is what the outbox
stores: every (re)send is that exact text, so a retry can never carry a
different timestamp or quantity than the first attempt.

Rows move ``pending`` -> ``sent`` (2xx) or ``dead`` (rejected with a 4xx);
``dead`` rows go back to ``pending`` only by an operator (``retry_dead``). A
pending row is *leased* by one sender (owner + expiry) while a batch is in
flight, so two processes never send it concurrently; an expired lease (a
killed sender) makes it sendable again.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import ClassVar

from ..errors import ZcError
from ..meters import check_quantity, normalize_meter_name
from ..stores import Store

__all__ = [
    "FIELDS",
    "MAX_KEY",
    "Clock",
    "DeadLetter",
    "Event",
    "Leased",
    "Outbox",
    "OutboxStatus",
    "Usage",
    "make_event",
    "rfc3339",
]

log = logging.getLogger("zc_middleware")
Clock = Callable[[], float]
#: the longest idempotency key the batch API takes
MAX_KEY = 255
#: a batch event's fields, in the order its JSON body lists them
FIELDS = ("userId", "meter", "quantity", "timestamp", "idempotencyKey")
_USER = re.compile(r"[\x21-\x7e]{1,256}")  # fullmatch: ``$`` accepts a trailing newline
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True, slots=True)
class Usage:
    """What a batch event says, whoever holds it: who used how much of which meter, and when."""

    user_id: str
    meter: str
    quantity: int
    #: RFC 3339
    timestamp: str

    def payload(self, key: str) -> dict[str, object]:
        """The batch API's JSON object for this usage under the idempotency ``key``."""
        return dict(zip(FIELDS, (self.user_id, self.meter, self.quantity, self.timestamp, key), strict=True))


@dataclass(frozen=True, slots=True)
class Event(Usage):
    """One usage event, validated; ``body`` is the JSON sent to the API, byte for byte."""

    key: str
    body: str
    #: False when the timestamp was taken from the clock: a re-report then matches on the rest
    explicit_time: bool = True

    def same_as(self, user_id: str, meter: str, quantity: int, timestamp: str) -> bool:
        """Whether a stored row with these fields is this event (the re-report is then a no-op)."""
        if (user_id, meter, quantity) != (self.user_id, self.meter, self.quantity):
            return False
        return not self.explicit_time or timestamp == self.timestamp


@dataclass(frozen=True, slots=True)
class Leased:
    """A pending row claimed by one sender."""

    id: int
    key: str
    body: str
    attempts: int


@dataclass(frozen=True, slots=True)
class DeadLetter:
    key: str
    reason: str
    failed_at: float
    body: str


@dataclass(frozen=True, slots=True)
class OutboxStatus:
    pending: int
    #: epoch seconds of the oldest pending event's enqueue time, ``None`` when nothing is pending
    oldest_pending: float | None
    sent: int
    dead: int
    dead_letters: tuple[DeadLetter, ...] = field(default=())
    #: events refused because their key was already stored with another payload (kept, never sent)
    conflicts: int = 0

    def oldest_age(self, now: float | None = None) -> float | None:
        if self.oldest_pending is None:
            return None
        return max(0.0, (time.time() if now is None else now) - self.oldest_pending)


def rfc3339(when: datetime) -> str:
    """``2026-06-12T09:30:00Z``: UTC, whole seconds, as the contract's example."""
    return when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _key(value: object) -> str:
    if not isinstance(value, str):
        raise ZcError("invalid_idempotency_key", f"idempotency_key must be a string, got {type(value).__name__}")
    if not value or len(value) > MAX_KEY:
        raise ZcError("invalid_idempotency_key", f"idempotency_key must be 1 to {MAX_KEY} characters, got {len(value)}")
    if _CONTROL.search(value):
        raise ZcError("invalid_idempotency_key", "idempotency_key must not contain control characters")
    return value


def make_event(
    *,
    user_id: object,
    meter: object,
    quantity: object,
    idempotency_key: object,
    timestamp: datetime | None = None,
    known_meters: Iterable[str] | None = None,
    clock: Clock = time.time,
) -> Event:
    """Validate one event and serialize it; raises :class:`ZcError` with a stable code."""
    if not isinstance(user_id, str) or not _USER.fullmatch(user_id):
        raise ZcError("invalid_user_id", f"user_id must be 1 to 256 printable ASCII characters, got {user_id!r}")
    if isinstance(quantity, float) and math.isnan(quantity):
        raise ZcError("invalid_quantity", "quantity must be a non-negative int, got NaN")
    qty = check_quantity(quantity)
    name = normalize_meter_name(meter)
    if known_meters is not None and name not in known_meters:
        raise ZcError("unknown_meter", f"meter {meter!r} is not declared in settings.meters")
    key = _key(idempotency_key)
    if timestamp is None:
        stamp = rfc3339(datetime.fromtimestamp(clock(), timezone.utc))
    elif not isinstance(timestamp, datetime):
        raise ZcError("invalid_timestamp", f"timestamp must be a datetime, got {type(timestamp).__name__}")
    elif timestamp.tzinfo is None or timestamp.utcoffset() is None:
        raise ZcError("naive_datetime", "timestamp must be timezone-aware (e.g. datetime.now(timezone.utc))")
    else:
        stamp = rfc3339(timestamp)
    usage = Usage(user_id, name, qty, stamp)
    body = json.dumps(usage.payload(key), separators=(",", ":"))
    return Event(user_id, name, qty, stamp, key=key, body=body, explicit_time=timestamp is not None)


def log_conflict(event: Event, stored: object) -> None:
    """The one log line of a refused event: a key already stored for other usage (the first report
    wins, so this usage is not billed unless an operator reports it under a new key)."""
    log.error(
        "zc_middleware: idempotency key %r was already used for other usage %s; this event was not queued "
        "(kept as a conflict, see zc-middleware outbox status): %s",
        event.key,
        stored,
        event.body,
    )


def conflict(event: Event) -> ZcError:
    return ZcError(
        "idempotency_conflict",
        f"idempotency key {event.key!r} was already used for a different event; "
        "use a new key for new usage, or the same payload to re-report",
    )


class Outbox(Store, ABC):
    """Durable usage events. Every backend passes ``tests/outbox/test_contract.py``.

    A driver declares the URL schemes it serves (``schemes = ("sqlite",)``) and
    is opened with ``(url, *, clock, create, ...)``.
    """

    kind: ClassVar[str] = "outbox"

    def __init__(self, url: str, *, clock: Clock = time.time, create: bool = True) -> None:
        super().__init__(url, create=create)
        self.clock = clock

    @abstractmethod
    def add(self, events: Sequence[Event], *, strict: bool = True) -> int:
        """Store ``events`` durably; returns how many were new.

        A key already stored with the same payload is a no-op. A key stored with a
        different payload raises ``idempotency_conflict`` (nothing of the call is
        stored) when ``strict``; otherwise the first report wins, and the other is
        logged at ERROR and kept as a conflict (counted in :meth:`status`), never sent.
        """

    async def aadd(self, events: Sequence[Event], *, strict: bool = True) -> int:
        """:meth:`add` from an event loop; a store whose write may wait for a lock never waits on the loop."""
        return self.add(events, strict=strict)

    @abstractmethod
    def lease(self, owner: str, limit: int, ttl: float) -> list[Leased]:
        """Claim up to ``limit`` due, unleased pending rows (oldest first) for ``ttl`` seconds."""

    @abstractmethod
    def delivered(self, owner: str, ids: Sequence[int]) -> None:
        """The API accepted these rows (2xx)."""

    @abstractmethod
    def retry(self, owner: str, ids: Sequence[int], delay: float, *, count: bool = True) -> None:
        """Give the lease back; the rows become due again after ``delay`` (``count``: one more attempt)."""

    @abstractmethod
    def dead(self, owner: str, failures: Sequence[tuple[int, str]]) -> None:
        """The API rejected these rows for good: keep them, with the reason, out of the queue."""

    @abstractmethod
    def reclaim(self, is_gone: Callable[[str], bool]) -> int:
        """End the leases of owners ``is_gone`` says are dead (a killed sender on this host), at once
        rather than at lease expiry; returns how many rows came back."""

    @abstractmethod
    def status(self, *, dead_limit: int = 20) -> OutboxStatus: ...

    @abstractmethod
    def retry_dead(self) -> int:
        """Put every dead letter back in the queue; returns how many."""

    @abstractmethod
    def prune(self, before: float) -> int:
        """Forget delivered rows sent before ``before`` (epoch seconds)."""

    def close(self) -> None:
        """Release connections."""
