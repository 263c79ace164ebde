"""The batch channel on all six adapters under real servers: ``compute-seconds`` goes to a stand-in for
ZeroClick's batch API as events keyed ``{buyer}:{request id}:{meter}``, so buyers who reuse a request
id are each billed, once."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import Served, serve_adapter
from tests.reporter.helpers import KEY, BatchAPI, batch_api
from tests.servers import ADAPTERS

_ids = itertools.count()


@pytest.fixture(scope="module")
def api_server() -> Iterator[BatchAPI]:
    with batch_api() as api:
        yield api


@pytest.fixture(scope="module", params=sorted(ADAPTERS))
def batched(
    request: pytest.FixtureRequest, api_server: BatchAPI, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    """The scenario app with ``compute-seconds`` on the batch channel."""
    yield from serve_adapter(request.param, tmp_path_factory, ZC_TEST_BATCH_API=api_server.base, ZC_TEST_API_KEY=KEY)


def test_buyers_reusing_a_request_id_are_each_billed_once(batched: Served, api_server: BatchAPI) -> None:
    name, base = batched.name, batched.base
    api_server.configure()
    run = next(_ids)
    buyers = [f"{name}-a-{run}", f"{name}-b-{run}"]
    for buyer in buyers:
        for _ in range(2):  # the same request id twice for the same buyer: one event, one bill
            headers = {"zc-agent-id": buyer, "zc-request-id": f"req-{run}"}
            response = httpx.post(base + "/render", headers=headers, timeout=10)
            assert response.status_code == 200, response.text
            assert "x-zeroclick-usage" not in response.headers  # compute-seconds leaves by the batch channel
    keys = api_server.wait_for(2)
    assert set(keys) == {f"{buyer}:req-{run}:compute-seconds" for buyer in buyers}
    assert {k: (v[0]["userId"], v[0]["quantity"]) for k, v in keys.items()} == {
        f"{buyer}:req-{run}:compute-seconds": (buyer, 4) for buyer in buyers
    }
