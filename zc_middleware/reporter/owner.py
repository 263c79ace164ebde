"""Lease owners: the ``host:pid:nonce`` id a sender leases rows under, and whether its process is gone."""

from __future__ import annotations

import os
import uuid

__all__ = ["new_owner", "owner_gone"]


def new_owner() -> str:
    """A fresh owner id for this process (the nonce tells apart two senders with the same pid)."""
    return f"{os.uname().nodename}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def owner_gone(owner: str) -> bool:
    """Whether ``host:pid:nonce`` names a process on this host that no longer exists.

    Only ever ``True`` for this host; a reused pid reads as alive, and that lease simply expires.
    """
    host, _, rest = owner.partition(":")
    pid = rest.partition(":")[0]
    if host != os.uname().nodename or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False
