"""The one bound on the per-process caches: priced routes, stacked views, the SQLite ledger's reused holds."""

from __future__ import annotations

from typing import TypeVar

__all__ = ["SIZE", "remember"]

K = TypeVar("K")
V = TypeVar("V")

#: entries a cache keeps before it starts again: routes and views are few, so reaching it means keys
#: that never repeat (paths with ids in them); starting again keeps memory flat without an LRU's cost
SIZE = 4096


def remember(cache: dict[K, V], key: K, value: V) -> V:
    """Store ``value`` under ``key`` in ``cache``, emptied first when it holds :data:`SIZE` entries."""
    if len(cache) >= SIZE:
        cache.clear()
    cache[key] = value
    return value
