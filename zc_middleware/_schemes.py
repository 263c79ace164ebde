"""Stores by URL: one table of schemes per kind of store, each driver imported only when used."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from .errors import ConfigError

__all__ = ["load", "scheme_of"]


def scheme_of(url: str, schemes: Mapping[str, str], kind: str) -> str:
    """Return the URL's scheme, or raise :class:`ConfigError` (``unknown_<kind>``) naming the known ones."""
    scheme = urlsplit(url).scheme
    if scheme not in schemes:
        known = ", ".join(f"{s}://" for s in schemes)
        raise ConfigError(f"unknown_{kind}", f"unknown {kind} URL {url!r}: expected one of {known}")
    if scheme == "sqlite":
        from .ledger.sqlite import sqlite_path

        sqlite_path(url)
    return scheme


def load(schemes: Mapping[str, str], scheme: str) -> Any:
    """The class registered for ``scheme`` (``"module:Class"``), importing its module now."""
    module, _, name = schemes[scheme].partition(":")
    return getattr(importlib.import_module(module), name)
