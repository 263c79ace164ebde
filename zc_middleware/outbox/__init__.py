"""Outboxes by URL: the durable queue between "usage accepted" and "usage delivered to the batch API".

``memory://`` is for tests (a process crash loses it); ``sqlite:///path.db``
survives crashes and is shared by every process on the host; ``postgresql://``
is shared by every host. Each driver
declares its schemes and is imported only when a URL with one of them is
opened (:mod:`zc_middleware.stores`).
"""

from __future__ import annotations

from typing import Any

from .. import stores
from .base import MAX_KEY, Event, Leased, Outbox, OutboxStatus, make_event

__all__ = ["MAX_KEY", "Event", "Leased", "Outbox", "OutboxStatus", "check_url", "make_event", "open_outbox"]


def check_url(url: str) -> str:
    """Return the URL's scheme, or raise :class:`ConfigError` naming the known ones."""
    return stores.check_url(Outbox.kind, url)


def open_outbox(url: str, *, create: bool = True, **kwargs: Any) -> Outbox:
    """Open the outbox ``url`` points to (``memory://``, ``sqlite:///path.db``). A file that cannot
    be used is a :class:`ConfigError` naming ``settings.outbox`` and the path; with ``create=False``
    a missing file is one too (``no_outbox``) instead of a new, empty outbox."""
    return Outbox.driver(url)(url, create=create, **kwargs)
