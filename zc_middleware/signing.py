"""The proxy's ``zc-signature``: verify it, and recover the raw request target it covers.

ZeroClick's proxy signs every request it forwards (the scheme the vendor's
``zeroclick-sellers`` SDK verifies, pinned by its published test vectors,
copied to ``tests/vectors/``)::

    zc-signature: t=<unix seconds>,kid=<secret id>,v1=<64 lower-case hex>
    v1 = hex HMAC-SHA256(secret, "\\n".join([t, METHOD, raw path and query,
                                            hex SHA-256 of the raw body,
                                            zc-request-id, zc-agent-id or ""]))

Members come in any order; unknown ones are ignored (the sandbox appends
``sb=1``), a repeated one is malformed (so a second ``v1`` cannot be smuggled
in). A :class:`Verifier` answers ``None`` for a good signature or the reason it
is not one, the SDK's reasons in the SDK's order; it never raises on what a
client sent. It parses with string operations and keeps its secrets encoded,
as it runs on every paid request.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from .decision import Deny, body_too_large, invalid_signature
from .identity import HeaderGetter

if TYPE_CHECKING:
    from .settings import ZeroClickSettings

__all__ = [
    "AGENT_HEADER",
    "DEFAULT_MAX_BODY",
    "DEFAULT_TOLERANCE",
    "REASONS",
    "REQUEST_ID_HEADER",
    "SIGNATURE_HEADER",
    "SignatureStep",
    "Verifier",
    "asgi_target",
    "canonical",
    "check_kids",
    "parse_signature",
    "signature_for",
    "signature_step",
    "wsgi_target",
]

SIGNATURE_HEADER = "zc-signature"
REQUEST_ID_HEADER = "zc-request-id"
AGENT_HEADER = "zc-agent-id"
DEFAULT_TOLERANCE = 300
DEFAULT_MAX_BODY = 1 << 20
#: why a request's signature is refused, in the order they are checked
REASONS = (
    "missing_signature",
    "malformed_signature",
    "stale_timestamp",
    "missing_request_id",
    "unknown_kid",
    "invalid_signature",
)
_HEX = "0123456789abcdef"
#: ``t=<digits>,kid=<id>,v1=<hex>`` exactly as the proxy writes it (the general parse accepts more)
_PROXY_ORDER = re.compile(r"t=([0-9]{1,20}),kid=([^\s,=]+),v1=([0-9a-f]{64})").fullmatch
_EMPTY = hashlib.sha256(b"").hexdigest()
_IPAD = bytes(x ^ 0x36 for x in range(256))
_OPAD = bytes(x ^ 0x5C for x in range(256))
log = logging.getLogger("zc_middleware")
_warned = False
#: characters a path or query keeps when it has to be re-encoded (no raw target from the server)
_SAFE = "/~-._!$&'()*+,;=:@"


def check_kids(secrets: dict[str, Any]) -> dict[str, Any]:
    """Settings' ``signing_secrets`` as they validate: kids a header can carry, no empty secret.
    A secret is a ``str`` or pydantic's ``SecretStr`` (``get_secret_value()``)."""
    for kid, secret in secrets.items():
        if not kid or kid != kid.strip() or "," in kid or "=" in kid:
            raise ValueError(f"{kid!r} is not a signing key id (no spaces at either end, no ',' or '=')")
        if not _revealed(secret):
            raise ValueError(f"the secret of kid {kid!r} is empty")
    return secrets


def parse_signature(value: str) -> tuple[str, str, str] | None:
    """``(t, kid, v1)`` of a ``zc-signature`` value, or ``None`` when it is malformed."""
    proxy = _PROXY_ORDER(value)
    if proxy is not None:  # the proxy's own order and spelling, with nothing else: one C call
        return proxy.group(1, 2, 3)  # type: ignore[return-value]
    entries = value.split(",")
    if len(entries) < 3:
        return None
    members: dict[str, str] = {}
    for entry in entries:
        key, sep, member = entry.partition("=")
        key = key.strip()
        if not sep or not key or key in members:  # no "=", an empty key, a repeated member
            return None
        members[key] = member.strip()
    found = members.get("t"), members.get("kid"), members.get("v1")
    if found[0] is None or found[1] is None or found[2] is None:
        return None
    return _valid(found[0], found[1], found[2])


