"""``POST {access_path}``: ZeroClick's signed entitlement writes, verified, checked and applied to the ledger.

ZeroClick pushes a buyer's plan to the seller (an extension, a spend cap, a
closed plan) as a write signed like a proxied request but over one more line,
the purpose ``access.write``, so a proxy signature is no write and a write's
signature opens no paid route. The wire is the one ZeroClick's own SDK serves
(``zeroclick_sellers.stateful``): its verifier and its parser are used as they
are, and its answers are sent byte for byte::

    200 {"lifecycle":"active"}            applied, or applied before (stale, duplicate)
    401 {"error":"<auth code>"}           missing_or_malformed_signature, stale_timestamp,
                                          unknown_kid, invalid_signature
    400 {"error":"invalid_entitlement"}   also agent_mismatch, buyer_mismatch,
                                          buyer_email_mismatch, unknown_plan
    503 {"error":"seller_unavailable"}    the ledger could not apply it, or a signed body
                                          is not JSON: ZeroClick retries

Every step but the ledger call is shared by :meth:`Access.handle` and
:meth:`Access.ahandle`, which runs a ledger without async writes of its own in a
worker thread: an event loop never waits on a SQLite file another process holds
locked. Answers are :class:`~zc_middleware.decision.Deny` values, the
pre-rendered responses every adapter already sends as they are: the seller's app
never sees a write, and a write counts in no paid request's stats.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final

from zeroclick_sellers.stateful import (
    ParsedEntitlement,
    auth_error_response,
    parse_entitlement,
    seller_unavailable_response,
    upsert_response,
    verify_access_signature,
)

from .decision import Deny, body_too_large
from .errors import ZcError
from .identity import HeaderGetter
from .ledger import BUYER_ID, Entitlement, Ledger, Outcome
from .signing import AGENT_HEADER, REQUEST_ID_HEADER, SIGNATURE_HEADER

if TYPE_CHECKING:
    from .settings import ZeroClickSettings

__all__ = ["DEFAULT_ACCESS_PATH", "PURPOSE", "Access", "access_for", "epoch"]

log = logging.getLogger("zc_middleware")

DEFAULT_ACCESS_PATH = "/zeroclick/access"
#: the last line a write's signature covers (a proxied request's has no such line)
PURPOSE: Final = "access.write"
#: the largest ``stateVersion`` every store keeps as an integer (SQLite's and PostgreSQL's 64 bits)
MAX_VERSION = (1 << 63) - 1
BUYER_HEADER = "zc-buyer-id"
EMAIL_HEADER = "zc-buyer-email"
_HEADERS = (("content-type", "application/json"), ("cache-control", "no-store"))
_FRACTION = re.compile(r"\.(\d+)")


def _answer(status: int, body: bytes, *extra: tuple[str, str]) -> Deny:
    return Deny(status, (*_HEADERS, *extra), body)


def _error(status: int, code: str) -> Deny:
    return _answer(status, json.dumps({"error": code}, separators=(",", ":")).encode())


#: the SDK's own answers, rendered once
_APPLIED = _answer(200, upsert_response(lifecycle="active").body)
_UNAVAILABLE = _answer(503, seller_unavailable_response().body)
_AUTH = {
    code: _answer(401, auth_error_response(code).body)
    for code in ("missing_or_malformed_signature", "stale_timestamp", "unknown_kid", "invalid_signature")
}
_BAD = {
    code: _error(400, code)
    for code in ("invalid_entitlement", "agent_mismatch", "buyer_mismatch", "buyer_email_mismatch", "unknown_plan")
}
_NOT_POST = _answer(
    405,
    b'{"error":"method_not_allowed","message":"ZeroClick writes plan state here with POST."}',
    ("allow", "POST"),
)


def epoch(value: str) -> float:
    """Epoch seconds of an ISO-8601 instant as the SDK accepts it (``Z`` or an offset, any fraction
    digits: the first six count), on every supported Python (3.10's parser knows neither)."""
    text = value[:-1] + "+00:00" if value.endswith("Z") else value
    text = _FRACTION.sub(lambda m: "." + (m.group(1) + "000000")[:6], text, count=1)
    return datetime.fromisoformat(text).timestamp()


class Access:
    """The access path of one Gate: ``settings.access_path``, verified with ``settings.signing_secrets``
    (the proxy's secrets: ZeroClick signs writes with the same kids), ``signature_tolerance`` seconds of
    skew either way, bodies up to ``max_signed_body`` bytes; writes applied to ``ledger``."""

    __slots__ = ("_blocking", "_secrets", "clock", "ledger", "max_body", "path", "stats", "tolerance")

    def __init__(self, settings: ZeroClickSettings, ledger: Ledger) -> None:
        assert settings.access_path is not None
        self.path: str = settings.access_path
        self.ledger = ledger
        self._secrets: dict[str, str] = {kid: s.get_secret_value() for kid, s in settings.signing_secrets.items()}
        self.tolerance = settings.signature_tolerance
        self.max_body = settings.max_signed_body
        self.clock: Callable[[], float] = time.time
        #: writes by outcome (``applied``, ``stale``, ``duplicate``) and refusals by code, for operators
        self.stats: Counter[str] = Counter()
        #: the ledger has no async write of its own: async adapters apply writes in a worker thread
        self._blocking = type(ledger).aapply_entitlement is Ledger.aapply_entitlement

    # -- the steps every adapter's request goes through -----------------------------------
    def handle(self, method: str, target: str, body: bytes | None, get_header: HeaderGetter) -> Deny:
        """The answer to a request at the access path: ``target`` is the raw path and query as sent
        (the signature covers it), ``body`` the raw body or ``None`` past :attr:`max_body`."""
        write = self.prepare(method, target, body, get_header)
        if isinstance(write, Deny):
            return write
        try:
            outcome: Outcome | Exception = self.ledger.apply_entitlement(write)
        except Exception as exc:
            outcome = exc
        return self.applied(write, outcome)

    async def ahandle(self, method: str, target: str, body: bytes | None, get_header: HeaderGetter) -> Deny:
        write = self.prepare(method, target, body, get_header)
        if isinstance(write, Deny):
            return write
        try:
            if self._blocking:  # a SQLite file another process holds locked would stall the event loop
                outcome: Outcome | Exception = await asyncio.to_thread(self.ledger.apply_entitlement, write)
            else:
                outcome = await self.ledger.aapply_entitlement(write)
        except Exception as exc:
            outcome = exc
        return self.applied(write, outcome)

    def prepare(self, method: str, target: str, body: bytes | None, get_header: HeaderGetter) -> Entitlement | Deny:
        """Verify, parse and cross-check a write: the :class:`Entitlement` to apply, or the refusal."""
        if method.upper() != "POST":  # the signature covers the method upper-cased, as the SDK reads it
            return self._refuse(_NOT_POST, "method_not_allowed")
        if body is None:
            return self._refuse(body_too_large(self.max_body), "body_too_large")
        request_id, agent = get_header(REQUEST_ID_HEADER), get_header(AGENT_HEADER)
        if not request_id or not agent:
            return self._unsigned("missing_or_malformed_signature")
        if not self._secrets:
            log.warning("zc_middleware: an entitlement write arrived; settings have no signing_secrets to verify it")
            return self._unsigned("unknown_kid")
        try:
            verified = verify_access_signature(
                signature_header=get_header(SIGNATURE_HEADER),
                method=method,
                path_and_query=target,
                body=body,
                request_id=request_id,
                agent_id=agent,
                purpose=PURPOSE,
                signing_secrets=self._secrets,
                max_skew_seconds=self.tolerance,
                clock=self.clock,
            )
        except Exception as exc:  # the SDK answers a verifier that failed 503, as here
            log.error("zc_middleware: could not verify an entitlement write: %r", exc)
            return self._refuse(_UNAVAILABLE, "seller_unavailable")
        if not verified.ok:
            return self._unsigned(verified.code)
        parsed = self._parse(body)
        if isinstance(parsed, Deny):
            return parsed
        if parsed.agent_id != agent:
            return self._refuse(_BAD["agent_mismatch"], "agent_mismatch")
        # unsigned mirrors of the body's buyer: on disagreement, refuse rather than pick a side
        if get_header(BUYER_HEADER) != parsed.buyer_id:
            return self._refuse(_BAD["buyer_mismatch"], "buyer_mismatch")
        if get_header(EMAIL_HEADER) != parsed.buyer_email:
            return self._refuse(_BAD["buyer_email_mismatch"], "buyer_email_mismatch")
        if not BUYER_ID.fullmatch(parsed.agent_id):
            return self._invalid(("agentId: not a buyer id (1 to 256 printable ASCII, no spaces or commas)",))
        if parsed.state_version > MAX_VERSION:
            return self._invalid((f"stateVersion: more than {MAX_VERSION}, which no store keeps exactly",))
        try:
            start = epoch(parsed.period.start)
            end = None if parsed.period.end is None else epoch(parsed.period.end)
        except (ValueError, OverflowError) as exc:  # the grammar allows year 0000, which is no instant
            return self._invalid((f"state.period: {exc}",))
        return Entitlement(
            buyer=parsed.agent_id,
            plan=parsed.plan.slug,
            status=parsed.status,
            period_start=start,
            period_end=end,
            version=parsed.state_version,
            key=parsed.idempotency_key,
            kid=verified.kid,
        )

    def applied(self, write: Entitlement, outcome: Outcome | Exception) -> Deny:
        """The answer to what the ledger did with ``write``: its outcome, or the error it raised."""
        if not isinstance(outcome, Exception):
            self.stats[outcome] += 1
            log.info(
                "zc_middleware: entitlement write v%d for %s (plan %s, %s): %s",
                write.version,
                write.buyer,
                write.plan,
                write.status,
                outcome,
            )
            return _APPLIED
        if isinstance(outcome, ZcError) and outcome.code == "unknown_plan":
            log.error(
                "zc_middleware: ZeroClick put %s on plan %r, which settings.plans does not declare (declared: %s); "
                "the write is refused until the plan is declared",
                write.buyer,
                write.plan,
                ", ".join(self.ledger.plans.configs) or "none",
            )
            return self._refuse(_BAD["unknown_plan"], "unknown_plan")
        log.error(
            "zc_middleware: could not apply the entitlement write v%d for %s (answered 503; ZeroClick retries): %r",
            write.version,
            write.buyer,
            outcome,
        )
        return self._refuse(_UNAVAILABLE, "seller_unavailable")

    # -- refusals ---------------------------------------------------------------------------
    def _parse(self, body: bytes) -> ParsedEntitlement | Deny:
        """The SDK's parse of the body. A body that is not JSON is answered 503, as the SDK answers it:
        signed, it can only come from ZeroClick, whose retry is the way out."""
        try:
            data: Any = json.loads(body.decode("utf-8")) if body else None
        except ValueError as exc:  # UnicodeDecodeError is one
            log.warning("zc_middleware: a signed entitlement write whose body is not JSON (%s); answered 503", exc)
            return self._refuse(_UNAVAILABLE, "seller_unavailable")
        try:
            result = parse_entitlement(data)
        except Exception as exc:  # the SDK's ZCError: a price past its micro-USD range
            return self._invalid((str(exc),))
        if not result.ok:
            return self._invalid(result.issues)
        return result.entitlement

    def _invalid(self, issues: tuple[str, ...]) -> Deny:
        log.warning("zc_middleware: invalid entitlement write: %s", "; ".join(issues))
        return self._refuse(_BAD["invalid_entitlement"], "invalid_entitlement")

    def _unsigned(self, code: str) -> Deny:
        log.warning("zc_middleware: entitlement write refused: %s", code)
        return self._refuse(_AUTH[code], code)

    def _refuse(self, answer: Deny, code: str) -> Deny:
        self.stats[code] += 1
        return answer


def access_for(settings: ZeroClickSettings, ledger: Ledger) -> Access | None:
    """The :class:`Access` of ``settings``, or ``None`` when ``access_path`` is off."""
    return Access(settings, ledger) if settings.access_path is not None else None
