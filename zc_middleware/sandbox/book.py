"""What the sandbox saw: usage per buyer and meter from both channels, keys, 402s, protocol errors.

One :class:`Book` per app. Every mutation is synchronous and the app runs on
one event loop, so no lock is needed: no ``await`` ever splits an update.
Per-request logs are bounded; totals and idempotency keys are not (a sandbox
lives for a development session, and exact totals are its whole point).
"""

from __future__ import annotations

import collections
import dataclasses
import time
from dataclasses import dataclass, field
from typing import Literal

from .wire import Event

__all__ = ["Book", "Channel", "KeyRecord"]

Channel = Literal["header", "batch"]
JSON = dict[str, object]
_LOG_SIZE = 1000


@dataclass(slots=True)
class KeyRecord:
    """One idempotency key: the payload first accepted, and what redeliveries looked like."""

    event: Event
    deliveries: int = 1
    #: a redelivery carried a different payload (a sender bug: retries must resend byte-for-byte)
    differed: bool = False
    last_different: Event | None = None

    def as_json(self) -> JSON:
        out: JSON = {**self.event.as_json(), "deliveries": self.deliveries, "payloadDiffered": self.differed}
        if self.last_different is not None:
            out["lastDifferentPayload"] = self.last_different.as_json()
        return out


@dataclass(slots=True)
class Book:
    usage: dict[tuple[str, str], dict[str, int]] = field(default_factory=dict)
    keys: dict[str, KeyRecord] = field(default_factory=dict)
    batches: collections.Counter[str] = field(default_factory=collections.Counter)
    faults: collections.Counter[str] = field(default_factory=collections.Counter)
    requests: collections.deque[JSON] = field(default_factory=lambda: collections.deque(maxlen=_LOG_SIZE))
    proxied: int = 0
    payment_required: collections.deque[JSON] = field(default_factory=lambda: collections.deque(maxlen=_LOG_SIZE))
    reasons: collections.Counter[str] = field(default_factory=collections.Counter)
    protocol_errors: collections.deque[JSON] = field(default_factory=lambda: collections.deque(maxlen=_LOG_SIZE))
    protocol_error_count: int = 0

    # -- recording -----------------------------------------------------------------------
    def add_usage(self, buyer: str, meter: str, quantity: int, channel: Channel) -> None:
        row = self.usage.setdefault((buyer, meter), {"header": 0, "batch": 0})
        row[channel] += quantity

    def record_batch(self, events: list[Event]) -> tuple[int, int]:
        """Dedupe on ``idempotencyKey``; returns ``(accepted, duplicates)``."""
        accepted = duplicates = 0
        for event in events:
            known = self.keys.get(event.idempotency_key)
            if known is None:
                self.keys[event.idempotency_key] = KeyRecord(event)
                self.add_usage(event.user_id, event.meter, event.quantity, "batch")
                accepted += 1
                continue
            duplicates += 1
            known.deliveries += 1
            if event != known.event:
                known.differed = True
                known.last_different = event
                self.protocol_error(
                    "idempotency_conflict",
                    f"key {event.idempotency_key!r} redelivered with a different payload; the first one counts",
                    buyer=event.user_id,
                )
        self.batches["accepted"] += 1
        self.batches["events"] += accepted
        self.batches["duplicates"] += duplicates
        return accepted, duplicates

    def protocol_error(self, kind: str, detail: str, **context: object) -> None:
        self.protocol_error_count += 1
        self.protocol_errors.append({"kind": kind, "detail": detail, "at": _now(), **context})

    def record_request(self, entry: JSON, *, reason: str | None = None) -> None:
        self.proxied += 1
        self.requests.append(entry)
        if entry.get("status") == 402:
            self.reasons[reason or "(none)"] += 1
            self.payment_required.append(entry)

    def reset(self) -> None:
        fresh = Book()
        for spec in dataclasses.fields(self):
            setattr(self, spec.name, getattr(fresh, spec.name))

    # -- views -----------------------------------------------------------------------------
    def rows(self) -> list[JSON]:
        return [
            {"buyer": buyer, "meter": meter, **row, "total": row["header"] + row["batch"]}
            for (buyer, meter), row in sorted(self.usage.items())
        ]

    def conflicts(self) -> list[JSON]:
        return [record.as_json() for record in self.keys.values() if record.differed]

    def redelivered(self) -> int:
        return sum(1 for record in self.keys.values() if record.deliveries > 1)

    def snapshot(self) -> JSON:
        return {
            "usage": self.rows(),
            "batch": {
                "batchesAccepted": self.batches["accepted"],
                "batchesRejected": self.batches["rejected"],
                "eventsAccepted": self.batches["events"],
                "duplicates": self.batches["duplicates"],
                "keys": len(self.keys),
                "redeliveredKeys": self.redelivered(),
                "conflictingKeys": self.conflicts(),
            },
            "proxy": {
                "requests": self.proxied,
                "paymentRequired": list(self.payment_required),
                "paymentRequiredByReason": dict(self.reasons),
            },
            "protocolErrors": {"count": self.protocol_error_count, "recent": list(self.protocol_errors)},
            "faults": dict(self.faults),
        }

    def table(self) -> str:
        """The usage as a plain-text table, then what else a developer should look at."""
        rows = self.rows()
        header = ("buyer", "meter", "header", "batch", "total")
        cells = [header, *(tuple(str(r[name]) for name in header) for r in rows)]
        widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
        lines = [
            "  ".join(
                cell.ljust(w) if i < 2 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths, strict=True))
            )
            for row in cells
        ]
        lines.insert(1, "  ".join("-" * w for w in widths))
        if not rows:
            lines.append("(no usage yet)")
        counts = self.batches
        lines += [
            "",
            f"batches: {counts['accepted']} accepted, {counts['rejected']} rejected; "
            f"events: {counts['events']} accepted, {counts['duplicates']} duplicates, "
            f"{self.redelivered()} keys redelivered, {len(self.conflicts())} with differing payloads",
            f"proxied requests: {self.proxied}; 402s: "
            + (", ".join(f"{reason}={n}" for reason, n in sorted(self.reasons.items())) or "none"),
            f"protocol errors: {self.protocol_error_count}",
        ]
        lines += [f"  {error['kind']}: {error['detail']}" for error in list(self.protocol_errors)[-10:]]
        if self.faults:
            lines.append("injected faults: " + ", ".join(f"{k}={v}" for k, v in sorted(self.faults.items())))
        return "\n".join(lines) + "\n"


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
