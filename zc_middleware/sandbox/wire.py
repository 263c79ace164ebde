"""The wire formats the sandbox reads: batch events and the ``X-ZeroClick-Usage`` header.

Pure functions, no I/O. Both are strict on purpose: the sandbox exists to show
a seller what the real service would refuse, so it names every problem instead
of guessing what a sender meant. An event's fields, its JSON shape and its
limits are the outbox's (the sending side), so the two sides cannot drift apart.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..errors import ZcError
from ..meters import MAX_QUANTITY, check_quantity, normalize_meter_name
from ..outbox.base import FIELDS, MAX_KEY, Usage

__all__ = [
    "FIELDS",
    "MAX_EVENTS",
    "MAX_KEY_LENGTH",
    "Event",
    "Invalid",
    "UsageHeaderError",
    "check_event",
    "parse_usage_header",
]

#: the seed contract: at most 1,000 events a batch
MAX_EVENTS = 1000
MAX_KEY_LENGTH = MAX_KEY
# RFC 3339 ``date-time``: ``T`` (or ``t``) between date and time, and a mandatory ``Z`` or offset.
_RFC3339 = re.compile(r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})", re.ASCII)
_DIGITS = re.compile(r"[0-9]+")  # both fullmatch: ``$`` accepts a trailing newline


@dataclass(frozen=True, slots=True)
class Event(Usage):
    """One valid batch event, as sent (the payload compared on redelivery)."""

    idempotency_key: str

    def as_json(self) -> dict[str, object]:
        return self.payload(self.idempotency_key)


@dataclass(frozen=True, slots=True)
class Invalid:
    """Why the event at ``index`` of a batch was refused."""

    index: int
    idempotency_key: str | None
    reason: str

    def as_json(self) -> dict[str, object]:
        return {"index": self.index, "idempotencyKey": self.idempotency_key, "reason": self.reason}


def _timestamp_problem(value: object) -> str | None:
    if not isinstance(value, str):
        return f"timestamp must be an RFC 3339 string, got {type(value).__name__}"
    match = _RFC3339.fullmatch(value)
    if match is None:
        return (
            f"timestamp {value!r} is not RFC 3339 with a timezone "
            "(e.g. '2026-06-12T09:30:00Z' or '2026-06-12T11:30:00+02:00')"
        )
    year, month, day, hour, minute, second = (int(part) for part in match.groups()[:6])
    zone = match.group(8)
    try:
        datetime(year, month, day, hour, minute, second)
        if zone not in ("Z", "z") and (int(zone[1:3]) > 23 or int(zone[4:6]) > 59):
            raise ValueError("offset out of range")
    except ValueError as exc:
        return f"timestamp {value!r} is not a real instant: {exc}"
    return None


def _problems(raw: dict[str, Any]) -> list[str]:
    problems: list[str] = []
    missing = [name for name in FIELDS if name not in raw]
    unknown = sorted(name for name in raw if name not in FIELDS)
    if missing:
        problems.append(f"missing field(s): {', '.join(missing)}")
    if unknown:
        problems.append(f"unknown field(s): {', '.join(unknown)}")
    user = raw.get("userId")
    if "userId" in raw and (not isinstance(user, str) or not user):
        problems.append(f"userId must be a non-empty string, got {user!r}")
    if "meter" in raw:
        meter = raw["meter"]
        try:
            label = normalize_meter_name(meter)
        except ZcError as exc:
            problems.append(exc.message)
        else:
            if label != meter:
                problems.append(f"meter {meter!r} is not a kebab-case label; send {label!r}")
    if "quantity" in raw:
        try:
            check_quantity(raw["quantity"])
        except ZcError as exc:
            problems.append(exc.message)
    if "timestamp" in raw:
        problem = _timestamp_problem(raw["timestamp"])
        if problem:
            problems.append(problem)
    key = raw.get("idempotencyKey")
    if "idempotencyKey" in raw:
        if not isinstance(key, str) or not key:
            problems.append(f"idempotencyKey must be a non-empty string, got {key!r}")
        elif len(key) > MAX_KEY_LENGTH:
            problems.append(f"idempotencyKey is {len(key)} characters; at most {MAX_KEY_LENGTH}")
    return problems


def check_event(index: int, raw: object) -> Event | Invalid:
    """Validate one element of ``events``: exactly the five fields, each well-formed."""
    if not isinstance(raw, dict):
        return Invalid(index, None, f"an event must be a JSON object, got {type(raw).__name__}")
    problems = _problems(raw)
    if problems:
        key = raw.get("idempotencyKey")
        return Invalid(index, key if isinstance(key, str) else None, "; ".join(problems))
    return Event(raw["userId"], raw["meter"], raw["quantity"], raw["timestamp"], raw["idempotencyKey"])


class UsageHeaderError(ValueError):
    """An ``X-ZeroClick-Usage`` value that cannot be billed as sent."""


def parse_usage_header(value: str) -> dict[str, int]:
    """``"api-requests=1, compute-seconds=4"`` -> ``{"api-requests": 1, "compute-seconds": 4}``.

    Any malformed pair refuses the whole header: billing part of it would hide
    the bug from the seller. A meter named twice is refused too, since it is
    exactly the double count the one-channel rule warns about.
    """
    if not value.strip():
        raise UsageHeaderError("empty X-ZeroClick-Usage header")
    usage: dict[str, int] = {}
    for part in value.split(","):
        pair = part.strip()
        meter, sep, quantity = pair.partition("=")
        meter, quantity = meter.strip(), quantity.strip()
        if not sep or not meter:
            raise UsageHeaderError(f"{pair!r} is not a meter=quantity pair")
        try:
            label = normalize_meter_name(meter)
        except ZcError as exc:
            raise UsageHeaderError(exc.message) from None
        if label != meter:
            raise UsageHeaderError(f"meter {meter!r} is not a kebab-case label; send {label!r}")
        if not _DIGITS.fullmatch(quantity) or len(quantity) > 16 or int(quantity) > MAX_QUANTITY:
            raise UsageHeaderError(f"quantity {quantity!r} for {meter!r} is not an integer from 0 to {MAX_QUANTITY}")
        if meter in usage:
            raise UsageHeaderError(f"meter {meter!r} appears twice")
        usage[meter] = int(quantity)
    return usage
