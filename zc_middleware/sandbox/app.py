"""The sandbox app: ZeroClick's batch endpoint, its proxy, and views of what both saw.

=========================  =====================================================
``POST /v1/usage/batch``   the async channel: auth, validation, dedupe
``GET /__sandbox/usage``   usage per buyer and meter, both channels (JSON)
``GET /__sandbox/usage.txt``  the same as a plain-text table
``GET /__sandbox/events``  every idempotency key: payload, deliveries, conflicts
``GET /__sandbox/requests``  the last proxied requests (buyer, status, usage)
``GET /__sandbox/plans``   every buyer's plan as the sandbox last wrote it to the app
``POST /extend``           a new period of a plan, written to the app's access path (signed)
``POST /suspend``          the spend cap: the current period, suspended (signed write)
``POST /__sandbox/reset``  forget everything (and replay the fault RNG)
anything else              proxied to the seller's app (404 without ``upstream``)
=========================  =====================================================
"""

from __future__ import annotations

import asyncio
import hmac
import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

try:
    from starlette.applications import Starlette
    from starlette.requests import ClientDisconnect, Request
    from starlette.responses import JSONResponse, PlainTextResponse, Response
    from starlette.routing import Mount, Route
    from starlette.types import Receive, Scope, Send
except ImportError:  # pragma: no cover - the package __init__ guards this first
    raise ImportError("zc_middleware.sandbox needs Starlette: pip install 'zc-middleware[starlette]'") from None

from ..access import DEFAULT_ACCESS_PATH
from ..signing import check_kids
from .book import Book
from .extend import Extender
from .faults import Faults
from .proxy import Proxy
from .wire import MAX_EVENTS, Event, Invalid, check_event

__all__ = ["create_app"]

#: 1,000 events with long keys and ids fit easily; anything larger is not a batch
MAX_BODY = 4 * 1024 * 1024
#: reserved paths answer every method themselves (405 / 404) instead of reaching the upstream
_ALL = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # fullmatch: ``$`` accepts a trailing newline


def _error(status: int, code: str, detail: str, **extra: object) -> JSONResponse:
    headers = {"WWW-Authenticate": 'Bearer realm="zeroclick-sandbox"'} if status == 401 else None
    return JSONResponse({"error": code, "detail": detail, **extra}, status_code=status, headers=headers)


