"""Ledgers by URL: ``memory://`` for tests, ``sqlite:///path.db`` for one host, ``redis://``/``postgresql://`` for many.

Each driver declares its schemes and is imported only when a URL with one of
them is opened (:mod:`zc_middleware.stores`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .. import stores
from .balance import Balance, MeterBalance
from .base import BUYER_ID, Hold, Ledger, check_buyer_id
from .entitlements import Change, Entitlement, Outcome
from .rules import Refusal

__all__ = [
    "BUYER_ID",
    "Balance",
    "Change",
    "Entitlement",
    "Hold",
    "Ledger",
    "MeterBalance",
    "Outcome",
    "Refusal",
    "check_buyer_id",
    "check_url",
    "open_ledger",
]


def check_url(url: str) -> str:
    """Return the URL's scheme, or raise :class:`ConfigError` naming the known ones."""
    return stores.check_url(Ledger.kind, url)


def open_ledger(url: str, *, plans: Mapping[str, Any], create: bool = True, **kwargs: Any) -> Ledger:
    """Open the ledger ``url`` points to (``memory://``, ``sqlite:///path.db``). A file that cannot
    be used is a :class:`ConfigError` naming ``settings.ledger`` and the path; with ``create=False``
    a missing file is one too (``no_ledger``) instead of a new, empty ledger."""
    return Ledger.driver(url)(url, plans=plans, create=create, **kwargs)
