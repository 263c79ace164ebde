"""Two app servers, each with two worker processes (uvicorn on Starlette, gunicorn on Flask), share
one store: a crowd of one buyer's paid requests spread over them never gets more than the plan holds.

The servers are separate processes on loopback, which is what a load balancer in front of several
hosts looks like to the store: many clients, each with its own connections and its own caches.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.apps.common import PLANS, VARY_ESTIMATE
from tests.hosts.launch import Host, host
from zc_middleware import open_ledger

#: a crowd of 100 requests on two cores queues for its connections: the store's answer may take
#: longer than the default 0.5 s here without the store being unavailable
ENV = {"ZEROCLICK_LEDGER_TIMEOUT": "10"}


@pytest.fixture(scope="module")
def hosts(store: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Host]]:
    logs: Path = tmp_path_factory.mktemp("hosts")
    with (
        host("uvicorn", store, logs / "uvicorn.log", env=ENV) as one,
        host("gunicorn", store, logs / "gunicorn.log", env=ENV) as two,
    ):
        yield [one, two]


async def crowd(hosts: list[Host], buyer: str, paths: list[str]) -> list[httpx.Response]:
    """All of ``paths`` at once, spread over ``hosts`` in turn, as one buyer."""
    limits = httpx.Limits(max_connections=len(paths))
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:
        sends = [
            client.get(hosts[i % len(hosts)].base + path, headers={"zc-agent-id": buyer})
            for i, path in enumerate(paths)
        ]
        return list(await asyncio.gather(*sends))


def used(store: str, buyer: str, meter: str) -> int:
    ledger = open_ledger(store, plans=PLANS)
    try:
        return ledger.balance(buyer).meter(meter).used
    finally:
        ledger.close()


def test_ten_times_the_limit_over_two_hosts_grants_exactly_the_limit(hosts: list[Host], store: str) -> None:
    limit = PLANS["starter"]["includes"]["api-requests"]["limit"]
    buyer = f"crowd-{uuid.uuid4().hex[:8]}"
    answers = asyncio.run(crowd(hosts, buyer, ["/search"] * (10 * limit)))
    assert Counter(a.status_code for a in answers) == {200: limit, 402: 9 * limit}
    assert {a.headers["x-zeroclick-usage"] for a in answers if a.status_code == 200} == {"api-requests=1"}
    assert used(store, buyer, "api-requests") == limit


def test_a_variable_cost_route_bills_exactly_what_the_successes_reported(hosts: list[Host], store: str) -> None:
    limit = PLANS["starter"]["includes"]["compute-seconds"]["limit"]
    buyer = f"vary-{uuid.uuid4().hex[:8]}"
    units = [random.randint(1, VARY_ESTIMATE) for _ in range(10 * (limit // VARY_ESTIMATE))]
    answers = asyncio.run(crowd(hosts, buyer, [f"/vary?units={n}" for n in units]))
    assert {a.status_code for a in answers} <= {200, 402}
    billed = [(n, a.headers["x-zeroclick-usage"]) for n, a in zip(units, answers, strict=True) if a.status_code == 200]
    assert all(header == f"compute-seconds={n}" for n, header in billed)  # each success reports what it recorded
    # at least limit // estimate fit whatever the order; more may, as each records its estimate or less
    assert len(billed) >= limit // VARY_ESTIMATE
    total = sum(n for n, _ in billed)
    assert used(store, buyer, "compute-seconds") == total <= limit
