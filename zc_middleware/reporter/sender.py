"""The sender: one background thread per process leases batches from the outbox and delivers them.

Shaped like sentry's ``_batcher.py``: the thread starts lazily on first use and
again in a forked child (gunicorn ``--preload``), is woken early when a full
batch is waiting, and ``flush()``/``close()`` finish within a bounded time.
Delivering one batch is :mod:`.delivery`'s job.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import datetime

import httpx

from ..errors import ConfigError
from ..outbox import Event, Outbox, make_event
from .contract import check_http_url
from .delivery import Delivery
from .lifecycle import track
from .owner import new_owner, owner_gone

__all__ = ["Reporter"]

log = logging.getLogger("zc_middleware")


class Reporter:
    """The per-process sender for one outbox and one API key.

    ``counters`` holds what happened: ``queued`` (new events stored), ``sent``,
    ``retried`` (events put back after a failed call), ``dead``, ``auth_failures``.
    """

    def __init__(
        self,
        outbox: Outbox,
        *,
        api_key: str,
        base_url: str = "https://pay.zeroclick.io",
        known_meters: Iterable[str] | None = None,
        batch_size: int = 1000,
        flush_interval: float = 1.0,
        timeout: float = 10.0,
        backoff: float = 0.5,
        backoff_max: float = 60.0,
        shutdown_timeout: float = 5.0,
        lease_ttl: float | None = None,
        retention: float = 7 * 86400.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if not 1 <= batch_size <= 1000:
            raise ConfigError("invalid_batch_size", f"batch_size must be 1 to 1000, got {batch_size}")
        self.outbox = outbox
        self.url = check_http_url("base_url", base_url).rstrip("/") + "/v1/usage/batch"
        self.known_meters = None if known_meters is None else frozenset(known_meters)
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.timeout = timeout
        self.shutdown_timeout = shutdown_timeout
        self.lease_ttl = lease_ttl if lease_ttl is not None else max(60.0, 4 * timeout)
        self.retention = retention
        self.counters: Counter[str] = Counter()
        self._counters_lock = threading.Lock()
        self._delivery = Delivery(
            outbox,
            url=self.url,
            api_key=api_key,
            backoff=backoff,
            backoff_max=backoff_max,
            count=self._count,
            transport=transport,
        )
        self._reset()
        track(self)

    def _reset(self) -> None:
        """Forget this process's thread, client and locks (fresh after ``fork``)."""
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        self._stopping = False
        self._pause_until = 0.0
        self._backlog = 0
        self._next_prune = 0.0
        self.owner = new_owner()
        self._delivery.reset(self.owner)

    def __repr__(self) -> str:  # the key never appears here
        return f"<Reporter {self.url} owner={self.owner}>"

    def _count(self, name: str, n: int = 1) -> None:
        with self._counters_lock:
            self.counters[name] += n

    # -- accepting usage ------------------------------------------------------
    def report(
        self,
        *,
        user_id: str,
        meter: str,
        quantity: int,
        idempotency_key: str,
        timestamp: datetime | None = None,
    ) -> bool:
        """Store one event durably, then wake the sender; ``False`` when the key was already stored."""
        event = make_event(
            user_id=user_id,
            meter=meter,
            quantity=quantity,
            idempotency_key=idempotency_key,
            timestamp=timestamp,
            known_meters=self.known_meters,
        )
        return self.enqueue([event]) == 1

    def enqueue(self, events: Sequence[Event], *, strict: bool = True) -> int:
        """Store ``events`` (see :meth:`Outbox.add`) and make sure a sender will pick them up."""
        new = self.outbox.add(events, strict=strict)
        self.notify(new)
        return new

    def notify(self, new: int) -> None:
        """``new`` events were stored (perhaps by someone else's transaction): start or wake the sender."""
        if new:
            self._count("queued", new)
            self._backlog += new
        self._ensure_thread()
        if self._backlog >= self.batch_size:
            self._wake.set()

    # -- the background thread ----------------------------------------------------
    def start(self) -> None:
        """Start the sender now (it also starts on the first event); resumes what a previous run left."""
        self._ensure_thread()

    def _ensure_thread(self) -> None:
        if self._pid != os.getpid():  # forked without the at-fork hook having run (should not happen)
            self._reset()
        thread = self._thread
        if thread is not None and thread.is_alive():
            return
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._stopping = False
            try:
                reclaimed = self.outbox.reclaim(owner_gone)
            except Exception:
                log.exception("zc_middleware: could not reclaim leases of dead senders")
                reclaimed = 0
            if reclaimed:
                log.info("zc_middleware: resuming %d usage events a killed sender had in flight", reclaimed)
            self._thread = threading.Thread(target=self._run, name="zc-usage-sender", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stopping:
            pause = self._pause_until - time.monotonic()
            if pause > 0:
                self._wake.wait(pause)
                self._wake.clear()
                continue
            try:
                full = self._send_one(self.timeout)
                self._maybe_prune()
            except Exception:
                log.exception("zc_middleware: the usage sender failed; retrying in %.1fs", self.flush_interval)
                full = False
            if full and not self._stopping:
                continue
            if self._pause_until <= time.monotonic():
                self._wake.wait(self.flush_interval)
            self._wake.clear()

    def _maybe_prune(self) -> None:
        now = time.monotonic()
        if now >= self._next_prune:
            self._next_prune = now + 3600
            self.outbox.prune(time.time() - self.retention)

    # -- one batch ----------------------------------------------------------------
    def _send_one(self, timeout: float) -> bool:
        """Lease and deliver one batch; ``True`` when it was full and delivered (more may wait)."""
        with self._send_lock:
            rows = self.outbox.lease(self.owner, self.batch_size, self.lease_ttl)
            if not rows:
                self._backlog = 0
                return False
            self._backlog = max(0, self._backlog - len(rows))
            delay = self._delivery.deliver(rows, timeout)
        if delay is not None:
            self._pause_until = time.monotonic() + delay
            return False
        return len(rows) == self.batch_size

    # -- shutdown -------------------------------------------------------------------
    def flush(self, timeout: float | None = None) -> bool:
        """Send what is due now, in this thread, for at most ``timeout`` seconds; ``True`` if nothing is pending."""
        deadline = time.monotonic() + (self.shutdown_timeout if timeout is None else timeout)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            pause = self._pause_until - time.monotonic()
            if pause > 0:
                if pause >= left:
                    break
                time.sleep(pause)
                continue
            try:
                full = self._send_one(min(self.timeout, left))
            except Exception:
                log.exception("zc_middleware: flushing usage failed")
                break
            if not full and self._pause_until <= time.monotonic():
                break
        return self.outbox.status(dead_limit=0).pending == 0

    def close(self, timeout: float | None = None) -> bool:
        """Stop the thread and deliver what is left within ``timeout`` (default ``shutdown_timeout``).

        Undelivered events stay in the outbox for the next run. The reporter may still be used
        afterwards: the next event starts a new thread.
        """
        budget = self.shutdown_timeout if timeout is None else timeout
        deadline = time.monotonic() + budget
        self._stopping = True
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(max(0.0, deadline - time.monotonic()))
        self._thread = None
        try:
            done = self.flush(max(0.0, deadline - time.monotonic()))
        except Exception:
            log.exception("zc_middleware: could not flush usage at shutdown")
            done = False
        if not done:
            log.warning("zc_middleware: usage events are still pending at shutdown; the next run sends them")
        self._delivery.close()
        return done
