"""The reverse proxy in front of the seller's app, as ZeroClick's proxy behaves.

Pure ASGI, streaming both ways: the request body goes upstream as it arrives,
and the response body comes back chunk by chunk as raw bytes (never decoded,
so ``Content-Encoding`` and ``Content-Length`` stay true). On the way in it
sets the buyer identity header and a fresh ``zc-request-id`` and, given a
signing secret, signs the request as the proxy does (``zc-signature``, with
the sandbox's ``sb=1`` member; the body is then read whole first, as the
signature covers it); on the way out it
reads and strips ``X-ZeroClick-Usage``, bills it to the buyer on the
``header`` channel, and notes every 402 with its ``X-ZeroClick-Reason``.
"""

from __future__ import annotations

import http.cookiejar
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator

import anyio
import httpx

from ..signing import SIGNATURE_HEADER, signature_for
from .book import Book
from .wire import UsageHeaderError, parse_usage_header

try:
    from starlette.types import Receive, Scope, Send
except ImportError:  # pragma: no cover - the package __init__ guards this first
    raise ImportError("zc_middleware.sandbox needs Starlette: pip install 'zc-middleware[starlette]'") from None

__all__ = ["REASONS", "Proxy"]

log = logging.getLogger("zc_middleware.sandbox")
REASONS = frozenset({"usage_exhausted", "spend_cap_reached", "plan_expired"})
_USAGE = b"x-zeroclick-usage"
_REQUEST_ID = b"zc-request-id"
_SIGNATURE = SIGNATURE_HEADER.encode("latin-1")
# RFC 9110 7.6.1: meaningful for one connection only, never forwarded.
_HOP_BY_HOP = frozenset(
    {b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization", b"te", b"trailer",
     b"transfer-encoding", b"upgrade", b"proxy-connection"}
)  # fmt: skip
RawHeaders = list[tuple[bytes, bytes]]


class _ClientGone(Exception):
    """The buyer disconnected while its request body was being forwarded."""


def _hop_by_hop(headers: RawHeaders) -> frozenset[bytes]:
    named = {
        name.strip().lower().encode("latin-1")
        for k, v in headers
        if k == b"connection"
        for name in v.decode("latin-1").split(",")
    }
    return _HOP_BY_HOP | named


def _no_cookies() -> httpx.Cookies:
    # A shared client must not keep one buyer's cookies and send them with another's requests.
    return httpx.Cookies(http.cookiejar.CookieJar(policy=http.cookiejar.DefaultCookiePolicy(allowed_domains=[])))


