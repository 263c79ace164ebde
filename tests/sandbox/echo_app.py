"""An upstream that shows the sandbox's proxy from the inside (``uvicorn tests.sandbox.echo_app:app``).

``/echo``: what arrived (headers, path, query, body digest); ``/say``: a response
built from the query (``status``, ``usage`` for ``X-ZeroClick-Usage``,
``reason`` for ``X-ZeroClick-Reason``); ``/drip``: a slow streamed body.
"""

from __future__ import annotations

import asyncio
import hashlib

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route


async def echo(request: Request) -> Response:
    body = await request.body()
    headers: dict[str, list[str]] = {}
    for key, value in request.headers.items():
        headers.setdefault(key, []).append(value)
    return JSONResponse(
        {
            "method": request.method,
            "raw_path": request.scope["raw_path"].decode("latin-1"),
            "query": request.scope["query_string"].decode("latin-1"),
            "headers": headers,
            "size": len(body),
            "sha256": hashlib.sha256(body).hexdigest(),
        },
        headers={"set-cookie": "session=upstream; Path=/"},
    )


async def say(request: Request) -> Response:
    params = request.query_params
    headers = [("x-zeroclick-usage", value) for value in params.getlist("usage")]
    if "reason" in params:
        headers.append(("x-zeroclick-reason", params["reason"]))
    response = Response(b"said", status_code=int(params.get("status", "200")))
    response.raw_headers.extend((k.encode("latin-1"), v.encode("latin-1")) for k, v in headers)
    return response


async def drip(request: Request) -> Response:
    async def body():  # type: ignore[no-untyped-def]
        for n in range(3):
            yield f"drop-{n}\n".encode()
            await asyncio.sleep(0.2)

    return StreamingResponse(body(), media_type="text/plain", headers={"x-zeroclick-usage": "api-requests=1"})


METHODS = ["GET", "POST", "PUT"]
app = Starlette(
    routes=[
        Route("/echo", echo, methods=METHODS),
        Route("/echo/{rest:path}", echo, methods=METHODS),
        Route("/say", say),
        Route("/drip", drip),
    ]
)
