"""The core every adapter asks: may this buyer run this paid route now, and what does it bill after.

Adapters hand over the buyer (or a header getter) and the route's
:class:`~zc_middleware.meters.Charge` (from :class:`~zc_middleware.pricing.Pricing`);
the Gate answers with a frozen :class:`~zc_middleware.decision.Allow` or
:class:`~zc_middleware.decision.Deny`, arming the request's
:class:`~zc_middleware.usage.Usage` when it allows, and later settles or
releases the hold from what that usage counted (:mod:`~zc_middleware.settlement`;
the calls in :mod:`~zc_middleware._gate_settle`). Only the ledger calls are
written twice (sync and async); every decision around them is shared.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable
from typing import Any, TypedDict

from ._gate_settle import Settling
from .access import Access, access_for
from .batches import Batches
from .ceilings import Ceilings
from .decision import Allow, Deny, identity_required, ledger_unavailable, payment_required
from .identity import Buyers, HeaderGetter, Identify, header_identity
from .journal import Journal, journal_directory
from .ledger import Hold, Ledger, Refusal, open_ledger
from .ledger.base import Unavailable
from .ledger.outage import Outage
from .meters import Charge
from .pricing import Pricing, View
from .reporter import Reporter, reporter_for
from .settings import ZeroClickSettings
from .signing import SignatureStep, signature_step
from .usage import Usage

__all__ = ["Charge", "Gate", "GateOptions", "HeaderGetter", "Identify", "header_identity"]

log = logging.getLogger("zc_middleware")


class GateOptions(TypedDict, total=False):
    """What an adapter hands on to the :class:`Gate` it builds, besides the settings."""

    ledger: Ledger | None
    identify: Identify | None


class Gate(Settling):
    """Plan checks, holds and usage reporting, independent of any web framework.

    ``settings`` is the one validated configuration. ``ledger`` (default: opened from
    ``settings.ledger``) keeps plan state; ``identify`` (default: the ``settings.identity_header``
    value) names the buyer of a request; ``reporter`` (default: one for ``settings.outbox`` when
    ``settings.api_key`` is set) delivers batch usage.
    """

    def __init__(
        self,
        settings: ZeroClickSettings,
        *,
        ledger: Ledger | None = None,
        identify: Identify | None = None,
        reporter: Reporter | None = None,
        serving: bool = True,
    ) -> None:
        """``serving=False``: a Gate that only prices routes (checks, commands), which says nothing at
        start-up about the requests it would serve."""
        self.settings = settings
        self.pricing = pricing = Pricing(settings)
        #: what a view costs (:meth:`Pricing.charge_for`), and the start-up checks of the views
        self.charge_for = pricing.charge_for
        self.warn_unrouted = pricing.warn_unrouted
        self.log_view_problems = pricing.log_view_problems
        #: every meter settings declare
        self.known = pricing.known
        self._batch_meters = settings.batch_meters
        journal_dir = journal_directory(settings.journal_dir, settings.ledger if ledger is None else ledger.url)
        self.ledger = (
            ledger
            if ledger is not None
            else open_ledger(settings.ledger, plans=settings.plans, timeout=settings.ledger_timeout, **_busy(settings))
        )
        #: the batch channel; ``None`` without an API key (then no meter is on the batch channel)
        self.reporter = reporter if reporter is not None else (reporter_for(settings) if settings.api_key else None)
        self._leases = self.ledger.leases
        if self.reporter is not None:
            self.reporter.start()  # resume what a previous run left in the outbox
        self.identify = identify or header_identity(settings.identity_header)
        #: verifies the proxy's signature before the check; ``None`` without ``signing_secrets``
        self.signatures: SignatureStep | None = signature_step(settings, warn=serving)
        #: the lower-case header that names the buyer, or ``None`` with a custom ``identify``:
        #: adapters that can read one header cheaply pass its value to :meth:`check_buyer`
        self.identity_header: str | None = None if identify else settings.identity_header.lower()
        self._request_id = settings.request_id_header if self.reporter is not None else None
        #: True when the ledger does its I/O inline (no async methods of its own): async adapters
        #: then call check()/finish() directly instead of paying for a coroutine per request.
        self.inline = type(self.ledger).areserve is Ledger.areserve and type(self.ledger).aadjust is Ledger.aadjust
        self._tally: Counter[str] = Counter()
        self._outage = Outage(settings.ledger, settings.on_ledger_error, self._tally)
        self._buyers = Buyers()
        #: settles, releases and batch events whose write failed, kept until they apply
        self.journal = Journal(
            journal_dir,
            ledger=self.ledger,
            reporter=self.reporter,
            tally=self._tally,
            backoff=settings.retry_backoff,
            backoff_max=settings.retry_backoff_max,
        )
        if serving and not isinstance(self.ledger, Unavailable):
            self.journal.start()  # replay what a killed process left
        self._batches = Batches(self.ledger, self.reporter, self._tally, self.journal)
        self._allowed = 0  # the per-request counts are plain ints: cheaper than a Counter's item update
        self._settled = 0
        self._ceilings = Ceilings(
            self.ledger, self._tally, bill=settings.over_estimate == "bill" and self.reporter is not None
        )
        #: ZeroClick's signed entitlement writes, which adapters hand over when a request's path is
        #: :attr:`access_path` (``None``: off); they never reach the app nor count in :attr:`stats`
        self.access: Access | None = access_for(settings, self.ledger)
        self.access_path: str | None = settings.access_path if self.access is not None else None

    @property
    def stats(self) -> Counter[str]:
        """What happened so far, for operators: allowed, denied_<status>, settled, released,
        ledger_errors, over_estimate (usage past a hold, not billed), over_estimate_billed (the plan
        covered it, ``over_estimate="bill"``), late_usage, outbox_errors. A snapshot."""
        stats = self._tally.copy()
        for name, count in (("allowed", self._allowed), ("settled", self._settled)):
            if count:
                stats[name] = count
        return stats

    def validate_views(self, views: Iterable[View]) -> int:
        """The start-up check every adapter runs: every view's meters (a :class:`ConfigError` for one
        settings do not declare), and a warning for settings that refuse every new buyer. Returns how
        many routes are paid."""
        if self.settings.default_plan is None:
            log.warning(
                "zc_middleware: no plan has default: true, so every buyer without an assigned plan gets "
                "402 plan_expired; assign plans (zc-middleware assign) or mark one plan as the default"
            )
        return self.pricing.validate_views(views)

    def deny(self, deny: Deny) -> Deny:
        """Count ``deny`` in :attr:`stats` (``denied_<status>``) and return it."""
        self._tally[f"denied_{deny.status}"] += 1
        return deny

    # -- the check: the signature (adapters call verify first), identify, check-and-hold --
    def verify(self, method: str, target: str, body: bytes | None, get_header: HeaderGetter) -> Deny | None:
        """With ``signing_secrets``, the step before the check: ``None`` when the request is signed by the
        proxy, else the refusal to send (see :class:`~zc_middleware.signing.SignatureStep`)."""
        deny = self.signatures.check(method, target, body, get_header) if self.signatures is not None else None
        return None if deny is None else self.deny(deny)

    def check(self, get_header: HeaderGetter, charge: Charge, usage: Usage) -> Allow | Deny:
        """Identify the buyer and atomically check-and-hold ``charge``; ``usage`` is armed if allowed."""
        return self.check_buyer(self.identify(get_header), get_header, charge, usage)

    def check_buyer(self, buyer: str | None, get_header: HeaderGetter, charge: Charge, usage: Usage) -> Allow | Deny:
        """:meth:`check` for an adapter that read the buyer itself (see :attr:`identity_header`)."""
        if buyer not in self._buyers and not self._buyers.valid(buyer):
            return self._no_buyer(buyer)
        try:
            result: Hold | Refusal | Exception = self.ledger.reserve(buyer, charge.amounts)  # type: ignore[arg-type]
        except Exception as exc:
            result = exc
        return self._decide(buyer, charge, result, usage, get_header)  # type: ignore[arg-type]

    async def acheck_buyer(
        self, buyer: str | None, get_header: HeaderGetter, charge: Charge, usage: Usage
    ) -> Allow | Deny:
        if self.inline or not self._buyers.valid(buyer):  # embedded ledgers answer inline, with no coroutine
            return self.check_buyer(buyer, get_header, charge, usage)
        try:
            result: Hold | Refusal | Exception = await self.ledger.areserve(buyer, charge.amounts)  # type: ignore[arg-type]
        except Exception as exc:
            result = exc
        return self._decide(buyer, charge, result, usage, get_header)  # type: ignore[arg-type]

    def _no_buyer(self, buyer: str | None) -> Deny:
        return self.deny(identity_required(self.settings.identity_header, invalid=bool(buyer)))

    def _decide(
        self, buyer: str, charge: Charge, result: Hold | Refusal | Exception, usage: Usage, get_header: HeaderGetter
    ) -> Allow | Deny:
        if isinstance(result, Exception):
            self._outage.failed(result)  # counted in stats, logged once per outage
            if self.settings.on_ledger_error != "allow":
                return self.deny(ledger_unavailable())
            hold: Hold | None = None
        else:
            if self._outage.down:
                self._outage.ended()
            if isinstance(result, Refusal):
                return self.deny(payment_required(result, self.settings.extend_url))
            hold = result
        self._allowed += 1
        request_id = get_header(self._request_id) if self._request_id is not None else None
        allow = tuple.__new__(Allow, (buyer, charge, hold, request_id))  # Allow(...) without its Python-level __new__
        usage.allow = allow
        usage.arm(charge)  # record_usage counts this charge from now on
        return allow

    def close_reporter(self, timeout: float | None = None) -> bool:
        """Try journaled writes once more (what still fails stays in the journal), then deliver pending
        usage within ``timeout`` (default ``shutdown_timeout``) and stop the sender."""
        self.journal.close()
        return True if self.reporter is None else self.reporter.close(timeout)

    def close(self) -> None:
        self.journal.close()
        self.ledger.close()

    @classmethod
    def pricing_only(cls, settings: ZeroClickSettings) -> Gate:
        """A Gate that only prices views, for checks and commands: a throwaway ``memory://`` ledger and
        no batch sender, so it never opens the real store nor starts delivering a previous run's usage."""
        quiet = settings.model_copy(update={"api_key": None})
        return cls(quiet, ledger=open_ledger("memory://", plans=settings.plans), serving=False)

    @classmethod
    def unavailable(cls, settings: ZeroClickSettings, error: Exception, *, identify: Identify | None = None) -> Gate:
        """A Gate for an app whose store could not be opened at start-up: it prices routes as usual,
        answers every paid request ``503 ledger_unavailable`` and lets free ones through, so that a
        server that starts anyway never serves a paid route unchecked nor fails a free one."""
        degraded = settings.model_copy(update={"on_ledger_error": "deny", "api_key": None})
        return cls(degraded, ledger=Unavailable(error, settings.ledger, plans=settings.plans), identify=identify)


def _busy(settings: ZeroClickSettings) -> dict[str, Any]:
    """The SQLite ledger's busy timeout, for that driver only."""
    return {"busy_timeout": settings.sqlite_busy_timeout} if settings.ledger.startswith("sqlite:") else {}
