"""The Gate's second half, after the response: settle or release the hold from what the request counted.

What to write is decided once (:func:`~zc_middleware.settlement.bill`); only the ledger call is written
twice, sync and async. A settle or release whose write fails is journaled (fsynced before the response
completes) and retried in the background until it applies; batch events go through
:class:`~zc_middleware.batches.Batches`, jointly with the debit where the outbox shares the ledger's store.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping

from .batches import Batches
from .ceilings import Ceilings
from .journal import Journal, Write
from .ledger import Ledger
from .ledger.outage import Outage
from .reporter import Reporter
from .settlement import NO_EXTRA, NOTHING, Bill, bill
from .usage import Usage

log = logging.getLogger("zc_middleware")


class Settling:
    """:meth:`finish` and :meth:`afinish` of the :class:`~zc_middleware.gate.Gate`, whose constructor
    sets the attributes declared here."""

    ledger: Ledger
    reporter: Reporter | None
    journal: Journal
    inline: bool
    _batch_meters: frozenset[str]
    _leases: bool
    _tally: Counter[str]
    _settled: int
    _outage: Outage
    _batches: Batches
    _ceilings: Ceilings

    def finish(self, usage: Usage, *, success: bool) -> None:
        """Settle the hold at the counted usage (``success``) or release it, and queue batch events. Never raises."""
        extra = self._ceilings.debit(usage, success) if self._ceilings.bill else NO_EXTRA
        owed = self._bill(usage, success, extra)
        if owed is NOTHING:
            return
        if owed.hold is not None and owed.batch and self._batches.joint:
            self._batches.settle_jointly(usage, owed)
            return
        if owed.hold is not None:
            try:
                self.ledger.adjust(owed.hold, owed.used)
            except Exception as exc:
                self._ledger_failed(owed, exc)
        self._batches.queue(usage, owed)

    async def afinish(self, usage: Usage, *, success: bool) -> None:
        if self.inline:  # embedded ledgers: the sync path
            self.finish(usage, success=success)
            return
        extra = await self._ceilings.adebit(usage, success) if self._ceilings.bill else NO_EXTRA
        owed = self._bill(usage, success, extra)
        if owed is NOTHING:
            return
        if owed.hold is not None and owed.batch and self._batches.joint:
            await self._batches.asettle_jointly(usage, owed)
            return
        if owed.hold is not None:
            try:
                await self.ledger.aadjust(owed.hold, owed.used)
            except Exception as exc:
                self._ledger_failed(owed, exc)
        await self._batches.aqueue(usage, owed)

    def _bill(self, usage: Usage, success: bool, extra: Mapping[str, int]) -> Bill:
        """What to write for ``usage`` (see :func:`~zc_middleware.settlement.bill`; ``extra``: what the
        ledger debited past the holds), counted and logged."""
        if usage.closed or usage.allow is None:  # settled already, or never granted
            return NOTHING
        usage.closed = True
        if success:
            self._settled += 1
            # nothing recorded on an exact charge: the hold already is the bill, unless holds lapse
            if not usage.touched and usage.charge.exact and not self._leases:
                return NOTHING
        else:
            self._tally["released"] += 1
        owed = bill(usage, success, self._batch_meters, self.reporter is not None, extra)
        self._log_bill(usage, owed)
        return owed

    def _log_bill(self, usage: Usage, owed: Bill) -> None:
        buyer = usage.allow.buyer if usage.allow is not None else "?"
        if owed.over:
            self._ceilings.log(buyer, owed)
        if owed.late and any(q > owed.extra.get(m, 0) for m, q in owed.late.items()):  # not only excess
            self._tally["late_usage"] += 1
            if self.reporter is None:
                log.warning(
                    "zc_middleware: usage recorded after the response headers were sent cannot be reported "
                    "for %s without an api_key (batch channel): %s",
                    buyer,
                    dict(owed.late),
                )

    def _ledger_failed(self, owed: Bill, error: Exception) -> None:
        """The settle or release of ``owed`` failed: journaled (fsynced before the response completes)
        and retried in the background until it applies."""
        assert owed.hold is not None
        self._outage.failed(error)  # counted in stats, logged once per outage, like a failed check
        self.journal.keep(Write(owed.hold, owed.used), error)
