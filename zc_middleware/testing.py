"""Helpers for sellers' own tests.

:func:`sign` signs a request as ZeroClick's proxy does, so a test client can call a paid route of an
app whose settings have ``signing_secrets``::

    from zc_middleware.testing import sign

    body = b'{"q": "shoes"}'
    headers = sign("POST", "/search?page=2", body, {"zc-agent-id": "agent-1"}, secret="s3cret", kid="k1")
    client.post("/search?page=2", content=body, headers=headers)
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping

from .signing import AGENT_HEADER, REQUEST_ID_HEADER, SIGNATURE_HEADER, signature_for

__all__ = ["sign"]


def sign(
    method: str,
    path_and_query: str,
    body: bytes = b"",
    headers: Mapping[str, str] | None = None,
    *,
    secret: str,
    kid: str,
    timestamp: int | None = None,
) -> dict[str, str]:
    """``headers`` (names lower-cased) plus the ``zc-signature`` the proxy would send with them.

    ``path_and_query`` is the raw target exactly as the client sends it (``/a%2Fb?x=1``); ``body``
    the exact bytes sent. A ``zc-request-id`` is added when ``headers`` has none (the signature
    covers it); ``zc-agent-id`` is signed when present. ``timestamp`` defaults to now."""
    signed = {name.lower(): value for name, value in (headers or {}).items()}
    signed.setdefault(REQUEST_ID_HEADER, f"req-{uuid.uuid4().hex}")
    t = str(int(time.time()) if timestamp is None else timestamp)
    v1 = signature_for(
        secret.encode("utf-8"), t, method, path_and_query, body, signed[REQUEST_ID_HEADER], signed.get(AGENT_HEADER)
    )
    signed[SIGNATURE_HEADER] = f"t={t},kid={kid},v1={v1}"
    return signed
