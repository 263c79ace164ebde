"""Entitlement writes as ZeroClick sends them: the JSON body and its signed headers (purpose ``access.write``).

Pure functions, no I/O: the sandbox's ``/extend`` and ``/suspend`` send what
these build to the app's access path, and tests build their writes here too.
The signature is the vendor SDK's own signer, so what the sandbox sends is
what ZeroClick sends, not what the middleware happens to accept.
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import datetime, timezone
from typing import Literal

from zeroclick_sellers.stateful import sign_access_request

__all__ = ["Status", "entitlement", "iso", "signed_headers"]

Status = Literal["active", "suspended", "closed"]


def iso(ts: float) -> str:
    """``2026-12-01T00:00:00Z``: an instant as the wire writes it (whole seconds, UTC)."""
    return datetime.fromtimestamp(int(ts), timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def entitlement(
    *,
    agent: str,
    plan: str,
    status: Status,
    start: float,
    end: float | None,
    version: int,
    key: str | None = None,
    buyer_id: str | None = None,
    buyer_email: str | None = None,
) -> bytes:
    """The body of a write putting ``agent`` on ``plan`` for ``[start, end)`` (epoch seconds; ``end``
    ``None``: renews), at ``stateVersion`` ``version``, idempotency key ``key`` (default: a fresh one)."""
    body = {
        "accessId": f"acc_{agent}",
        "agentId": agent,
        "buyerId": buyer_id,
        "buyerEmail": buyer_email,
        "idempotencyKey": key or f"evt_{uuid.uuid4().hex}",
        "stateVersion": version,
        "plan": {
            "slug": plan,
            "name": plan.replace("-", " ").title(),
            "billingMode": "recurring",
            "interval": "month",
            "basePriceUsd": "0.000000",
        },
        "state": {
            "period": {"start": iso(start), "end": None if end is None else iso(end)},
            "status": status,
            "lifetimeCreditGrantedUsd": None,
            "lifetimeCreditReversedUsd": None,
        },
    }
    return json.dumps(body, separators=(",", ":")).encode()


def signed_headers(
    body: bytes,
    *,
    path: str,
    agent: str,
    secret: str,
    kid: str,
    buyer_id: str | None = None,
    buyer_email: str | None = None,
    request_id: str | None = None,
    timestamp: int | None = None,
) -> dict[str, str]:
    """The headers of a write of ``body`` to ``path`` (raw path and query), signed with ``kid``'s ``secret``."""
    headers = {
        "content-type": "application/json",
        "zc-request-id": request_id or f"req_{uuid.uuid4().hex}",
        "zc-agent-id": agent,
    }
    if buyer_id is not None:
        headers["zc-buyer-id"] = buyer_id
    if buyer_email is not None:
        headers["zc-buyer-email"] = buyer_email
    headers["zc-signature"] = sign_access_request(
        secret=secret,
        kid=kid,
        method="POST",
        path_and_query=path,
        body=body,
        request_id=headers["zc-request-id"],
        agent_id=agent,
        purpose="access.write",
        timestamp=int(time.time()) if timestamp is None else timestamp,
    )
    return headers