class Proxy:
    """Forward every request to ``upstream``; one per app, its client closed by the app's lifespan."""

    def __init__(
        self,
        *,
        upstream: str,
        identity_header: str,
        default_buyer: str,
        book: Book,
        signing: tuple[str, str] | None = None,
    ) -> None:
        self.upstream = upstream.rstrip("/")
        #: ``(kid, secret)`` the forwarded requests are signed with, or ``None``
        self.signing = (signing[0], signing[1].encode("utf-8")) if signing is not None else None
        self.identity = identity_header.lower().encode("latin-1")
        self.default_buyer = default_buyer
        self.book = book
        self._client: httpx.AsyncClient | None = None

    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            # No read timeout: streams and long jobs are the point; the buyer's own timeout governs.
            timeout = httpx.Timeout(None, connect=10.0)
            self._client = httpx.AsyncClient(timeout=timeout, trust_env=False, cookies=_no_cookies())
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # websockets are not proxied by the sandbox
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1003, "reason": "the sandbox does not proxy websockets"})
            return
        incoming: RawHeaders = [(k.lower(), v) for k, v in scope["headers"]]
        buyer = next((v.decode("latin-1").strip() for k, v in incoming if k == self.identity), "") or self.default_buyer
        request_id = str(uuid.uuid4())
        path = (scope.get("raw_path") or scope["path"].encode("utf-8")).decode("latin-1")
        entry: dict[str, object] = {"requestId": request_id, "buyer": buyer, "method": scope["method"], "path": path}
        try:
            request = await self._request(scope, receive, incoming, buyer, request_id, path)
            response = await self.client().send(request, stream=True)
        except _ClientGone:
            return
        except httpx.TimeoutException as exc:
            await self._fail(send, entry, 504, "upstream_timeout", exc)
            return
        except httpx.TransportError as exc:
            await self._fail(send, entry, 502, "upstream_unreachable", exc)
            return
        try:
            headers = self._settle(response, entry)
            if response.status_code == 402 and not response.headers.get("content-encoding"):
                await self._relay_402(scope, incoming, response, headers, send)
                return
            await send({"type": "http.response.start", "status": response.status_code, "headers": headers})
            await self._relay(response, receive, send, entry)
        finally:
            await response.aclose()

    async def _relay_402(
        self, scope: Scope, incoming: RawHeaders, response: httpx.Response, headers: RawHeaders, send: Send
    ) -> None:
        """A 402 whose JSON body names an ``extendUrl`` (the app's ``service_slug``), with that URL
        pointed at this sandbox's ``/extend``, so an agent extends offline and retries."""
        body = await response.aread()
        host = next((v.decode("latin-1") for k, v in incoming if k == b"host"), None)
        if host is not None:
            body = _extend_here(body, f"{scope.get('scheme', 'http')}://{host}/extend")
        headers = [(k, v) for k, v in headers if k != b"content-length"]
        headers.append((b"content-length", str(len(body)).encode("latin-1")))
        await send({"type": "http.response.start", "status": 402, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _request(
        self, scope: Scope, receive: Receive, incoming: RawHeaders, buyer: str, request_id: str, path: str
    ) -> httpx.Request:
        drop = _hop_by_hop(incoming) | {b"host", self.identity, _REQUEST_ID, _SIGNATURE, b"x-forwarded-for"}
        headers = [(k, v) for k, v in incoming if k not in drop]
        headers += [(self.identity, buyer.encode("latin-1")), (_REQUEST_ID, request_id.encode("latin-1"))]
        host = next((v for k, v in incoming if k == b"host"), None)
        if host is not None:
            headers.append((b"x-forwarded-host", host))
        headers.append((b"x-forwarded-proto", scope.get("scheme", "http").encode("latin-1")))
        client = scope.get("client")
        if client:
            headers.append((b"x-forwarded-for", str(client[0]).encode("latin-1")))
        query = scope.get("query_string", b"").decode("latin-1")
        url = self.upstream + path + ("?" + query if query else "")
        has_body = any(k in (b"content-length", b"transfer-encoding") for k, _ in incoming)
        if self.signing is None:
            return httpx.Request(scope["method"], url, headers=headers, content=_body(receive) if has_body else None)
        body = b"".join([chunk async for chunk in _body(receive)]) if has_body else b""
        request = httpx.Request(scope["method"], url, headers=headers, content=body if has_body else None)
        kid, secret = self.signing
        t = str(int(time.time()))
        # the target exactly as httpx sends it, which is what the app reads as raw
        target = request.url.raw_path.decode("ascii")
        agent = next((v.decode("latin-1") for k, v in headers if k == b"zc-agent-id"), None)
        v1 = signature_for(secret, t, request.method, target, body, request_id, agent)
        request.headers["zc-signature"] = f"t={t},kid={kid},v1={v1},sb=1"
        return request

    def _settle(self, response: httpx.Response, entry: dict[str, object]) -> RawHeaders:
        """Record what the response tells ZeroClick; return the headers the buyer gets."""
        raw = [(k.lower(), v) for k, v in response.headers.raw]
        status = response.status_code
        entry["status"] = status
        context = {"buyer": entry["buyer"], "path": entry["path"], "requestId": entry["requestId"]}
        values = [v.decode("latin-1") for k, v in raw if k == _USAGE]
        if values:
            value = ", ".join(values)
            if status >= 400:
                self.book.protocol_error(
                    "usage_on_error_response",
                    f"X-ZeroClick-Usage on a {status} response is not billed",
                    value=value,
                    **context,
                )
            else:
                try:
                    usage = parse_usage_header(value)
                except UsageHeaderError as exc:
                    self.book.protocol_error("malformed_usage_header", str(exc), value=value, **context)
                else:
                    entry["usage"] = usage
                    for meter, quantity in usage.items():
                        self.book.add_usage(str(entry["buyer"]), meter, quantity, "header")
        reason = response.headers.get("x-zeroclick-reason")
        if status == 402:
            entry["reason"] = reason
            if reason not in REASONS:
                self.book.protocol_error(
                    "bad_402_reason",
                    f"402 with X-ZeroClick-Reason {reason!r}; expected one of {sorted(REASONS)}",
                    **context,
                )
        self.book.record_request(entry, reason=reason)
        drop = _hop_by_hop(raw) | {_USAGE}
        return [(k, v) for k, v in raw if k not in drop]

    async def _relay(self, response: httpx.Response, receive: Receive, send: Send, entry: dict[str, object]) -> None:
        """Stream the body through; stop reading upstream as soon as the buyer goes away."""
        async with anyio.create_task_group() as group:

            async def watch_disconnect() -> None:
                while (await receive())["type"] != "http.disconnect":
                    pass
                group.cancel_scope.cancel()

            group.start_soon(watch_disconnect)
            try:
                async for chunk in response.aiter_raw():
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            except httpx.TransportError as exc:
                # Headers are gone already: leave the response incomplete so the server
                # aborts the connection and the buyer sees a truncated body, not a clean one.
                self.book.protocol_error("upstream_broke_mid_body", repr(exc), requestId=entry["requestId"])
                group.cancel_scope.cancel()
                return
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            group.cancel_scope.cancel()

    async def _fail(self, send: Send, entry: dict[str, object], status: int, code: str, exc: Exception) -> None:
        log.warning("sandbox: %s %s -> %s (%r)", entry["method"], entry["path"], code, exc)
        entry["status"] = status
        entry["error"] = code
        self.book.record_request(entry)
        body = json.dumps({"error": code, "upstream": self.upstream, "detail": repr(exc)}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def _extend_here(body: bytes, url: str) -> bytes:
    """``body`` with its ``extendUrl`` set to ``url``; as it was when it is no JSON object with one."""
    try:
        data = json.loads(body)
    except ValueError:
        return body
    if not isinstance(data, dict) or "extendUrl" not in data:
        return body
    data["extendUrl"] = url
    return json.dumps(data, separators=(",", ":")).encode()


async def _body(receive: Receive) -> AsyncIterator[bytes]:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _ClientGone
        yield message.get("body", b"")
        if not message.get("more_body", False):
            return
