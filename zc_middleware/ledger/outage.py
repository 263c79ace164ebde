"""One log line when a store stops answering and one when it answers again, not one per request.

During an outage every paid request fails its ledger call; logging each would
flood the log at the request rate just when an operator reads it. The first
failure is logged as an ERROR with its cause and what requests get meanwhile;
later ones only at DEBUG. Every failure is counted (``ledger_errors`` in the
Gate's stats). The first call that succeeds again logs a WARNING with how many
failed and for how long. Each process keeps its own state, so a server with several
workers logs once per worker.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from urllib.parse import urlsplit, urlunsplit

__all__ = ["Outage"]

log = logging.getLogger("zc_middleware")


class Outage:
    """The ledger's availability as this process saw it. :attr:`down` is a plain attribute, so the
    request path checks it for free; :meth:`failed` and :meth:`ended` change it under a lock."""

    def __init__(self, url: str, policy: str, tally: Counter[str]) -> None:
        self.url = shown(url)
        self.policy = policy
        self.tally = tally
        #: True from the first failed call until a call succeeds again
        self.down = False
        self._failures = 0
        self._since = 0.0
        self._lock = threading.Lock()

    def failed(self, error: BaseException) -> None:
        """A ledger call failed with ``error``: logged as an ERROR if the store was answering until now."""
        with self._lock:
            self.tally["ledger_errors"] += 1
            self._failures += 1
            if self.down:
                log.debug("zc_middleware: ledger %s still unavailable (%s: %s)", self.url, type(error).__name__, error)
                return
            self.down, self._since, self._failures = True, time.monotonic(), 1
        meanwhile = "are served unchecked" if self.policy == "allow" else "answer 503 ledger_unavailable"
        log.error(
            "zc_middleware: ledger %s unavailable (%s: %s); paid requests %s until it answers again, "
            "further failures are counted in stats, not logged",
            self.url,
            type(error).__name__,
            error,
            meanwhile,
        )

    def ended(self) -> None:
        """A ledger call succeeded while :attr:`down`: logged once as a WARNING."""
        with self._lock:
            if not self.down:
                return
            self.down = False
            failures, seconds = self._failures, time.monotonic() - self._since
        log.warning(
            "zc_middleware: ledger %s answers again after %d failed calls in %.1f s", self.url, failures, seconds
        )


def shown(url: str) -> str:
    """``url`` with any password replaced by ``***``: log lines are read by more people than settings."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
    except ValueError:
        return url.split("://", 1)[0] + "://***"
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))
