"""What the journal keeps and how a line of it reads: the :class:`Write` record and its checksummed JSON.

Each line of a journal file is ``<crc32 hex> <json>``: an entry (a hold to move to ``used`` and the
bodies of batch events, under an id) or a ``done`` mark naming an entry that applied. A line whose
checksum does not match (a torn last line) is skipped when the file is read back.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .ledger import Hold
from .outbox import Event

if TYPE_CHECKING:
    from ._journal_files import JournalFile


@dataclass(eq=False)
class Write:
    """One failed write: a hold to move to ``used`` (``None``: none) and batch events to queue."""

    hold: Hold | None
    used: Mapping[str, int]
    events: Sequence[Event] = ()
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    #: the debit applied; only the events are left
    hold_done: bool = False
    attempts: int = 0
    file: JournalFile | None = None

    def describe(self) -> str:
        """What this write moves, for a log line: the buyer, the amounts and the events' bodies."""
        hold = "" if self.hold is None else f"hold {self.hold.debits} of {self.hold.buyer} -> used {dict(self.used)}"
        events = f" events {[e.body for e in self.events]}" if self.events else ""
        return f"{hold}{events}".strip()


def encode(write: Write) -> dict[str, Any]:
    hold: dict[str, Any] | None = None
    if write.hold is not None:
        hold = {f.name: getattr(write.hold, f.name) for f in dataclasses.fields(write.hold)}
    return {"id": write.id, "hold": hold, "used": dict(write.used), "events": [e.body for e in write.events]}


def decode(entry: Mapping[str, Any]) -> Write:
    hold: Hold | None = None
    if entry.get("hold") is not None:
        fields = dict(entry["hold"])
        fields["debits"] = tuple((m, int(a), float(s)) for m, a, s in fields["debits"])
        if "leases" in fields:  # a Redis hold: its driver is loaded, since the ledger is that one
            from .ledger.redis import RedisHold

            hold = RedisHold(fields["buyer"], fields["debits"], tuple(fields["leases"]))
        else:
            hold = Hold(fields["buyer"], fields["debits"])
    events = tuple(_event(body) for body in entry.get("events", ()))
    return Write(hold, {str(m): int(q) for m, q in entry.get("used", {}).items()}, events, str(entry["id"]))


def _event(body: str) -> Event:
    """The event a journaled body is: already validated when it was first made."""
    payload = json.loads(body)
    return Event(
        payload["userId"],
        payload["meter"],
        int(payload["quantity"]),
        payload["timestamp"],
        key=payload["idempotencyKey"],
        body=body,
        explicit_time=True,
    )


def line(record: Mapping[str, Any]) -> bytes:
    """One journal line: the CRC-32 of the JSON, then the JSON."""
    text = json.dumps(record, separators=(",", ":")).encode()
    return b"%08x %s\n" % (zlib.crc32(text), text)


def parse(data: bytes) -> tuple[list[dict[str, Any]], set[str]]:
    """The entries of a journal file and the ids marked done; lines that fail their checksum are skipped."""
    entries: list[dict[str, Any]] = []
    done: set[str] = set()
    for raw in data.split(b"\n"):
        crc, _, text = raw.partition(b" ")
        try:
            if int(crc, 16) != zlib.crc32(text):
                continue
            record = json.loads(text)
        except ValueError:
            continue  # a torn or garbled line
        if not isinstance(record, dict):
            continue
        if "done" in record:
            done.add(str(record["done"]))
        else:
            entries.append(record)
    return entries, done
