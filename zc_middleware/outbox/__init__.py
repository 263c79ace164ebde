"""Outboxes by URL: one table of schemes, each driver imported only when its scheme is used.

An outbox is the durable queue between "usage accepted" and "usage delivered to
the batch API". ``memory://`` is for tests (a process crash loses it);
``sqlite:///path.db`` survives crashes and is shared by every process on the host.
"""

from __future__ import annotations

from typing import Any

from .._schemes import load, scheme_of
from .base import MAX_KEY, Event, Leased, Outbox, OutboxStatus, make_event

__all__ = ["MAX_KEY", "SCHEMES", "Event", "Leased", "Outbox", "OutboxStatus", "check_url", "make_event", "open_outbox"]

#: scheme -> "module:Class"
SCHEMES: dict[str, str] = {
    "memory": "zc_middleware.outbox.memory:MemoryOutbox",
    "sqlite": "zc_middleware.outbox.sqlite:SQLiteOutbox",
}


def check_url(url: str) -> str:
    """Return the URL's scheme, or raise :class:`ConfigError` naming the known ones."""
    return scheme_of(url, SCHEMES, "outbox")


def open_outbox(url: str, **kwargs: Any) -> Outbox:
    """Open the outbox ``url`` points to (``memory://``, ``sqlite:///path.db``)."""
    outbox: Outbox = load(SCHEMES, check_url(url))(url, **kwargs)
    return outbox
