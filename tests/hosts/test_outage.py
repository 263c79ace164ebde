"""The shared store stops in the middle of a load and comes back: two app servers (``on_ledger_error``
deny, the default, and allow) keep answering, reconnect by themselves, and log the outage once.

Redis is shut down (saving its data, as a restart would) and started again on the same port;
PostgreSQL stops accepting connections to the tests' database and ends the open ones, as a
restart or a failover does. The machine's own servers are never touched.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.apps.common import PLANS
from tests.hosts.launch import Host, host
from tests.ledger.redis_servers import RedisServer
from zc_middleware import open_ledger

LIMIT = PLANS["starter"]["includes"]["api-requests"]["limit"]
#: requests each client sends as one buyer before it takes the next: some 402s between the 200s
PER_BUYER = LIMIT + 2


@dataclass(frozen=True)
class Outage:
    url: str
    stop: Callable[[], None]
    start: Callable[[], None]


@pytest.fixture(scope="module", params=["redis", "postgresql"])
def outage(request: pytest.FixtureRequest) -> Iterator[Outage]:
    if request.param == "redis":
        server: RedisServer = request.getfixturevalue("own_redis")

        def stop() -> None:
            assert server.process is not None
            server.cli("shutdown", "save")  # keeps what it holds in dump.rdb, which start() loads again
            server.process.wait(10)
            server.process = None

        yield Outage(f"redis://{server.address}/0", stop, server.start)
        return
    from tests.ledger.test_postgres import admin, database, terminate

    url = str(request.getfixturevalue("postgres_server"))
    name = database(url)

    def refuse() -> None:
        admin(f"ALTER DATABASE {name} ALLOW_CONNECTIONS false")
        terminate(url)

    try:
        yield Outage(url, refuse, lambda: admin(f"ALTER DATABASE {name} ALLOW_CONNECTIONS true"))
    finally:
        admin(f"ALTER DATABASE {name} ALLOW_CONNECTIONS true")


@dataclass(frozen=True)
class Answer:
    server: str
    buyer: str
    sent: str  # the phase when it was sent: up, down, back
    done: str  # ... and when it was answered
    status: int
    error: str


async def load(hosts: dict[str, Host], outage: Outage) -> list[Answer]:
    """Three clients per server, each buyer ``PER_BUYER`` requests; the store stops after a second,
    stays away for two and runs for two more. The clients pause while the store is being stopped:
    PostgreSQL's connections are ended one by one, and a request on one not yet ended would rightly
    count as the store answering again (a second outage in the log, not the one this test makes)."""
    phase, answers = "up", []
    running = True
    sending = asyncio.Event()
    sending.set()
    in_flight = 0

    async def client(name: str, base: str, number: int, http: httpx.AsyncClient) -> None:
        nonlocal in_flight
        for serial in itertools.count():
            await sending.wait()
            if not running:
                return
            buyer = f"{name}-{number}-{serial // PER_BUYER}"
            sent = phase
            in_flight += 1
            try:
                response = await http.get(base + "/search", headers={"zc-agent-id": buyer})
            finally:
                in_flight -= 1
            error = response.json().get("error", "") if response.status_code != 200 else ""
            answers.append(Answer(name, buyer, sent, phase, response.status_code, error))
            await asyncio.sleep(0.01)

    async def stop_the_store() -> None:
        sending.clear()
        while in_flight:
            await asyncio.sleep(0.005)
        await asyncio.to_thread(outage.stop)
        sending.set()

    async with httpx.AsyncClient(timeout=30) as http:
        clients = [
            asyncio.create_task(client(name, h.base, number, http)) for name, h in hosts.items() for number in range(3)
        ]
        await asyncio.sleep(1)
        phase = "stopping"
        await stop_the_store()
        phase = "down"
        await asyncio.sleep(2)
        phase = "starting"
        await asyncio.to_thread(outage.start)
        phase = "back"
        await asyncio.sleep(2)
        running = False
        await asyncio.gather(*clients)
    return answers


def test_a_store_outage_mid_load_is_503_or_allowed_never_500_and_logged_once(outage: Outage, tmp_path: Path) -> None:
    allow = {"ZEROCLICK_ON_LEDGER_ERROR": "allow"}
    with (
        host("uvicorn", outage.url, tmp_path / "deny.log", workers=1) as deny,
        host("uvicorn", outage.url, tmp_path / "allow.log", workers=1, env=allow) as allowing,
    ):
        answers = asyncio.run(load({"deny": deny, "allow": allowing}, outage))
        logs = {"deny": deny.output(), "allow": allowing.output()}
    by_server: dict[str, list[Answer]] = defaultdict(list)
    for answer in answers:
        by_server[answer.server].append(answer)
    for name, mine in by_server.items():
        statuses = Counter(a.status for a in mine)
        assert set(statuses) <= {200, 402, 503}, (name, statuses)  # never a 500
        during = [a for a in mine if a.sent == a.done == "down"]
        after = [a for a in mine if a.sent == a.done == "back"]
        assert during and after
        if name == "deny":
            assert {(a.status, a.error) for a in during} == {(503, "ledger_unavailable")}
        else:
            assert {a.status for a in during} == {200}  # served unchecked, as configured
        assert 200 in {a.status for a in after}, (name, Counter(a.status for a in after))  # reconnected
        assert 503 not in {a.status for a in after}
        log = logs[name]
        assert log.count(" unavailable (") == 1, log  # once, not per request
        assert log.count("answers again after") == 1, log
        assert "Traceback" not in log
    # never an overspend: no buyer of the denying server got more than the plan, in answers or in the ledger
    ledger = open_ledger(outage.url, plans=PLANS)
    try:
        for buyer, count in Counter(a.buyer for a in by_server["deny"] if a.status == 200).items():
            assert count <= LIMIT
            assert ledger.balance(buyer).meter("api-requests").used <= LIMIT
    finally:
        ledger.close()
