"""Ledgers by URL: one table of schemes, each driver imported only when its scheme is used."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from ..errors import ConfigError
from .base import Balance, Hold, Ledger, MeterBalance, Refusal

__all__ = ["SCHEMES", "Balance", "Hold", "Ledger", "MeterBalance", "Refusal", "check_url", "open_ledger"]

#: scheme -> "module:Class"
SCHEMES: dict[str, str] = {
    "memory": "zc_middleware.ledger.memory:MemoryLedger",
    "sqlite": "zc_middleware.ledger.sqlite:SQLiteLedger",
}


def check_url(url: str) -> str:
    """Return the URL's scheme, or raise :class:`ConfigError` naming the known ones."""
    scheme = urlsplit(url).scheme
    if scheme not in SCHEMES:
        known = ", ".join(f"{s}://" for s in SCHEMES)
        raise ConfigError("unknown_ledger", f"unknown ledger URL {url!r}: expected one of {known}")
    if scheme == "sqlite":
        from .sqlite import sqlite_path

        sqlite_path(url)
    return scheme


def open_ledger(url: str, *, plans: Mapping[str, Any], **kwargs: Any) -> Ledger:
    """Open the ledger ``url`` points to (``memory://``, ``sqlite:///path.db``)."""
    module, _, name = SCHEMES[check_url(url)].partition(":")
    cls = getattr(importlib.import_module(module), name)
    ledger: Ledger = cls(url, plans=plans, **kwargs)
    return ledger
