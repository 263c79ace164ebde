"""The ledger or outbox a command names, opened only if it already exists: a typo never creates one.

Opening a ``sqlite:///`` URL creates the file, so a mistyped path would answer
"0 pending" or an empty balance, and leave an empty store behind for the next
command to find. ``memory://`` lives inside one process: a command could only
ever see a new, empty one.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

from ..errors import ConfigError
from ..ledger import Ledger, open_ledger
from ..ledger import check_url as ledger_scheme
from ..ledger.sqlite import sqlite_path
from ..outbox import Outbox, open_outbox
from ..outbox import check_url as outbox_scheme

__all__ = ["existing_ledger", "existing_outbox"]


def existing_ledger(url: str, *, plans: Mapping[str, Any]) -> Ledger:
    """Open the ledger at ``url``, or raise :class:`ConfigError` (``no_ledger``) if there is none."""
    _must_exist(url, "ledger", ledger_scheme)
    return open_ledger(url, plans=plans)


def existing_outbox(url: str) -> Outbox:
    """Open the outbox at ``url``, or raise :class:`ConfigError` (``no_outbox``) if there is none."""
    _must_exist(url, "outbox", outbox_scheme)
    return open_outbox(url)


def _must_exist(url: str, kind: str, scheme_of: Callable[[str], str]) -> None:
    # The one place that knows how a store is found on disk: when open_ledger/open_outbox can
    # refuse to create (create=False), both callers above pass that instead and this goes.
    scheme = scheme_of(url)  # an unknown scheme or a malformed sqlite URL: ConfigError naming the known ones
    if scheme == "memory":
        message = f"memory:// lives inside one process; the command needs a sqlite:/// {kind}"
        raise ConfigError(f"invalid_{kind}", message)
    if scheme == "sqlite":
        path = os.path.abspath(sqlite_path(url))
        if not os.path.isfile(path):  # a directory is no store either; sqlite would fail on it later
            raise ConfigError(f"no_{kind}", f"no {kind} at {path} ({url})")
