"""Ledgers by URL: one table of schemes, each driver imported only when its scheme is used."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .._schemes import load, scheme_of
from .base import BUYER_ID, Balance, Hold, Ledger, MeterBalance, Refusal, check_buyer_id

__all__ = [
    "BUYER_ID",
    "SCHEMES",
    "Balance",
    "Hold",
    "Ledger",
    "MeterBalance",
    "Refusal",
    "check_buyer_id",
    "check_url",
    "open_ledger",
]

#: scheme -> "module:Class"
SCHEMES: dict[str, str] = {
    "memory": "zc_middleware.ledger.memory:MemoryLedger",
    "sqlite": "zc_middleware.ledger.sqlite:SQLiteLedger",
}


def check_url(url: str) -> str:
    """Return the URL's scheme, or raise :class:`ConfigError` naming the known ones."""
    return scheme_of(url, SCHEMES, "ledger")


def open_ledger(url: str, *, plans: Mapping[str, Any], **kwargs: Any) -> Ledger:
    """Open the ledger ``url`` points to (``memory://``, ``sqlite:///path.db``)."""
    ledger: Ledger = load(SCHEMES, check_url(url))(url, plans=plans, **kwargs)
    return ledger
