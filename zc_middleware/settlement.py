"""What a finished paid request bills: the debit that settles its hold, and its batch events.

Pure steps, shared by :meth:`Gate.finish` and :meth:`Gate.afinish`; only the
ledger and outbox calls around them are written twice.

Usage leaves by one channel per meter per action: header-channel meters in
``X-ZeroClick-Usage``, batch-channel meters as events in the outbox, keyed
``{request id}:{meter}`` (the proxy's ``zc-request-id``, else a generated id)
so a retried settle cannot bill twice. A header meter's usage recorded after
the header went out (streams, server-sent events) is only the *remainder*
beyond what the header said, and it is queued as a batch event for that
request instead of being lost; no unit is ever reported by both channels.
"""

from __future__ import annotations

import hashlib
import re
import time
import uuid
from collections.abc import Mapping
from typing import NamedTuple

from .decision import Allow
from .ledger import Hold
from .outbox import MAX_KEY, Event, make_event
from .usage import Usage

__all__ = ["Bill", "bill", "events_for"]

_REQUEST_ID = re.compile(r"[\x21-\x7e]{1,200}")


class Bill(NamedTuple):
    """What to write for one finished request."""

    #: the hold to move, or ``None`` when there is nothing to write to the ledger
    hold: Hold | None
    #: what the hold becomes (``{}`` releases it)
    used: Mapping[str, int]
    #: batch-channel quantities to queue as events
    batch: Mapping[str, int]
    #: ``(meter, used, checked)`` for each meter used past what was checked beforehand
    over: tuple[tuple[str, int, int], ...] = ()
    #: header meters recorded after the header went out: the part the header did not say
    late: Mapping[str, int] = {}


#: a request already settled, or one whose hold already is its bill: nothing to write
NOTHING = Bill(None, {}, {})


def bill(usage: Usage, success: bool, batch_meters: frozenset[str], late_to_batch: bool) -> Bill:
    """What a finished request whose hold must be written bills: on a failure, the hold released; on
    a success, the counted usage (batch meters as events, and with ``late_to_batch`` the late header
    usage too). The Gate calls it only when there is something to write (see :meth:`Gate.finish`)."""
    allow = usage.allow
    hold = allow.hold if allow is not None else None
    if not success:
        return Bill(hold, {}, {})
    used = dict(usage.values)
    holds = usage.holds
    over = tuple((m, q, holds[m]) for m, q in used.items() if q > holds[m])
    batch = {m: q for m, q in used.items() if m in batch_meters and q}
    late: dict[str, int] = {}
    if usage.reported is not None:
        late = {m: used[m] - q for m, q in usage.reported.items() if used[m] > q}
        if late_to_batch:
            batch.update(late)  # header meters: disjoint from the batch meters above
    return Bill(hold, used, batch, over, late)


def events_for(allow: Allow, batch: Mapping[str, int]) -> list[Event]:
    """The batch events of one request, keyed so that a retried settle queues the same keys."""
    request = _request_key(allow.request_id)
    now = time.time()
    return [
        make_event(
            user_id=allow.buyer, meter=m, quantity=q, idempotency_key=_event_key(request, m), clock=lambda: now
        )
        for m, q in batch.items()
    ]


def _request_key(request_id: str | None) -> str:
    if request_id is None:
        return f"zc-{uuid.uuid4().hex}"
    if _REQUEST_ID.fullmatch(request_id):
        return request_id
    return _digest(request_id)


def _digest(text: str) -> str:
    return "sha256-" + hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()


def _event_key(request: str, meter: str) -> str:
    """``{request id}:{meter}``, or its digest when a long request id and a long meter name would
    pass the batch API's limit on keys (the same request and meter always give the same key)."""
    key = f"{request}:{meter}"
    return key if len(key) <= MAX_KEY else _digest(key)
