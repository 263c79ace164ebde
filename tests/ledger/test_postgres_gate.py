"""A Starlette app on a ``postgresql://`` ledger: paid requests are served through the async pool, settled
with their batch events there too, and answered 503 ``ledger_unavailable`` (never a 500) while the
server cannot be reached."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.ledger.test_postgres import admin, database, terminate
from tests.postgres_db import postgres_server, postgres_url  # noqa: F401  (fixtures)

pytest.importorskip("psycopg", reason="psycopg not installed: pip install -e '.[postgres]'")
pytest.importorskip("starlette", reason="starlette not installed")

import httpx
import psycopg
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from zc_middleware import ZeroClickSettings, metered, open_ledger, record_usage
from zc_middleware.gate import Gate
from zc_middleware.starlette import ZeroClickMiddleware

PLANS = {"two": {"default": True, "includes": {"api-requests": {"limit": 2, "reset": "month"}}}}


@metered("api-requests")
async def paid(request: Request) -> PlainTextResponse:
    return PlainTextResponse("paid")


def test_paid_requests_then_402_then_503_while_the_server_is_away(postgres_url: str) -> None:  # noqa: F811
    app = Starlette(routes=[Route("/paid", paid)])
    settings = ZeroClickSettings(meters={"api-requests": {}}, plans=PLANS, ledger=postgres_url)
    ledger = open_ledger(postgres_url, plans=PLANS)
    app.add_middleware(ZeroClickMiddleware, settings=settings, ledger=ledger)
    name = database(postgres_url)

    async def scenario() -> list[tuple[int, str, float]]:
        answers = []
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:

            async def get(buyer: str) -> None:
                start = time.monotonic()
                response = await client.get("/paid", headers={"zc-agent-id": buyer})
                error = response.json().get("error", "") if response.status_code != 200 else ""
                answers.append((response.status_code, error, time.monotonic() - start))

            for _ in range(3):
                await get("agent-1")
            admin(f"ALTER DATABASE {name} ALLOW_CONNECTIONS false")
            try:
                terminate(postgres_url)
                for _ in range(3):
                    await get("agent-2")
            finally:
                admin(f"ALTER DATABASE {name} ALLOW_CONNECTIONS true")
            await get("agent-2")
        return answers

    try:
        answers = asyncio.run(scenario())
    finally:
        ledger.close()
    assert [a[:2] for a in answers[:3]] == [(200, ""), (200, ""), (402, "payment_required")]
    assert [a[:2] for a in answers[3:6]] == [(503, "ledger_unavailable")] * 3
    assert all(seconds < 1.5 for _, _, seconds in answers[3:6])  # the 0.5 s timeout, give or take a busy machine
    assert answers[6][:2] == (200, "")  # connections are made again as soon as the server lets them


@metered("compute-seconds", estimate=30)
async def render(request: Request) -> PlainTextResponse:
    record_usage("compute-seconds", 4)
    return PlainTextResponse("rendered")


def test_an_asgi_settle_with_batch_events_runs_on_the_async_pool(postgres_url: str) -> None:  # noqa: F811
    plans = {"day": {"default": True, "includes": {"compute-seconds": {"limit": 100, "reset": "day"}}}}
    settings = ZeroClickSettings(
        meters={"compute-seconds": {"channel": "batch"}},
        plans=plans,
        ledger=postgres_url,
        api_key="sk-test",
        api_base_url="http://127.0.0.1:9",  # nothing listens: the events stay queued
    )
    ledger = open_ledger(postgres_url, plans=plans)
    gate = Gate(settings, ledger=ledger)
    app = Starlette(routes=[Route("/render", render)])
    app.add_middleware(ZeroClickMiddleware, gate=gate)

    async def call() -> int:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return (await client.get("/render", headers={"zc-agent-id": "batcher"})).status_code

    try:
        assert asyncio.run(call()) == 200
        assert ledger.database._pool is None  # type: ignore[attr-defined]  # the sync pool was never opened
        assert ledger.balance("batcher").meter("compute-seconds").used == 4
    finally:
        gate.close_reporter(timeout=0)
        ledger.close()
    with psycopg.connect(postgres_url) as conn:
        rows = conn.execute("SELECT user_id, meter, quantity FROM zeroclick_outbox").fetchall()
    assert rows == [("batcher", "compute-seconds", 4)]  # queued in the settle's transaction
