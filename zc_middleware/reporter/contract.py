"""What the batch API's answers mean, as pure functions: ``Retry-After`` and the API's stated reason."""

from __future__ import annotations

import json
import time
from datetime import timezone
from email.utils import parsedate_to_datetime

import httpx

__all__ = ["api_reason", "retry_after"]

_REASON_FIELDS = ("reason", "message", "error", "detail", "errors")


def retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date); ``None`` if absent or garbage."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        seconds = when.timestamp() - (time.time() if now is None else now)
    if seconds != seconds:  # NaN
        return None
    return min(max(0.0, seconds), 3600.0)


def api_reason(response: httpx.Response) -> str:
    """The API's own words for a rejection, short enough for a status table."""
    text = response.text.strip()
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if isinstance(data, dict):
        parts = [f"{k}: {data[k]}" for k in _REASON_FIELDS if data.get(k) not in (None, "")]
        if parts:
            text = "; ".join(parts)
    return f"HTTP {response.status_code}: {' '.join(text.split())[:400] or response.reason_phrase}"
