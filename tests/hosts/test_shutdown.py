"""A Starlette app that opened its ledger from settings gives the store its connections back at lifespan
shutdown, while its process lives on: a server restarted in place (reloads, tests) leaves none behind."""

from __future__ import annotations

import asyncio
import subprocess
import time
import uuid
from typing import Any

import httpx
import psycopg
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from tests.apps.common import PLANS
from tests.ledger.redis_servers import CLI
from tests.ledger.test_postgres import database
from zc_middleware import ZeroClickSettings, metered
from zc_middleware.starlette import ZeroClickMiddleware


@metered("api-requests")
async def paid(request: Request) -> PlainTextResponse:
    return PlainTextResponse("paid")


def connections(store: str) -> int:
    """How many clients the store serves, besides the one asking."""
    if store.startswith("redis://"):
        port = store.rsplit(":", 1)[1].split("/")[0]
        listed = subprocess.run([CLI, "-p", port, "client", "list"], capture_output=True, text=True, check=True)
        return len(listed.stdout.splitlines()) - 1
    with psycopg.connect(store, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()", (database(store),)
        ).fetchone()
    assert row is not None
    return int(row[0])


async def serve_and_stop(app: Starlette, store: str, before: int) -> tuple[list[int], int, int]:
    """Start ``app``'s lifespan, send paid requests, stop it: the statuses and the store's client counts
    while serving and after."""
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    lifespan = asyncio.create_task(app({"type": "lifespan", "asgi": {"version": "3.0"}}, inbox.get, outbox.put))
    await inbox.put({"type": "lifespan.startup"})
    assert (await outbox.get())["type"] == "lifespan.startup.complete"
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        sends = [client.get("/paid", headers={"zc-agent-id": f"b-{uuid.uuid4().hex[:6]}"}) for _ in range(4)]
        statuses = [r.status_code for r in await asyncio.gather(*sends)]
    serving = await asyncio.to_thread(connections, store)
    await inbox.put({"type": "lifespan.shutdown"})
    assert (await outbox.get())["type"] == "lifespan.shutdown.complete"
    await lifespan
    return statuses, serving, await asyncio.to_thread(settled_connections, store, before)


def settled_connections(store: str, before: int) -> int:
    """The client count, given up to 3 s to come back to ``before``: a PostgreSQL backend leaves
    ``pg_stat_activity`` a moment after its client hung up."""
    deadline = time.monotonic() + 3
    while (count := connections(store)) > before and time.monotonic() < deadline:
        time.sleep(0.05)
    return count


def test_lifespan_shutdown_closes_the_ledger_the_middleware_opened(store: str) -> None:
    before = connections(store)
    app = Starlette(routes=[Route("/paid", paid)])
    settings = ZeroClickSettings(meters={"api-requests": {}, "compute-seconds": {}}, plans=PLANS, ledger=store)
    app.add_middleware(ZeroClickMiddleware, settings=settings)
    statuses, serving, after = asyncio.run(serve_and_stop(app, store, before))
    assert statuses == [200] * 4
    assert serving > before
    assert after == before
