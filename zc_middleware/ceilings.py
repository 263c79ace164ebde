"""What a request recorded beyond what was checked: billed at the hold, or debited apart.

A meter's hold (its ``quantity`` or ``estimate``) is its ceiling. With
``over_estimate="cap"`` (the default) usage recorded past it is billed at the
hold; with ``"bill"`` the Gate asks the ledger to debit the excess apart,
atomically and only if the plan still covers it (:meth:`Ledger.debit`), and
the excess then leaves on the batch channel (the usage header, sent before the
settle, never says more than the hold). Either way a buyer's ``used`` never
passes the plan's limit, and usage not billed is logged at ERROR with the
buyer, the meter and the amounts, and counted (``over_estimate``).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping

from .ledger import Hold, Ledger
from .settlement import NO_EXTRA, Bill, excess
from .usage import Usage

__all__ = ["Ceilings"]

log = logging.getLogger("zc_middleware")


class Ceilings:
    """The Gate's part for usage past a hold: the excess debit (``bill``), its log lines and counts."""

    def __init__(self, ledger: Ledger, tally: Counter[str], *, bill: bool) -> None:
        self.ledger = ledger
        self.tally = tally
        #: ``over_estimate="bill"`` with a batch channel to report the excess on
        self.bill = bill

    def _excess(self, usage: Usage, success: bool) -> dict[str, int]:
        allow = usage.allow
        if not success or not usage.touched or usage.closed or allow is None or allow.hold is None:
            return {}
        return excess(usage)

    def debit(self, usage: Usage, success: bool) -> Mapping[str, int]:
        """Debit what a successful request recorded beyond its holds, all or nothing, if the plan
        covers it; returns what was debited (``{}``: billed at the holds). Never raises."""
        over = self._excess(usage, success)
        if not over:
            return NO_EXTRA
        try:
            result = self.ledger.debit(usage.allow.buyer, over)  # type: ignore[union-attr]
        except Exception as exc:
            return self._failed(over, exc)
        return over if isinstance(result, Hold) else NO_EXTRA

    async def adebit(self, usage: Usage, success: bool) -> Mapping[str, int]:
        over = self._excess(usage, success)
        if not over:
            return NO_EXTRA
        try:
            result = await self.ledger.adebit(usage.allow.buyer, over)  # type: ignore[union-attr]
        except Exception as exc:
            return self._failed(over, exc)
        return over if isinstance(result, Hold) else NO_EXTRA

    def _failed(self, over: Mapping[str, int], exc: Exception) -> Mapping[str, int]:
        self.tally["ledger_errors"] += 1
        log.error(
            "zc_middleware: could not debit usage past the holds %s (%s: %s)", dict(over), type(exc).__name__, exc
        )
        return NO_EXTRA

    def log(self, buyer: str, owed: Bill) -> None:
        """Count and log each meter ``owed`` recorded past its hold."""
        for meter, used, checked in owed.over:
            if meter in owed.extra:
                self.tally["over_estimate_billed"] += 1
                log.warning(
                    "zc_middleware: %s used %d of %r, more than the %d checked; the plan covered the %d more, "
                    "billed in full",
                    buyer, used, meter, checked, used - checked,
                )  # fmt: skip
                continue
            self.tally["over_estimate"] += 1
            log.error(
                "zc_middleware: %s used %d of %r, more than the %d checked beforehand; billed %d, the other %d "
                "not billed (raise the estimate%s)",
                buyer, used, meter, checked, checked, used - checked,
                ", or the plan did not cover them" if self.bill else ' or set over_estimate="bill"',
            )  # fmt: skip
