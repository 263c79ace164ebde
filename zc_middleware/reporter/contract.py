"""What each answer of the batch API means, as pure functions: ``interpret(status, headers, body) -> Action``.

The contract is at-least-once, deduplicated by the server on ``idempotencyKey``,
so resending is always safe and losing never is:

* **2xx** -> :class:`Deliver`: only now are the batch's rows marked sent.
* **timeouts, connection errors, 408, 429, 5xx, other non-4xx** -> :class:`Retry`:
  the rows go back to the queue after a full-jitter exponential backoff, or
  ``Retry-After`` when the API says so.
* **401/403** -> :class:`Misconfigured`: the key is wrong. Every event is kept,
  an ERROR says so, and the sender backs off to ``retry_backoff_max`` until the
  key is fixed.
* **404/405** -> :class:`Misconfigured`: the base URL is wrong, treated like a
  bad key (nothing is dropped).
* **any other 4xx** -> :class:`Reject`: the API rejected the batch as invalid. A
  batch of one goes to the dead letters with the API's reason; a larger batch
  is bisected so the one bad event cannot hold back the good ones behind it.

Nothing here does I/O; the sender posts the body and acts on the answer.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import timezone
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

import httpx

from ..errors import ConfigError

__all__ = [
    "Action",
    "Deliver",
    "Misconfigured",
    "Reject",
    "Retry",
    "api_reason",
    "build_batch",
    "check_http_url",
    "interpret",
    "retry_after",
    "unreachable",
]

#: what may never be in a URL: whitespace and control characters (httpx refuses them only when sending)
_UNSAFE = re.compile(r"[\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]")


def check_http_url(what: str, value: object) -> str:
    """``value`` if it is an ``http(s)`` base URL with a host, no query or fragment, no whitespace
    and no control character, and one httpx accepts; else :class:`ConfigError` ``invalid_url``
    naming ``what`` and the value. Checked when settings are built, not when the sender first posts."""
    reason = None
    if not isinstance(value, str):
        reason = f"must be a string, got {type(value).__name__}"
    elif _UNSAFE.search(value):
        reason = "has whitespace or a control character"
    else:
        try:
            parts = urlsplit(value)
            port = parts.port  # a port that is not a number raises here
            httpx.URL(value)
        except (ValueError, httpx.InvalidURL) as exc:
            reason = f"cannot be parsed ({exc})"
        else:
            if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
                reason = "is not an http(s) base URL with a host"
            elif port == 0:
                reason = "has port 0"
    if reason is not None:
        raise ConfigError("invalid_url", f"{what} {value!r} {reason}, e.g. 'https://pay.zeroclick.io'")
    assert isinstance(value, str)
    return value


_RETRY = frozenset({408, 429})
_MISCONFIGURED = frozenset({401, 403, 404, 405})
_REASON_FIELDS = ("reason", "message", "error", "detail", "errors")


@dataclass(frozen=True, slots=True)
class Deliver:
    """The batch landed: mark its rows sent."""


@dataclass(frozen=True, slots=True)
class Retry:
    """The batch may or may not have landed: put it back and try again after a backoff.

    ``after`` is the API's ``Retry-After`` in seconds, a floor for that backoff.
    """

    why: str
    after: float | None = None


@dataclass(frozen=True, slots=True)
class Misconfigured:
    """The key or the base URL is wrong: keep every event and back off to the maximum."""

    status: int
    #: what went wrong, worded to follow "ZeroClick ... {url}"
    what: str


@dataclass(frozen=True, slots=True)
class Reject:
    """The API refused the batch as invalid: dead-letter a single event, bisect a larger batch."""

    reason: str


Action = Deliver | Retry | Misconfigured | Reject


def build_batch(bodies: Iterable[str]) -> bytes:
    """The request body for events stored as JSON text: each is resent exactly as first serialized."""
    return ('{"events":[' + ",".join(bodies) + "]}").encode()


def interpret(
    status: int, headers: Mapping[str, str], body: str, *, phrase: str | None = None, now: float | None = None
) -> Action:
    """What the answer ``status`` means for the batch that was sent.

    ``headers`` is a case-insensitive mapping (as ``httpx.Headers``) or has lower-case names;
    ``body`` is the answer's text; ``phrase`` the status line's reason phrase (default: the
    standard one), named when the body is empty; ``now`` (epoch seconds) dates a ``Retry-After``
    given as a date.
    """
    if 200 <= status < 300:
        return Deliver()
    if status in _MISCONFIGURED:
        what = "rejected the service API key" if status in (401, 403) else "has no batch endpoint at"
        return Misconfigured(status, what)
    if 400 <= status < 500 and status not in _RETRY:
        return Reject(_reason(status, body, phrase))
    return Retry(f"HTTP {status}", retry_after(headers.get("retry-after"), now))


def unreachable(exc: Exception) -> Retry:
    """A timeout, a refused or reset connection: the batch may or may not have landed."""
    return Retry(f"{type(exc).__name__}: {exc}")


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
    return _reason(response.status_code, response.text, response.reason_phrase)


def _reason(status: int, body: str, phrase: str | None) -> str:
    text = body.strip()
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if isinstance(data, dict):
        parts = [f"{k}: {data[k]}" for k in _REASON_FIELDS if data.get(k) not in (None, "")]
        if parts:
            text = "; ".join(parts)
    if phrase is None:
        phrase = httpx.codes.get_reason_phrase(status)
    return f"HTTP {status}: {' '.join(text.split())[:400] or phrase}"
