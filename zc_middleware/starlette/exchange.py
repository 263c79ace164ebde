"""One paid ASGI request: ``send`` wrapped to apply the response policy on ``http.response.start``;
and a free request's ``send``, which only drops the contract's headers the app set.

The wrapper edits headers only on ``http.response.start``, sends it exactly
once, records the status only after it really went out, and passes every
other message through untouched; the app's own message and header list are
never edited.
"""

from __future__ import annotations

from collections.abc import Iterable

from starlette.types import Message, Receive, Send

from ..decision import Deny
from ..policy import free_raw_headers, paid_raw_headers, succeeded
from ..usage import Usage

__all__ = ["Exchange", "free_send", "read_body", "refuse_websocket", "send_deny", "zc_headers"]


class Exchange:
    """One paid request: its :class:`~zc_middleware.usage.Usage`, and the ``receive``/``send`` pair
    that applies the response policy and notes the status and an early disconnect."""

    #: the status of the ``http.response.start`` that really went out
    status: int | None = None
    disconnected_early = False

    def __init__(self, usage: Usage, headers: Iterable[tuple[bytes, bytes]], receive: Receive, send: Send) -> None:
        self.usage = usage
        self.headers = headers
        self._receive = receive
        self._send = send

    def header(self, name: str) -> str | None:
        """A request header by lower-case name (ASGI servers send header names lower-cased); a
        repeated one joined with commas, as WSGI servers and Django join it."""
        raw = name.encode("latin-1")
        values = [value.decode("latin-1") for key, value in self.headers if key == raw]
        return ",".join(values) if values else None

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            status = message["status"]
            usage = self.usage.report_bytes() if succeeded(status, self.disconnected_early) else b""
            # the app's message and header list stay untouched
            message = {**message, "headers": paid_raw_headers(message.get("headers", ()), usage)}
            await self._send(message)
            self.status = status  # only once the start really went out
            return
        await self._send(message)

    async def receive(self) -> Message:
        message = await self._receive()
        if message["type"] == "http.disconnect" and self.status is None:
            self.disconnected_early = True
        return message


def free_send(send: Send) -> Send:
    """``send`` for a free request: ``X-ZeroClick-Usage`` and ``X-ZeroClick-Reason`` the app set
    never go out (the proxy would bill from the one, read the other as a refusal). Only
    ``http.response.start`` is looked at, and copied only when it carries one of them."""

    async def scrubbed(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = free_raw_headers(message.get("headers", ()))
            if headers is not None:
                message = {**message, "headers": headers}
        await send(message)

    return scrubbed


def zc_headers(headers: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    """The request's ``zc-`` headers (what the proxy signs and sends: ``zc-signature``,
    ``zc-request-id``, ``zc-agent-id``), gathered in one pass, a repeated one joined with commas as
    :meth:`Exchange.header` joins it. Its ``get`` is the header getter of a signed request."""
    found: dict[str, str] = {}
    for name, value in headers:
        if name[:3] == b"zc-":
            key = name.decode("latin-1")
            text = value.decode("latin-1")
            found[key] = f"{found[key]},{text}" if key in found else text
    return found


async def read_body(receive: Receive, limit: int) -> tuple[bytes | None, Receive] | None:
    """A paid request's body, read once to verify its signature, and a ``receive`` that hands it to
    the app unchanged (one ``http.request`` message), then passes on whatever the server sends next.
    The body is ``None`` when it is larger than ``limit`` (what was read is dropped: the app does not
    run); ``None`` altogether when the client left before its body was in."""
    message = await receive()
    if message["type"] != "http.request":
        return None
    body: bytes = message.get("body", b"")
    if message.get("more_body", False):
        chunks = [body]
        size = len(body)
        while size <= limit:
            message = await receive()
            if message["type"] != "http.request":
                return None
            chunk = message.get("body", b"")
            chunks.append(chunk)
            size += len(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        message = {"type": "http.request", "body": body, "more_body": False}
    if len(body) > limit:
        return None, receive
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if replayed:
            return await receive()
        replayed = True
        return message

    return body, replay


async def refuse_websocket(receive: Receive, send: Send) -> None:
    """A metered WebSocket route (never served unchecked): closed before it is accepted, which
    servers answer with ``403``."""
    await receive()  # websocket.connect
    await send({"type": "websocket.close", "code": 1008, "reason": "metered routes are HTTP only"})


async def send_deny(send: Send, deny: Deny) -> None:
    headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in deny.headers]
    headers.append((b"content-length", str(len(deny.body)).encode("latin-1")))
    await send({"type": "http.response.start", "status": deny.status, "headers": headers})
    await send({"type": "http.response.body", "body": deny.body})
