"""Helpers for sellers' own tests: signing a request as ZeroClick's proxy does, and calling
``@metered`` functions outside a request.

:func:`sign` signs a request, so a test client can call a paid route of an app whose settings have
``signing_secrets``::

    from zc_middleware.testing import sign

    body = b'{"q": "shoes"}'
    headers = sign("POST", "/search?page=2", body, {"zc-agent-id": "agent-1"}, secret="s3cret", kid="k1")
    client.post("/search?page=2", content=body, headers=headers)

:func:`sign_access_write` signs an entitlement write as ZeroClick sends one to ``access_path``
(``/zeroclick/access``), with the purpose line ``access.write``.

:func:`unchecked_calls` lets a unit test call a metered handler or helper directly.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator, Mapping

from .meters import check_quantity, normalize_meter_name
from .signing import AGENT_HEADER, REQUEST_ID_HEADER, SIGNATURE_HEADER, signature_for
from .usage import Usage, bind_counter, unbind_counter

__all__ = ["RecordedUsage", "sign", "sign_access_write", "unchecked_calls"]


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


def sign_access_write(
    path_and_query: str,
    body: bytes,
    headers: Mapping[str, str],
    *,
    secret: str,
    kid: str,
    timestamp: int | None = None,
) -> dict[str, str]:
    """``headers`` (names lower-cased; ``zc-agent-id`` must be the body's ``agentId``) plus the
    ``zc-signature`` of an entitlement write: ``POST`` of ``body`` to ``path_and_query`` (the
    ``access_path``), signed with ZeroClick's SDK (``zeroclick_sellers.stateful``). A
    ``zc-request-id`` is added when ``headers`` has none."""
    from zeroclick_sellers.stateful.verify import sign_access_request

    signed = {name.lower(): value for name, value in headers.items()}
    signed.setdefault(REQUEST_ID_HEADER, f"req-{uuid.uuid4().hex}")
    signed[SIGNATURE_HEADER] = sign_access_request(
        secret=secret,
        kid=kid,
        method="POST",
        path_and_query=path_and_query,
        body=body,
        request_id=signed[REQUEST_ID_HEADER],
        agent_id=signed.get(AGENT_HEADER),
        purpose="access.write",
        timestamp=timestamp,
    )
    return signed


# -- calling metered functions outside a request ------------------------------------------------
# A function decorated with @metered refuses to run unless the middleware checked the request it
# runs in (see zc_middleware.guard). A unit test that calls a handler or a metered helper directly
# opts in explicitly, and sees what the call recorded.


class RecordedUsage(Usage):
    """The counter :func:`unchecked_calls` binds: metered functions run under it with no check, and
    ``record_usage()`` adds to :attr:`recorded` whatever meter it names (no settings to check against)."""

    unchecked_ok = True

    def __init__(self) -> None:
        #: ``{meter: units}`` recorded with ``record_usage()`` inside the block, meter names normalised
        self.recorded: dict[str, int] = {}

    def add(self, meter: str, quantity: object) -> None:
        name = normalize_meter_name(meter)
        self.recorded[name] = self.recorded.get(name, 0) + check_quantity(quantity)


@contextlib.contextmanager
def unchecked_calls() -> Iterator[RecordedUsage]:
    """Let ``@metered`` functions run outside a request, in this block, for unit tests::

        from zc_middleware.testing import unchecked_calls

        def test_render() -> None:
            with unchecked_calls() as usage:
                assert render(request).status_code == 200
            assert usage.recorded == {"compute-seconds": 4}

    The opt-in is a context variable: it covers code in the block, async code awaited in it and
    threads started with a copy of its context, never another test or a request served meanwhile
    by a server in another thread. A request the middleware checks inside the block is checked as
    usual (the middleware binds its own counter).
    """
    usage = RecordedUsage()
    token = bind_counter(usage)
    try:
        yield usage
    finally:
        unbind_counter(token)
