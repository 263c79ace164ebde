"""Decisions: :class:`Allow` lets the handler run (and counts its usage), :class:`Deny` carries the response.

Adapters render a ``Deny`` in their framework's own response type without
looking inside it; the bytes and headers are built here once.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from .ledger.base import Hold, Refusal
from .meters import UsageCounter

__all__ = [
    "Allow",
    "Decision",
    "Deny",
    "identity_required",
    "ledger_unavailable",
    "payment_required",
    "private_cache_control",
    "route_repriced",
]

_MESSAGES = {
    "usage_exhausted": "The plan's included units for this meter are used up.",
    "spend_cap_reached": "The plan's spend cap for the current period has been reached.",
    "plan_expired": "There is no active plan for this buyer.",
}


class Allow(UsageCounter):
    """Run the handler. The grant is also the request's usage counter: one object per paid request.

    ``buyer`` is who pays, ``hold`` the ledger's provisional debit (``None`` when failing
    open), ``charge`` (inherited) what the route costs; the hold is settled from the counted
    usage. ``request_id`` is the proxy's id for this request, kept for batch events' keys.
    """

    buyer = ""
    hold: Hold | None = None
    request_id: str | None = None

    def __init__(self, known: frozenset[str] = frozenset()) -> None:
        """An unarmed grant: the gate arms it and fills it in when the plan covers the charge."""
        super().__init__((), known)

    @property
    def counter(self) -> UsageCounter:
        """What adapters bind for :func:`~zc_middleware.record_usage`: the grant itself."""
        return self

    @property
    def finished(self) -> bool:
        """Settled or released already."""
        return self.closed


@dataclass(frozen=True, slots=True)
class Deny:
    """Do not run the handler; send exactly this response."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes
    reason: str | None = None
    meter: str | None = None


Decision = Allow | Deny


def private_cache_control(value: str | None) -> str:
    """The ``Cache-Control`` a paid route's response goes out with: ``private`` first, so that no
    shared cache (a CDN, a caching proxy, Django's cache middleware, which looks for exactly that
    word) replays it to another buyer, or to the same one, without the plan check. The app's own
    directives follow, except ``public`` and any ``private`` of its own (one limited to some fields
    included). ``value`` is every ``Cache-Control`` the app set, joined with commas."""
    value = value or ""
    kept = []
    for directive in _DIRECTIVES.split(value) if value.count('"') % 2 == 0 else value.split(","):
        directive = directive.strip()
        name = directive.partition("=")[0].strip().lower()
        if directive and name != "public" and name != "private":
            kept.append(directive)
    return ", ".join(["private", *kept])


#: the commas between ``Cache-Control`` directives: not those inside a quoted string (``no-cache="a, b"``)
_DIRECTIVES = re.compile(r',(?=(?:[^"]*"[^"]*")*[^"]*$)')


def _json(status: int, payload: dict[str, object], *extra: tuple[str, str], **kw: str | None) -> Deny:
    body = json.dumps(payload, separators=(",", ":")).encode()
    headers = (
        ("content-type", "application/json"),
        ("cache-control", "no-store"),
        *extra,
    )
    return Deny(status, headers, body, **kw)


def payment_required(refusal: Refusal, extend_url: str | None) -> Deny:
    """The contract's 402: reason header, no-store, JSON body, ``Retry-After`` when the meter resets."""
    payload: dict[str, object] = {
        "error": "payment_required",
        "reason": refusal.reason,
        "meter": refusal.meter,
        "message": _MESSAGES[refusal.reason],
    }
    extra: list[tuple[str, str]] = [("x-zeroclick-reason", refusal.reason)]
    if extend_url:
        payload["extendUrl"] = extend_url
    if refusal.retry_after is not None:
        payload["retryAfter"] = refusal.retry_after
        extra.append(("retry-after", str(refusal.retry_after)))
    return _json(402, payload, *extra, reason=refusal.reason, meter=refusal.meter)


def identity_required(header: str, *, invalid: bool = False) -> Deny:
    what = "is not a valid buyer identity" if invalid else "is missing"
    return _json(
        401,
        {
            "error": "invalid_buyer_identity" if invalid else "buyer_identity_required",
            "message": f"This route is paid: the {header} header {what}.",
        },
    )


def ledger_unavailable() -> Deny:
    return _json(
        503,
        {"error": "ledger_unavailable", "message": "Plan state cannot be checked right now; retry shortly."},
        ("retry-after", "1"),
    )


def route_repriced() -> Deny:
    """A request was let through as free and reached a paid view (routes changed at run time)."""
    return _json(
        503,
        {"error": "route_repriced", "message": "This route became paid while the request was routed; retry."},
        ("retry-after", "0"),
    )