def _valid(t: str, kid: str, v1: str) -> tuple[str, str, str] | None:
    # isdecimal() is the \d the SDK matches with; 20 digits at most keeps int() bounded
    if not t.isdecimal() or len(t) > 20 or not kid or not _hex64(v1):
        return None
    return t, kid, v1


def _hex64(value: str) -> bool:
    """64 lower-case hex digits (``str.strip`` with a set of characters runs in C: faster than a regex)."""
    return len(value) == 64 and not value.strip(_HEX)


def canonical(t: str, method: str, target: str, body: bytes, request_id: str, agent: str | None) -> bytes:
    """The bytes ``v1`` signs (UTF-8, as the SDK encodes them)."""
    digest = hashlib.sha256(body).hexdigest() if body else _EMPTY  # most paid calls are GETs
    return f"{t}\n{method.upper()}\n{target}\n{digest}\n{request_id}\n{agent or ''}".encode("utf-8", "surrogatepass")


def signature_for(
    secret: bytes, t: str, method: str, target: str, body: bytes, request_id: str, agent: str | None
) -> str:
    """The ``v1`` a request carries when signed with ``secret``."""
    return hmac.digest(secret, canonical(t, method, target, body, request_id, agent), "sha256").hex()


class Verifier:
    """Checks ``zc-signature`` against the secrets of every configured kid (several during a rotation).

    ``secrets`` maps each kid to its secret (a ``str`` or a ``SecretStr``). ``tolerance`` is how far
    ``t`` may be from now, either way, in seconds; ``max_body`` how many body bytes a request may
    carry to be verified at all (adapters answer ``413`` past it)."""

    __slots__ = ("_pads", "clock", "max_body", "tolerance")

    def __init__(
        self,
        secrets: Mapping[str, Any],
        *,
        tolerance: int = DEFAULT_TOLERANCE,
        max_body: int = DEFAULT_MAX_BODY,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._pads = {kid: _pads(_revealed(secret).encode("utf-8")) for kid, secret in secrets.items()}
        self.tolerance = tolerance
        self.max_body = max_body
        self.clock = clock

    @property
    def kids(self) -> frozenset[str]:
        return frozenset(self._pads)

    def verify(self, method: str, target: str, body: bytes, get_header: HeaderGetter) -> str | None:
        """``None`` when the request is signed by a configured kid, else one of :data:`REASONS`.
        ``target`` is the raw path and query as sent (:func:`asgi_target`, :func:`wsgi_target`)."""
        value = get_header(SIGNATURE_HEADER)
        if value is None:
            return "missing_signature"
        parsed = parse_signature(value)
        if parsed is None:
            return "malformed_signature"
        t, kid, v1 = parsed
        if abs(int(self.clock()) - int(t)) > self.tolerance:
            return "stale_timestamp"
        request_id = get_header(REQUEST_ID_HEADER)
        if not request_id:
            return "missing_request_id"
        pads = self._pads.get(kid)
        if pads is None:
            return "unknown_kid"
        inner, outer = pads[0].copy(), pads[1].copy()
        inner.update(canonical(t, method, target, body, request_id, get_header(AGENT_HEADER)))
        outer.update(inner.digest())
        return None if hmac.compare_digest(outer.hexdigest(), v1) else "invalid_signature"


class SignatureStep:
    """The step every adapter runs before the Gate's check on a paid request, when settings have
    ``signing_secrets``: the adapter supplies the method, the raw target, the body (``None`` when it
    is larger than :attr:`max_body`) and a header getter; the answer is ``None`` or the refusal to
    send (``401 invalid_zeroclick_signature`` with the reason, or ``413``), built once here."""

    __slots__ = ("_refusals", "_too_large", "max_body", "verifier")

    def __init__(self, verifier: Verifier) -> None:
        self.verifier = verifier
        self.max_body = verifier.max_body
        self._refusals = {reason: invalid_signature(reason) for reason in REASONS}
        self._too_large = body_too_large(verifier.max_body)

    def check(self, method: str, target: str, body: bytes | None, get_header: HeaderGetter) -> Deny | None:
        if body is None:
            return self._too_large
        reason = self.verifier.verify(method, target, body, get_header)
        return None if reason is None else self._refusals[reason]


def signature_step(settings: ZeroClickSettings, *, warn: bool = True) -> SignatureStep | None:
    """The :class:`SignatureStep` of ``settings``; ``None``, with a warning once per process (``warn``),
    when they have no ``signing_secrets``."""
    if not settings.signing_secrets:
        global _warned
        if warn and not _warned:
            _warned = True
            log.warning(
                "zc_middleware: no signing_secrets, so the buyer's identity (zc-agent-id) is not verified: anyone "
                "who reaches this app without going through ZeroClick's proxy can spend any buyer's plan. Set "
                "signing_secrets (ZEROCLICK_SIGNING_SECRETS) and keep the app reachable only through the proxy"
            )
        return None
    if settings.identity_header != AGENT_HEADER:
        log.warning(
            "zc_middleware: identity_header is %r, but the proxy's signature covers %s only: the buyer header "
            "is not verified",
            settings.identity_header,
            AGENT_HEADER,
        )
    verifier = Verifier(
        settings.signing_secrets, tolerance=settings.signature_tolerance, max_body=settings.max_signed_body
    )
    return SignatureStep(verifier)


def asgi_target(scope: Mapping[str, Any]) -> str:
    """The raw path and query of an ASGI request. uvicorn gives ``/a%2Fb`` in ``raw_path`` (``path``
    is decoded: ``/a/b``) and the query apart, undecoded, in ``query_string``. Without ``raw_path``
    the decoded path is re-encoded, which cannot tell an encoded ``%2F`` from a ``/``."""
    raw = scope.get("raw_path")
    if raw:
        path = bytes(raw).decode("latin-1").partition("?")[0]  # a server that left the query in it
    else:
        path = quote(str(scope.get("path", "")).encode("utf-8", "surrogatepass"), safe=_SAFE)  # ASGI decodes UTF-8
    query = scope.get("query_string") or b""
    return f"{path}?{bytes(query).decode('latin-1')}" if query else path


def wsgi_target(environ: Mapping[str, Any]) -> str:
    """The raw path and query of a WSGI request (Django's ``META`` too): ``RAW_URI`` (gunicorn,
    werkzeug) or ``REQUEST_URI`` (uWSGI, mod_wsgi, werkzeug), which carry the query already.
    Otherwise ``SCRIPT_NAME`` + ``PATH_INFO`` re-encoded from the latin-1 bytes PEP 3333 keeps them
    as, plus ``QUERY_STRING``: exact except for an encoded separator (``%2F`` reads as ``/``), so
    serve behind a server that sets one of the two when routes can contain one."""
    for key in ("RAW_URI", "REQUEST_URI"):
        raw = environ.get(key)
        if raw and isinstance(raw, str):
            return raw
    path = _quoted(f"{environ.get('SCRIPT_NAME', '')}{environ.get('PATH_INFO', '')}")
    query = environ.get("QUERY_STRING", "")
    return f"{path}?{query}" if query else path


def _pads(key: bytes) -> tuple[Any, Any]:
    """HMAC-SHA256 (RFC 2104) with its two keyed states hashed once: per request, a copy of each
    costs a third of ``hmac.digest``, which sets the key up again on every call."""
    if len(key) > 64:  # SHA-256's block size
        key = hashlib.sha256(key).digest()
    key = key.ljust(64, b"\0")
    return hashlib.sha256(key.translate(_IPAD)), hashlib.sha256(key.translate(_OPAD))


def _revealed(secret: Any) -> str:
    """A secret given as a ``str`` or as pydantic's ``SecretStr``."""
    return secret.get_secret_value() if hasattr(secret, "get_secret_value") else str(secret)


def _quoted(path: str) -> str:
    try:
        raw = path.encode("latin-1")  # what PEP 3333 decoded the bytes with
    except UnicodeEncodeError:
        raw = path.encode("utf-8", "surrogatepass")
    return quote(raw, safe=_SAFE)
