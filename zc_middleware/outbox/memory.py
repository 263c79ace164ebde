"""``memory://``: an outbox in this process's memory, for tests and development.

Same semantics as the SQLite outbox, but a crash loses what it holds.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .base import DeadLetter, Event, Leased, Outbox, OutboxStatus, conflict, log_conflict

__all__ = ["MemoryOutbox"]

PENDING, SENT, DEAD = 0, 1, 2


@dataclass(slots=True)
class _Row:
    id: int
    event: Event
    created: float
    state: int = PENDING
    next_at: float = 0.0
    attempts: int = 0
    owner: str | None = None
    lease_until: float = 0.0
    reason: str | None = None
    done_at: float = 0.0


class MemoryOutbox(Outbox):
    """``memory://``: usage events in this process only, for tests (a crash loses them)."""

    schemes = ("memory",)

    def __init__(self, url: str = "memory://", **kwargs: Any) -> None:
        super().__init__(url, **kwargs)
        self._lock = threading.Lock()
        self._by_key: dict[str, _Row] = {}
        self._pending: dict[int, _Row] = {}  # insertion (= id) order
        self._next_id = 1
        self._conflicts = 0  # counted only: the durable outboxes keep them, this one lives with the process

    def add(self, events: Sequence[Event], *, strict: bool = True) -> int:
        now = self.clock()
        with self._lock:
            fresh: dict[str, Event] = {}
            refused: list[tuple[Event, str]] = []
            for event in events:
                row = self._by_key.get(event.key)
                seen = row.event if row is not None else fresh.get(event.key)
                if seen is None:
                    fresh[event.key] = event
                elif not event.same_as(seen.user_id, seen.meter, seen.quantity, seen.timestamp):
                    if strict:
                        raise conflict(event)
                    refused.append((event, seen.body))
            for event, stored in refused:
                log_conflict(event, stored)
                self._conflicts += 1
            for event in fresh.values():
                row = _Row(self._next_id, event, now)
                self._next_id += 1
                self._by_key[event.key] = row
                self._pending[row.id] = row
            return len(fresh)

    def lease(self, owner: str, limit: int, ttl: float) -> list[Leased]:
        now = self.clock()
        out: list[Leased] = []
        with self._lock:
            for row in self._pending.values():
                if len(out) >= limit:
                    break
                if row.next_at <= now and (row.owner is None or row.lease_until <= now):
                    row.owner, row.lease_until = owner, now + ttl
                    out.append(Leased(row.id, row.event.key, row.event.body, row.attempts))
        return out

    def _owned(self, owner: str, ids: Sequence[int]) -> list[_Row]:
        rows = (self._pending.get(i) for i in ids)
        return [row for row in rows if row is not None and row.owner == owner]

    def delivered(self, owner: str, ids: Sequence[int]) -> None:
        now = self.clock()
        with self._lock:
            for row in self._owned(owner, ids):
                row.state, row.owner, row.done_at = SENT, None, now
                del self._pending[row.id]

    def retry(self, owner: str, ids: Sequence[int], delay: float, *, count: bool = True) -> None:
        now = self.clock()
        with self._lock:
            for row in self._owned(owner, ids):
                row.owner, row.next_at = None, now + delay
                row.attempts += count

    def dead(self, owner: str, failures: Sequence[tuple[int, str]]) -> None:
        now = self.clock()
        reasons = dict(failures)
        with self._lock:
            for row in self._owned(owner, list(reasons)):
                row.state, row.owner, row.reason, row.done_at = DEAD, None, reasons[row.id], now
                row.attempts += 1
                del self._pending[row.id]

    def reclaim(self, is_gone: Callable[[str], bool]) -> int:
        with self._lock:
            rows = [r for r in self._pending.values() if r.owner is not None and is_gone(r.owner)]
            for row in rows:
                row.owner = None
            return len(rows)

    def status(self, *, dead_limit: int = 20) -> OutboxStatus:
        with self._lock:
            rows = list(self._by_key.values())
        pending = [r for r in rows if r.state == PENDING]
        dead = sorted((r for r in rows if r.state == DEAD), key=lambda r: r.id)
        return OutboxStatus(
            pending=len(pending),
            oldest_pending=min((r.created for r in pending), default=None),
            sent=sum(r.state == SENT for r in rows),
            dead=len(dead),
            dead_letters=tuple(DeadLetter(r.event.key, r.reason or "", r.done_at, r.event.body) for r in dead)[
                :dead_limit
            ],
            conflicts=self._conflicts,
        )

    def retry_dead(self) -> int:
        with self._lock:
            dead = sorted((r for r in self._by_key.values() if r.state == DEAD), key=lambda r: r.id)
            for row in dead:
                row.state, row.reason, row.next_at, row.attempts = PENDING, None, 0.0, 0
                self._pending[row.id] = row
            self._pending = dict(sorted(self._pending.items()))
            return len(dead)

    def prune(self, before: float) -> int:
        with self._lock:
            old = [k for k, r in self._by_key.items() if r.state == SENT and r.done_at < before]
            for key in old:
                del self._by_key[key]
            return len(old)
