"""Decisions, as frozen values: :class:`Allow` lets the handler run, :class:`Deny` carries the response.

Adapters render a ``Deny`` in their framework's own response type without
looking inside it; the bytes and headers are built here once. What a granted
request uses is counted apart, by its :class:`~zc_middleware.usage.Usage`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import NamedTuple

from .ledger import Hold, Refusal
from .meters import Charge

__all__ = [
    "Allow",
    "Decision",
    "Deny",
    "body_too_large",
    "identity_required",
    "invalid_signature",
    "ledger_unavailable",
    "misconfigured",
    "payment_required",
    "route_repriced",
]

_MESSAGES = {
    "usage_exhausted": "The plan's remaining units for this meter do not cover this request.",
    "spend_cap_reached": "The plan's spend cap for the current period has been reached.",
    "plan_expired": "There is no active plan for this buyer.",
}


class Allow(NamedTuple):
    """Run the handler: ``buyer`` pays for ``charge``; ``hold`` is the ledger's provisional debit
    (``None`` when failing open), settled later from what the request's
    :class:`~zc_middleware.usage.Usage` counted. ``request_id`` is the proxy's id for the request,
    kept for batch events' keys. A frozen value: a named tuple, as one is made on every paid
    request."""

    buyer: str
    charge: Charge
    hold: Hold | None
    request_id: str | None = None


@dataclass(frozen=True, slots=True)
class Deny:
    """Do not run the handler; send exactly this response."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes
    #: the ``X-ZeroClick-Reason`` it carries (the contract's 402 only: the proxy reads it as the plan's refusal)
    reason: str | None = None
    meter: str | None = None


Decision = Allow | Deny


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


def invalid_signature(reason: str) -> Deny:
    """The request does not carry a valid ``zc-signature`` of ZeroClick's proxy (``reason``: one of
    :data:`zc_middleware.signing.REASONS`)."""
    return _json(
        401,
        {
            "error": "invalid_zeroclick_signature",
            "reason": reason,
            "message": "This route is paid: the request must come through ZeroClick, signed (zc-signature).",
        },
    )


def body_too_large(limit: int) -> Deny:
    """A paid request's body is larger than the ``max_signed_body`` its signature is verified over."""
    return _json(
        413,
        {
            "error": "body_too_large",
            "limit": limit,
            "message": f"This route is paid: a signed request's body may carry at most {limit} bytes.",
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


def misconfigured() -> Deny:
    """The middleware has no valid settings, so it cannot tell which routes are paid: nothing is served."""
    return _json(
        503,
        {"error": "zeroclick_misconfigured", "message": "The service's payment settings are invalid; see its log."},
    )
