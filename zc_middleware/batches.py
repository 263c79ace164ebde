"""The batch channel of finished requests: their events queued in the reporter's outbox, or written
in the same transaction as the debit when the ledger and the outbox share one (SQLite, PostgreSQL)."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping

from .ledger import Hold, Ledger
from .outbox import Event, Outbox
from .reporter import Reporter
from .settlement import Bill, events_for
from .usage import Usage

__all__ = ["Batches"]

log = logging.getLogger("zc_middleware")


class Batches:
    """Where a finished request's batch events go. ``reporter`` is ``None`` without an API key."""

    def __init__(self, ledger: Ledger, reporter: Reporter | None, tally: Counter[str]) -> None:
        self._ledger = ledger
        self._reporter = reporter
        self._tally = tally
        #: the ledger commits a request's debit and its batch events in one transaction
        self.joint = reporter is not None and ledger.joins(reporter.outbox)

    def settle_jointly(self, usage: Usage, owed: Bill) -> bool:
        """Write the debit of ``owed`` and its events together; ``False`` when that failed and the
        caller must write them apart."""
        try:
            new: int | Exception = self._ledger.adjust_with_events(*self._joint_args(usage, owed))
        except Exception as exc:
            new = exc
        return self._joined(usage, new)

    async def asettle_jointly(self, usage: Usage, owed: Bill) -> bool:
        try:  # on the ledger's async pool: an ASGI server's loop never waits on a socket here
            new: int | Exception = await self._ledger.aadjust_with_events(*self._joint_args(usage, owed))
        except Exception as exc:
            new = exc
        return self._joined(usage, new)

    def _joint_args(self, usage: Usage, owed: Bill) -> tuple[Hold, Mapping[str, int], Outbox, list[Event]]:
        assert self._reporter is not None and usage.allow is not None and owed.hold is not None
        return owed.hold, owed.used, self._reporter.outbox, events_for(usage.allow, owed.batch)

    def _joined(self, usage: Usage, new: int | Exception) -> bool:
        if isinstance(new, Exception):
            log.warning("zc_middleware: joint settle failed for %s", usage.allow and usage.allow.buyer, exc_info=new)
            return False
        assert self._reporter is not None  # a ledger joins only the reporter's outbox
        self._reporter.notify(new)
        return True

    def queue(self, usage: Usage, owed: Bill) -> None:
        """Queue the batch events of ``owed`` in the outbox (not a joint write)."""
        if not owed.batch or usage.allow is None or self._reporter is None:
            return
        events: list[Event] = []
        try:
            events = events_for(usage.allow, owed.batch)
            self._reporter.enqueue(events, strict=False)
        except Exception:
            self._not_queued(usage, events)

    async def aqueue(self, usage: Usage, owed: Bill) -> None:
        """:meth:`queue` from an event loop: an outbox write that would wait for a lock waits in a thread."""
        if not owed.batch or usage.allow is None or self._reporter is None:
            return
        events: list[Event] = []
        try:
            events = events_for(usage.allow, owed.batch)
            self._reporter.notify(await self._reporter.outbox.aadd(events, strict=False))
        except Exception:
            self._not_queued(usage, events)

    def _not_queued(self, usage: Usage, events: list[Event]) -> None:
        self._tally["outbox_errors"] += 1
        log.exception(
            "zc_middleware: could not queue usage of %s; the events were: %s",
            usage.allow and usage.allow.buyer,
            [e.body for e in events],
        )
