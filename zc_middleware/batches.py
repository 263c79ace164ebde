"""The batch channel of finished requests: their events queued in the reporter's outbox, or written
in the same transaction as the debit when the ledger and the outbox share one (SQLite, PostgreSQL).

A write that fails (the outbox locked, a disk or network error) is handed to the
:class:`~zc_middleware.journal.Journal`, which keeps it on disk and retries it
until it applies: a joint settle is journaled whole (its debit and its events),
never retried apart on the request path, where the same fault would only make
the response wait twice as long. A log line is never the only place of an event.
"""

from __future__ import annotations

import logging
from collections import Counter

from .journal import Journal, Write
from .ledger import Ledger
from .outbox import Event
from .reporter import Reporter
from .settlement import Bill, events_for
from .usage import Usage

__all__ = ["Batches"]

log = logging.getLogger("zc_middleware")


class Batches:
    """Where a finished request's batch events go. ``reporter`` is ``None`` without an API key."""

    def __init__(self, ledger: Ledger, reporter: Reporter | None, tally: Counter[str], journal: Journal) -> None:
        self._ledger = ledger
        self._reporter = reporter
        self._tally = tally
        self._journal = journal
        #: the ledger commits a request's debit and its batch events in one transaction
        self.joint = reporter is not None and ledger.joins(reporter.outbox)

    def settle_jointly(self, usage: Usage, owed: Bill) -> None:
        """Write the debit of ``owed`` and its events together; journaled whole if that fails."""
        write = self._write(usage, owed)
        assert self._reporter is not None and write.hold is not None
        try:
            new: int | Exception = self._ledger.adjust_with_events(
                write.hold, write.used, self._reporter.outbox, write.events
            )
        except Exception as exc:
            new = exc
        self._joined(write, new)

    async def asettle_jointly(self, usage: Usage, owed: Bill) -> None:
        write = self._write(usage, owed)
        assert self._reporter is not None and write.hold is not None
        try:  # on the ledger's async pool: an ASGI server's loop never waits on a socket here
            new: int | Exception = await self._ledger.aadjust_with_events(
                write.hold, write.used, self._reporter.outbox, write.events
            )
        except Exception as exc:
            new = exc
        self._joined(write, new)

    def _write(self, usage: Usage, owed: Bill) -> Write:
        """The joint write of ``owed``: its debit and its events."""
        return Write(owed.hold, owed.used, self._events(usage, owed))

    def _joined(self, write: Write, new: int | Exception) -> None:
        if isinstance(new, Exception):
            self._tally["outbox_errors"] += 1
            self._journal.keep(write, new)
            return
        assert self._reporter is not None  # a ledger joins only the reporter's outbox
        self._reporter.notify(new)

    def queue(self, usage: Usage, owed: Bill) -> None:
        """Queue the batch events of ``owed`` in the outbox (not a joint write); journaled if that fails."""
        if not owed.batch or usage.allow is None or self._reporter is None:
            return
        events = self._events(usage, owed)
        if not events:
            return
        try:
            self._reporter.enqueue(events, strict=False)
        except Exception as exc:
            self._tally["outbox_errors"] += 1
            self._journal.keep(Write(None, {}, events), exc)

    async def aqueue(self, usage: Usage, owed: Bill) -> None:
        """:meth:`queue` from an event loop: an outbox write that would wait for a lock waits in a thread."""
        if not owed.batch or usage.allow is None or self._reporter is None:
            return
        events = self._events(usage, owed)
        if not events:
            return
        try:
            self._reporter.notify(await self._reporter.outbox.aadd(events, strict=False))
        except Exception as exc:
            self._tally["outbox_errors"] += 1
            self._journal.keep(Write(None, {}, events), exc)

    def _events(self, usage: Usage, owed: Bill) -> list[Event]:
        """The batch events of ``owed``; none (logged with the amounts) if they cannot be made, which
        only a bug would cause: every part of them was validated before the request was served."""
        assert usage.allow is not None
        try:
            return events_for(usage.allow, owed.batch)
        except Exception:
            self._tally["outbox_errors"] += 1
            log.exception("zc_middleware: could not make the batch events of %s: %s", usage.allow.buyer, owed.batch)
            return []
