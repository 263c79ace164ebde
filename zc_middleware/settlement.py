"""What a finished paid request bills: the debit that settles its hold, and its batch events.

Pure steps, shared by :meth:`Gate.finish` and :meth:`Gate.afinish`; only the
ledger and outbox calls around them are written twice.

A meter's hold is its ceiling: usage recorded beyond it is billed at the
hold (``over_estimate="cap"``), or, with ``over_estimate="bill"``, the excess
is debited apart and only if the plan still covered it (the Gate asks the
ledger first and hands :func:`bill` what was granted), so a buyer's ``used``
never passes the plan's limit.

Usage leaves by one channel per meter per action: header-channel meters in
``X-ZeroClick-Usage``, batch-channel meters as events in the outbox, keyed
``{buyer}:{request id}:{meter}`` (the proxy's ``zc-request-id``, else a
generated id) so a retried settle cannot bill twice and two buyers never share
a key. A header meter's usage billed beyond what the header said (recorded
after it went out on streams, or an excess debited after it) is only the
*remainder*, queued as a batch event for that request instead of being lost;
no unit is ever reported by both channels.
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

__all__ = ["NOTHING", "NO_EXTRA", "Bill", "bill", "events_for", "excess"]

#: a request id used as it is in keys: printable, no colon (so ``{buyer}:{request}:{meter}`` reads one
#: way only, from the right) and not a digest's shape; any other is digested
_REQUEST_ID = re.compile(r"(?!sha256-)[\x21-\x39\x3b-\x7e]{1,200}")


class Bill(NamedTuple):
    """What to write for one finished request."""

    #: the hold to move, or ``None`` when there is nothing to write to the ledger
    hold: Hold | None
    #: what the hold becomes (``{}`` releases it); never more than the hold, meter by meter
    used: Mapping[str, int]
    #: batch-channel quantities to queue as events
    batch: Mapping[str, int]
    #: ``(meter, recorded, checked)`` for each meter recorded past what was checked beforehand
    over: tuple[tuple[str, int, int], ...] = ()
    #: billed beyond what the header said: header meters recorded after it went out, and excess
    late: Mapping[str, int] = {}
    #: the excess beyond the hold that was debited apart (``over_estimate="bill"``)
    extra: Mapping[str, int] = {}


#: a request already settled, or one whose hold already is its bill: nothing to write
NOTHING = Bill(None, {}, {})
#: nothing debited past the holds
NO_EXTRA: Mapping[str, int] = {}


def excess(usage: Usage) -> dict[str, int]:
    """``{meter: units recorded beyond the hold}``, for the meters recorded past it."""
    holds = usage.holds
    return {m: q - holds[m] for m, q in usage.values.items() if q > holds[m]}


def bill(
    usage: Usage,
    success: bool,
    batch_meters: frozenset[str],
    late_to_batch: bool,
    extra: Mapping[str, int] = NO_EXTRA,
) -> Bill:
    """What a finished request whose hold must be written bills: on a failure, the hold released; on
    a success, the counted usage capped at the hold, plus ``extra`` (the excess the ledger already
    debited apart): batch meters as events, and with ``late_to_batch`` what the usage header did not
    say too. The Gate calls it only when there is something to write (see :meth:`Gate.finish`)."""
    allow = usage.allow
    hold = allow.hold if allow is not None else None
    if not success:
        return Bill(hold, {}, {})
    used = billed = usage.values
    holds = usage.holds
    over = tuple((m, q, holds[m]) for m, q in used.items() if q > holds[m])
    if over:
        used = {m: min(q, holds[m]) for m, q in used.items()}
        billed = {m: q + extra.get(m, 0) for m, q in used.items()}
    batch = {m: q for m, q in billed.items() if m in batch_meters and q}
    late: dict[str, int] = {}
    if usage.reported is not None:
        late = {m: billed[m] - q for m, q in usage.reported.items() if billed[m] > q}
        if late_to_batch:
            batch.update(late)  # header meters: disjoint from the batch meters above
    return Bill(hold, used, batch, over, late, extra)


def events_for(allow: Allow, batch: Mapping[str, int]) -> list[Event]:
    """The batch events of one request, keyed so that a retried settle queues the same keys."""
    request = f"{allow.buyer}:{_request_key(allow.request_id)}"
    now = time.time()
    return [
        make_event(user_id=allow.buyer, meter=m, quantity=q, idempotency_key=_event_key(request, m), clock=lambda: now)
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
    """``{buyer}:{request id}:{meter}``, or its digest when a long buyer id, request id and meter name
    would pass the batch API's limit on keys (the same buyer, request and meter always give the
    same key, and two buyers never the same one)."""
    key = f"{request}:{meter}"
    return key if len(key) <= MAX_KEY else _digest(key)
