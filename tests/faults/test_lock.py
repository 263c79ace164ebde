"""Another process holds the SQLite ledger's write lock: an ASGI worker's event loop never waits for it.

Paid requests wait for the lock in a thread (up to the busy timeout) while the
loop keeps serving: a free route sent meanwhile answers at once, and the paid
ones are answered once the lock clears, or ``503 ledger_unavailable`` after the
busy timeout. Only what was answered 200 is billed, and the ledger says so.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.faults.conftest import UVICORN, billed, used, write_lock
from tests.servers import serve

pytest.importorskip("uvicorn")
pytest.importorskip("starlette")

HOLD = 3.0
#: how fast the free route must answer while paid requests wait for the lock
FREE_WITHIN = 0.050


class App:
    def __init__(self, base: str, db: Path, url: str, log: Path) -> None:
        self.base, self.db, self.url, self.log = base, db, url, log


def _serve(tmp_path: Path, busy_timeout: float) -> Iterator[App]:
    db = tmp_path / "ledger.db"
    url = f"sqlite:///{db}?busy_timeout={busy_timeout}"
    log = tmp_path / "server.log"
    with serve(UVICORN, env={"ZEROCLICK_LEDGER": url}, output=log) as base:
        yield App(base, db, url, log)


@pytest.fixture
def patient(tmp_path: Path) -> Iterator[App]:
    """The Starlette app under uvicorn; a write waits up to 10 s for another process's lock."""
    yield from _serve(tmp_path, 10.0)


@pytest.fixture
def hasty(tmp_path: Path) -> Iterator[App]:
    """The Starlette app under uvicorn; a write waits at most 0.5 s for another process's lock."""
    yield from _serve(tmp_path, 0.5)


async def _during_lock(app: App, buyers: list[str]) -> tuple[list[httpx.Response], list[float], float]:
    """Paid requests from ``buyers`` sent while another process holds the lock, then the free route
    0.3 s later: the paid responses, their latencies, and the free route's latency."""
    async with (
        httpx.AsyncClient(base_url=app.base, timeout=30) as client,
        httpx.AsyncClient(base_url=app.base, timeout=30) as other,
    ):

        async def paid(buyer: str) -> tuple[httpx.Response, float]:
            started = time.perf_counter()
            response = await client.get("/search", headers={"zc-agent-id": buyer})
            return response, time.perf_counter() - started

        assert (await other.get("/free")).status_code == 200  # its connection is open: the server is timed
        with write_lock(app.db, HOLD):
            tasks = [asyncio.create_task(paid(b)) for b in buyers]
            await asyncio.sleep(0.3)
            started = time.perf_counter()
            free = await other.get("/free")
            free_latency = time.perf_counter() - started
            assert free.status_code == 200
            done = await asyncio.gather(*tasks)
    return [r for r, _ in done], [t for _, t in done], free_latency


def _warm(app: App, buyers: list[str]) -> int:
    """One paid request per buyer, before any lock (their accounts exist then); returns what it billed."""
    total = 0
    with httpx.Client(base_url=app.base, timeout=10) as client:
        for buyer in buyers:
            response = client.get("/search", headers={"zc-agent-id": buyer})
            assert response.status_code == 200
            total += billed(response)
    return total


def test_free_route_answers_while_paid_requests_wait_for_the_lock(patient: App) -> None:
    buyers = ["lock-a", "lock-b", "lock-a", "lock-c"]  # lock-c is new: its account is created under the lock
    billed_before = _warm(patient, ["lock-a", "lock-b"])
    responses, latencies, free_latency = asyncio.run(_during_lock(patient, buyers))

    assert free_latency < FREE_WITHIN, f"the free route took {free_latency * 1000:.0f} ms while the lock was held"
    assert [r.status_code for r in responses] == [200] * len(buyers)
    # answered once the lock cleared, not before: they did wait for it
    assert min(latencies) > HOLD - 0.5
    total = billed_before + sum(billed(r) for r in responses)
    assert total == len(buyers) + 2
    assert sum(used(patient.url, b) for b in {"lock-a", "lock-b", "lock-c"}) == total


def test_paid_requests_answer_503_after_the_busy_timeout(hasty: App) -> None:
    billed_before = _warm(hasty, ["slow-a"])
    responses, latencies, free_latency = asyncio.run(_during_lock(hasty, ["slow-a", "slow-b"]))

    assert free_latency < FREE_WITHIN, f"the free route took {free_latency * 1000:.0f} ms while the lock was held"
    assert [r.status_code for r in responses] == [503, 503]
    assert [r.json()["error"] for r in responses] == ["ledger_unavailable"] * 2
    assert all(not billed(r) for r in responses)
    assert max(latencies) < HOLD - 0.5  # refused after the busy timeout, not when the lock cleared

    with httpx.Client(base_url=hasty.base, timeout=10) as client:  # the lock is gone: served again
        after = [client.get("/search", headers={"zc-agent-id": b}) for b in ("slow-a", "slow-b")]
    assert [r.status_code for r in after] == [200, 200]
    assert used(hasty.url, "slow-a") == billed_before + billed(after[0]) == 2
    assert used(hasty.url, "slow-b") == billed(after[1]) == 1
    assert "unavailable" in hasty.log.read_text()


def test_batch_events_wait_for_a_locked_outbox_off_the_loop(tmp_path: Path) -> None:
    """An outbox in a file of its own: a paid request's batch events are queued after its response; while
    another process holds the outbox's lock they wait for it in a thread, and then are delivered."""
    from tests.reporter.helpers import KEY, batch_api

    outbox = tmp_path / "outbox.db"
    env = {
        "ZEROCLICK_LEDGER": f"sqlite:///{tmp_path / 'ledger.db'}",
        "ZEROCLICK_OUTBOX": f"sqlite:///{outbox}?busy_timeout=10",
        "ZC_TEST_API_KEY": KEY,
    }
    with batch_api() as api, serve(UVICORN, env={**env, "ZC_TEST_BATCH_API": api.base}) as base:
        api.configure()
        with httpx.Client(base_url=base, timeout=30) as client, httpx.Client(base_url=base, timeout=30) as other:
            assert other.get("/free").status_code == 200
            with write_lock(outbox, HOLD):
                rendered = client.post("/render", headers={"zc-agent-id": "batch-a"})
                started = time.perf_counter()
                free = other.get("/free")
                free_latency = time.perf_counter() - started
        assert rendered.status_code == 200
        assert "compute-seconds" not in rendered.headers.get("x-zeroclick-usage", "")  # on the batch channel
        assert free.status_code == 200
        assert free_latency < FREE_WITHIN, f"the free route took {free_latency * 1000:.0f} ms while the lock was held"
        keys = api.wait_for(1)
    assert [(d[0]["userId"], d[0]["meter"], d[0]["quantity"]) for d in keys.values()] == [
        ("batch-a", "compute-seconds", 4)
    ]


def test_busy_timeout_is_a_ledger_url_option(tmp_path: Path) -> None:
    from zc_middleware import ConfigError, ZeroClickSettings

    ZeroClickSettings(meters={"api-requests": {}}, ledger=f"sqlite:///{tmp_path / 'a.db'}?busy_timeout=0.5")
    for bad in ("busy_timeout=soon", "busy_timeout=-1", "timeout=1", "busy_timeout=1&busy_timeout=2"):
        with pytest.raises(ConfigError, match="busy_timeout=SECONDS"):
            ZeroClickSettings(meters={"api-requests": {}}, ledger=f"sqlite:///{tmp_path / 'a.db'}?{bad}")
