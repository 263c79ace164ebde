"""The ledger or outbox a command names, opened only if it already exists: a typo never creates one.

Opening a ``sqlite:///`` URL creates the file, so a mistyped path would answer
"0 pending" or an empty balance, and leave an empty store behind for the next
command to find. ``memory://`` lives inside one process: a command could only
ever see a new, empty one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ..errors import ConfigError
from ..ledger import Ledger, open_ledger
from ..ledger import check_url as ledger_scheme
from ..outbox import Outbox, open_outbox
from ..outbox import check_url as outbox_scheme

__all__ = ["existing_ledger", "existing_outbox"]


def existing_ledger(url: str, *, plans: Mapping[str, Any]) -> Ledger:
    """Open the ledger at ``url``, or raise :class:`ConfigError` (``no_ledger``) if there is none."""
    _not_memory(url, "ledger", ledger_scheme)
    return open_ledger(url, plans=plans, create=False)


def existing_outbox(url: str) -> Outbox:
    """Open the outbox at ``url``, or raise :class:`ConfigError` (``no_outbox``) if there is none."""
    _not_memory(url, "outbox", outbox_scheme)
    return open_outbox(url, create=False)


def _not_memory(url: str, kind: str, scheme_of: Callable[[str], str]) -> None:
    if scheme_of(url) == "memory":  # an unknown scheme or a malformed URL: ConfigError naming the known ones
        message = f"memory:// lives inside one process; the command needs a sqlite:/// {kind}"
        raise ConfigError(f"invalid_{kind}", message)