async def _read_limited(request: Request) -> bytes | None:
    """The body, or ``None`` once it passes :data:`MAX_BODY` (read no further)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


class _Batch:
    """``POST /v1/usage/batch``."""

    def __init__(self, *, api_key: str, book: Book, faults: Faults) -> None:
        self.expected = f"Bearer {api_key}".encode()
        self.book = book
        self.faults = faults

    async def endpoint(self, request: Request) -> Response:
        if request.method != "POST":
            return _error(405, "method_not_allowed", "POST a JSON body {'events': [...]}")
        fault = self.faults.draw()
        if fault is not None:
            self.book.faults[fault] += 1
        if fault == "503":
            return _error(503, "injected_failure", "sandbox fail_rate: service unavailable")
        if fault == "429":
            response: Response = _error(429, "injected_failure", "sandbox fail_rate: rate limited")
            response.headers["Retry-After"] = "1"
            return response
        answer = await self._handle(request)
        if fault == "hang":
            await asyncio.sleep(self.faults.hang_seconds)
        return answer

    async def _handle(self, request: Request) -> Response:
        given = request.headers.get("authorization")
        if given is None:
            self.book.batches["rejected"] += 1
            return _error(401, "unauthorized", "send Authorization: Bearer <service-api-key>")
        if not hmac.compare_digest(given.encode("latin-1"), self.expected):
            self.book.batches["rejected"] += 1
            return _error(401, "unauthorized", "wrong API key (the sandbox's --api-key)")
        try:
            body = await _read_limited(request)
        except ClientDisconnect:
            return Response(status_code=400)  # nobody is listening; nothing was recorded
        outcome = self._validate(body)
        if isinstance(outcome, Response):
            self.book.batches["rejected"] += 1
            return outcome
        accepted, duplicates = self.book.record_batch(outcome)
        return JSONResponse({"accepted": accepted, "duplicates": duplicates})

    def _validate(self, body: bytes | None) -> list[Event] | Response:
        if body is None:
            return _error(413, "body_too_large", f"a batch body is at most {MAX_BODY} bytes")
        try:
            data = json.loads(body)
        except (UnicodeDecodeError, ValueError) as exc:
            return _error(400, "invalid_json", f"the body is not JSON: {exc}")
        if not isinstance(data, dict) or not isinstance(data.get("events"), list):
            return _error(400, "invalid_body", "the body must be a JSON object {'events': [...]}")
        if set(data) != {"events"}:
            extra = sorted(set(data) - {"events"})
            return _error(400, "invalid_body", f"unknown top-level field(s): {', '.join(extra)}")
        events = data["events"]
        if len(events) > MAX_EVENTS:
            return _error(
                413, "too_many_events", f"{len(events)} events; a batch holds at most {MAX_EVENTS}", limit=MAX_EVENTS
            )
        checked = [check_event(index, raw) for index, raw in enumerate(events)]
        invalid = [item.as_json() for item in checked if isinstance(item, Invalid)]
        if invalid:
            return JSONResponse(
                {
                    "error": "invalid_events",
                    "detail": f"{len(invalid)} of {len(events)} events are invalid; nothing in this batch was recorded",
                    "invalid": invalid,
                },
                status_code=400,
            )
        return [item for item in checked if isinstance(item, Event)]


def _views(book: Book, faults: Faults, extender: Extender) -> list[Route]:
    async def usage(request: Request) -> Response:
        return JSONResponse(book.snapshot())

    async def usage_txt(request: Request) -> Response:
        return PlainTextResponse(book.table())

    async def events(request: Request) -> Response:
        key = request.query_params.get("key")
        if key is not None:
            record = book.keys.get(key)
            return (
                JSONResponse(record.as_json()) if record else _error(404, "unknown_key", f"no event with key {key!r}")
            )
        return JSONResponse({"events": [record.as_json() for record in book.keys.values()]})

    async def requests(request: Request) -> Response:
        return JSONResponse({"requests": list(book.requests)})

    async def plans(request: Request) -> Response:
        return JSONResponse({"plans": [state.as_json(buyer) for buyer, state in extender.plans.items()]})

    async def unknown(request: Request) -> Response:
        # Reached for unknown views and for known ones with the wrong method (the catch-all
        # is a full match, so it wins over the router's own 405).
        if request.url.path in known:
            return _error(405, "method_not_allowed", f"{request.method} is not allowed here")
        return _error(404, "not_found", "sandbox views: usage, usage.txt, events, requests, reset")

    async def reset(request: Request) -> Response:
        book.reset()
        faults.reset()
        extender.plans.clear()
        return JSONResponse({"reset": True})

    views = [
        Route("/__sandbox/usage", usage, methods=["GET"]),
        Route("/__sandbox/usage.txt", usage_txt, methods=["GET"]),
        Route("/__sandbox/events", events, methods=["GET"]),
        Route("/__sandbox/requests", requests, methods=["GET"]),
        Route("/__sandbox/plans", plans, methods=["GET"]),
        Route("/__sandbox/reset", reset, methods=["POST"]),
    ]
    known = {route.path for route in views}
    return [*views, Route("/__sandbox/{rest:path}", unknown, methods=_ALL)]


async def _no_upstream(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "http":
        detail = "start the sandbox with --upstream URL to proxy requests to your app"
        await _error(404, "no_upstream", detail)(scope, receive, send)
    elif scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1003})


def _check(api_key: str, upstream: str | None, identity_header: str, default_buyer: str) -> None:
    if not isinstance(api_key, str) or not api_key or not api_key.isprintable() or not api_key.isascii():
        raise ValueError("api_key must be a non-empty printable ASCII string")
    if upstream is not None and not re.match(r"^https?://[^/?#\s]+(/[^?#\s]*)?$", upstream):
        raise ValueError(f"upstream must be an http:// or https:// URL without query, got {upstream!r}")
    if not _TOKEN.fullmatch(identity_header):
        raise ValueError(f"{identity_header!r} is not a valid HTTP header name")
    if not default_buyer or not default_buyer.isprintable() or not default_buyer.isascii():
        raise ValueError("default_buyer must be a non-empty printable ASCII string")


def create_app(
    *,
    api_key: str,
    upstream: str | None = None,
    identity_header: str = "zc-agent-id",
    default_buyer: str = "agent-demo",
    fail_rate: float = 0.0,
    seed: int = 0,
    hang_seconds: float = 10.0,
    signing_secret: str | None = None,
    signing_kid: str = "sandbox",
    access_path: str = DEFAULT_ACCESS_PATH,
    plan: str | None = None,
    period_days: float = 30.0,
) -> Starlette:
    """Build the sandbox; ``upstream`` is the seller's app (without it, only the batch endpoint and views).
    With ``signing_secret``, the proxy signs what it forwards (``zc-signature``, kid ``signing_kid``), and
    ``POST /extend`` and ``POST /suspend`` send signed plan writes to the app's ``access_path``: a new
    period of ``period_days`` of the plan named, the buyer's current one, or ``plan``."""
    _check(api_key, upstream, identity_header, default_buyer)
    if signing_secret is not None:
        check_kids({signing_kid: signing_secret})
    book = Book()
    faults = Faults(fail_rate=fail_rate, hang_seconds=hang_seconds, seed=seed)
    batch = _Batch(api_key=api_key, book=book, faults=faults)
    proxy = (
        Proxy(
            upstream=upstream,
            identity_header=identity_header,
            default_buyer=default_buyer,
            book=book,
            signing=(signing_kid, signing_secret) if signing_secret is not None else None,
        )
        if upstream is not None
        else None
    )

    extender = Extender(
        upstream=upstream,
        client=proxy.client if proxy is not None else None,
        access_path=access_path,
        signing=(signing_kid, signing_secret) if signing_secret is not None else None,
        identity_header=identity_header,
        default_buyer=default_buyer,
        default_plan=plan,
        period_days=period_days,
    )

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            if proxy is not None:
                await proxy.aclose()

    routes: list[Route | Mount] = [
        Route("/v1/usage/batch", batch.endpoint, methods=_ALL),
        # POST only: the app's own /extend and /suspend, if any, are still proxied for other methods
        Route("/extend", extender.extend, methods=["POST"]),
        Route("/suspend", extender.suspend, methods=["POST"]),
        *_views(book, faults, extender),
    ]
    routes.append(Mount("", app=proxy if proxy is not None else _no_upstream))
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.book = book
    app.state.faults = faults
    app.state.extender = extender
    return app
