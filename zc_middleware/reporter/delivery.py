"""One batch on the wire: post it, then mark it sent, put it back, or dead-letter and bisect, as the answer says.

The post is the only I/O here; what an answer means is decided by
:func:`.contract.interpret`.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Sequence

import httpx

from ..outbox import Leased, Outbox
from .contract import Action, Deliver, Misconfigured, Reject, build_batch, interpret, unreachable

__all__ = ["Delivery"]

log = logging.getLogger("zc_middleware")


class Delivery:
    """Delivers leased rows for one sender, under the lease owner given by :meth:`reset`.

    ``count(name, n)`` adds to the reporter's counters.
    """

    def __init__(
        self,
        outbox: Outbox,
        *,
        url: str,
        api_key: str,
        backoff: float,
        backoff_max: float,
        count: Callable[[str, int], None],
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.outbox = outbox
        self.url = url
        self.backoff = backoff
        self.backoff_max = backoff_max
        self._api_key = api_key
        self._count = count
        self._transport = transport
        self.reset("")

    def reset(self, owner: str) -> None:
        """Start afresh in this process (after ``fork``), leasing as ``owner``.

        The parent's HTTP client is dropped, not closed: its connections are the parent's.
        """
        self.owner = owner
        self._client: httpx.Client | None = None
        self._failures = 0

    def close(self) -> None:
        """Close the HTTP client; the next delivery opens a new one."""
        if self._client is not None:
            self._client.close()
            self._client = None

    def deliver(self, rows: Sequence[Leased], timeout: float) -> float | None:
        """Send ``rows`` as one batch; returns the pause before the next call after a retryable failure."""
        action = self._post(rows, timeout)
        ids = [row.id for row in rows]
        if isinstance(action, Deliver):
            self.outbox.delivered(self.owner, ids)
            self._failures = 0
            self._count("sent", len(ids))
            return None
        if isinstance(action, Misconfigured):
            self._count("auth_failures", 1)
            log.error(
                "zc_middleware: ZeroClick %s %s (HTTP %d): check api_key / ZEROCLICK_API_KEY and api_base_url. "
                "%d usage events are kept in the outbox and will be sent once this is fixed.",
                action.what,
                self.url,
                action.status,
                len(ids),
            )
            self.outbox.retry(self.owner, ids, self.backoff_max, count=False)
            return self.backoff_max
        if isinstance(action, Reject):
            return self._rejected(rows, action.reason, timeout)
        return self._retry(ids, self._backoff(action.after), action.why)

    def _post(self, rows: Sequence[Leased], timeout: float) -> Action:
        """The one network step: send ``rows`` as one batch, and what the answer means."""
        body = build_batch(row.body for row in rows)
        try:
            response = self._client_for().post(self.url, content=body, timeout=timeout)
        except httpx.TransportError as exc:
            return unreachable(exc)
        return interpret(response.status_code, response.headers, response.text, phrase=response.reason_phrase)

    def _client_for(self) -> httpx.Client:
        if self._client is None:
            self._client = httpx.Client(
                transport=self._transport,
                headers={
                    "authorization": f"Bearer {self._api_key}",
                    "content-type": "application/json",
                    "user-agent": "zc-middleware",
                },
            )
        return self._client

    def _backoff(self, hint: float | None) -> float:
        # Full jitter (senders that failed together must not retry together); Retry-After is a floor.
        self._failures += 1
        delay = random.uniform(0, min(self.backoff_max, self.backoff * 2 ** min(self._failures, 30)))
        return delay if hint is None else max(delay, hint)

    def _retry(self, ids: Sequence[int], delay: float, why: str) -> float:
        log.warning("zc_middleware: usage batch of %d not delivered (%s); retrying in %.2fs", len(ids), why, delay)
        self.outbox.retry(self.owner, ids, delay)
        self._count("retried", len(ids))
        return delay

    def _rejected(self, rows: Sequence[Leased], reason: str, timeout: float) -> float | None:
        if len(rows) == 1:
            log.error("zc_middleware: usage event %r rejected, moved to dead letters: %s", rows[0].key, reason)
            self.outbox.dead(self.owner, [(rows[0].id, reason)])
            self._count("dead", 1)
            return None
        # Bisect: the good events go through, the bad ones end alone in the dead letters.
        mid = len(rows) // 2
        halves = [rows[:mid], rows[mid:]]
        for i, half in enumerate(halves):
            delay = self.deliver(half, timeout)
            if delay is not None:
                rest = [row.id for later in halves[i + 1 :] for row in later]
                if rest:
                    self.outbox.retry(self.owner, rest, delay, count=False)
                return delay
        return None
