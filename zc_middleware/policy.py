"""The response policy every adapter applies: what a paid response's and a refusal's headers become.

One place decides, for every framework:

* **success**: a paid request succeeded when the status that went out is below
  400 and the body did not fail first (:func:`succeeded`); only then is the
  usage header sent and the hold settled at the counted usage;
* **a paid response** (any status) loses any usage header the app set (only
  the middleware reports usage, and only on a success), goes out
  ``Cache-Control: private`` first so that no shared cache replays it to
  another buyer without the plan check, and loses the headers only CDNs and
  caching proxies read, which would override that there;
* **a refusal** (the Gate's ``402``, ``401``, ``503``) goes out ``no-store``
  (a cached ``402`` would keep refusing a buyer who has paid since), never
  with a usage header, and with the Gate's own reason only, whatever a hook or
  inner middleware added;
* **a free response** loses the contract's headers the app set
  (``X-ZeroClick-Usage``, ``X-ZeroClick-Reason``), and nothing else: the proxy
  bills from the one and reads the other as a refusal, so only the middleware
  speaks them (a relayed upstream ``X-ZeroClick-Usage`` would bill the buyer).
  A paid response loses the app's ``X-ZeroClick-Reason`` too.

Adapters pass headers in their framework's shape: WSGI's ``(str, str)`` list,
ASGI's ``(bytes, bytes)`` pairs, or a case-insensitive mapping (Django's
``response.headers``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Protocol

__all__ = [
    "CDN_ONLY",
    "CONTRACT",
    "REASON_HEADER",
    "REWRITTEN",
    "USAGE_HEADER",
    "HeaderMap",
    "apply_free",
    "apply_paid",
    "apply_refused",
    "free_headers",
    "free_raw_headers",
    "paid_headers",
    "paid_raw_headers",
    "private_cache_control",
    "refused_headers",
    "succeeded",
]

USAGE_HEADER = "X-ZeroClick-Usage"
_USAGE = USAGE_HEADER.lower()
_USAGE_RAW = _USAGE.encode("latin-1")
REASON_HEADER = "X-ZeroClick-Reason"
_REASON = REASON_HEADER.lower()
#: the contract's headers (lower-case), which only the middleware sets: dropped from every response the app made
CONTRACT = frozenset({_USAGE, _REASON})
_CONTRACT_RAW = frozenset(name.encode("latin-1") for name in CONTRACT)
#: headers only CDNs and caching proxies read (lower-case): dropped from paid responses
CDN_ONLY = frozenset(
    {
        "cdn-cache-control",  # RFC 9213, and its vendors' own
        "cloudflare-cdn-cache-control",
        "netlify-cdn-cache-control",
        "vercel-cdn-cache-control",
        "surrogate-control",  # Fastly, Varnish
        "edge-control",  # Akamai
        "x-accel-expires",  # nginx proxy_cache
    }
)
#: every header of a paid response that the policy drops or rewrites (lower-case names)
REWRITTEN = CDN_ONLY | CONTRACT | {"cache-control"}
_REWRITTEN_RAW = frozenset(name.encode("latin-1") for name in REWRITTEN)
_CONTRACT_LENGTHS = frozenset(len(name) for name in CONTRACT)

#: the commas between ``Cache-Control`` directives: not those inside a quoted string (``no-cache="a, b"``)
_DIRECTIVES = re.compile(r',(?=(?:[^"]*"[^"]*")*[^"]*\Z)')


def succeeded(status: int | None, failed: bool) -> bool:
    """Whether a paid request is billed: a status below 400 went out and the body did not fail first."""
    return status is not None and status < 400 and not failed


def private_cache_control(value: str | None) -> str:
    """The ``Cache-Control`` a paid route's response goes out with: ``private`` first, so that no
    shared cache (a CDN, a caching proxy, Django's cache middleware, which looks for exactly that
    lower-case word) replays it. The app's own directives follow, except ``public`` and any
    ``private`` of its own (one limited to some fields included). ``value`` is every
    ``Cache-Control`` the app set, joined with commas."""
    if not value:
        return "private"
    kept = []
    for directive in _DIRECTIVES.split(value) if value.count('"') % 2 == 0 else value.split(","):
        directive = directive.strip()
        name = directive.partition("=")[0].strip().lower()
        if directive and name != "public" and name != "private":
            kept.append(directive)
    return ", ".join(["private", *kept])


def paid_headers(headers: list[tuple[str, str]], usage: str | None = None) -> list[tuple[str, str]]:
    """A paid response's WSGI headers as they go out, with ``usage`` (``None``: no usage header)."""
    out = _private(headers) if _rewrites(headers) else [*headers, ("Cache-Control", "private")]
    if usage:
        out.append((USAGE_HEADER, usage))
    return out


