"""``report_usage``: application code queues one usage event with the process's reporter."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from ..errors import ConfigError, ZcError
from ..ledger import BUYER_ID
from .registry import get_reporter

if TYPE_CHECKING:
    from ..settings import ZeroClickSettings

__all__ = ["report_usage"]


def report_usage(
    *,
    user_id: str,
    meter: str,
    quantity: int,
    idempotency_key: str,
    timestamp: datetime | None = None,
    settings: ZeroClickSettings | None = None,
) -> bool:
    """Queue one usage event for the batch API; returns once it is durable in the outbox.

    ``timestamp`` (timezone-aware; default now) is stored with the event and resent
    unchanged. Re-reporting a key with the same payload is a no-op (returns ``False``);
    with a different payload it raises :class:`ZcError` ``idempotency_conflict``.
    """
    if not isinstance(user_id, str) or not BUYER_ID.fullmatch(user_id):  # the ids the Gate accepts, and no other
        raise ZcError(
            "invalid_user_id",
            f"user_id {user_id!r} is not a buyer id: 1 to 256 printable ASCII characters, no spaces or commas",
        )
    try:
        reporter = get_reporter(settings)
    except ConfigError:
        raise
    except ValueError as exc:  # pydantic's ValidationError when the environment has no settings
        raise ZcError("not_configured", f"report_usage() needs ZeroClick settings: {exc}") from None
    return reporter.report(
        user_id=user_id, meter=meter, quantity=quantity, idempotency_key=idempotency_key, timestamp=timestamp
    )