def _rewrites(headers: list[tuple[str, str]]) -> bool:
    for key, _ in headers:
        if key.lower() in REWRITTEN:
            return True
    return False  # the common case: the app set none of them


def _private(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    out = []
    cache = None
    for item in headers:
        name = item[0].lower()
        if name == "cache-control":
            cache = item[1] if cache is None else f"{cache}, {item[1]}"
        elif name not in REWRITTEN:
            out.append(item)
    out.append(("Cache-Control", private_cache_control(cache)))
    return out


def paid_raw_headers(headers: Iterable[tuple[bytes, bytes]], usage: bytes = b"") -> list[tuple[bytes, bytes]]:
    """:func:`paid_headers` for ASGI's lower-case byte pairs; never edits the app's own list."""
    raw = list(headers)
    for key, _ in raw:
        if key.lower() in _REWRITTEN_RAW:
            text = _private([(k.decode("latin-1"), v.decode("latin-1")) for k, v in raw])
            raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in text]
            break
    else:  # the common case: none of them is there
        raw.append((b"cache-control", b"private"))
    if usage:
        raw.append((_USAGE_RAW, usage))
    return raw


def refused_headers(headers: Iterable[tuple[str, str]], reason: str | None) -> list[tuple[str, str]]:
    """A refusal's WSGI headers as they go out after hooks or inner middleware had them: ``reason``
    is the Gate's own (``Deny.reason``; ``None`` for a refusal without one)."""
    out = [item for item in headers if item[0].lower() not in REWRITTEN]
    if reason:
        out.append((REASON_HEADER, reason))
    out.append(("Cache-Control", "no-store"))
    return out


def free_headers(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """A free response's WSGI headers as they go out: the app's own list, or a copy without the
    contract's headers when it set any."""
    for key, _ in headers:
        if len(key) in _CONTRACT_LENGTHS and key.lower() in CONTRACT:
            return [item for item in headers if item[0].lower() not in CONTRACT]
    return headers  # the common case: none of them, checked by length first


def free_raw_headers(headers: Iterable[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]] | None:
    """:func:`free_headers` for ASGI's byte pairs: ``None`` when there is nothing to drop (the app's
    headers go out as they are), else a new list. Names are compared lower-cased, as an app may send
    them in any case. Headers that are not a list or tuple (any iterable) are read once, into a list."""
    if headers.__class__ is not list and headers.__class__ is not tuple:
        headers = list(headers)
        return [item for item in headers if item[0].lower() not in _CONTRACT_RAW]
    for key, _ in headers:
        if len(key) in _CONTRACT_LENGTHS and key.lower() in _CONTRACT_RAW:
            return [item for item in headers if item[0].lower() not in _CONTRACT_RAW]
    return None


class HeaderMap(Protocol):
    """Response headers looked up by any case of a name (Django's ``response.headers``)."""

    def names(self) -> Iterable[str]:
        """Every header's name, lower-case."""

    def get(self, name: str, default: str | None = None, /) -> str | None: ...
    def pop(self, name: str, default: str | None = None, /) -> str | None: ...
    def __setitem__(self, name: str, value: str, /) -> None: ...


def apply_paid(headers: HeaderMap, usage: str | None) -> None:
    """:func:`paid_headers` on a case-insensitive header mapping, in place."""
    cache = None
    for name in [name for name in headers.names() if name in REWRITTEN]:  # usually none: a few names read
        if name == "cache-control":
            cache = headers.get(name)
        else:
            headers.pop(name)
    headers["Cache-Control"] = private_cache_control(cache)
    if usage:
        headers[USAGE_HEADER] = usage


def apply_refused(headers: HeaderMap, reason: str | None) -> None:
    """:func:`refused_headers` on a case-insensitive header mapping, in place."""
    for name in [name for name in headers.names() if name in REWRITTEN]:
        headers.pop(name)
    if reason:
        headers[REASON_HEADER] = reason
    headers["Cache-Control"] = "no-store"


def apply_free(headers: HeaderMap) -> None:
    """:func:`free_headers` on a case-insensitive header mapping, in place."""
    names = headers.names()
    if CONTRACT.isdisjoint(names):  # the common case: one pass in C, no list made
        return
    for name in [name for name in names if name in CONTRACT]:
        headers.pop(name)
