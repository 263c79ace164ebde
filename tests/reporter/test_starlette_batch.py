"""Batch-channel meters and late header usage inside real Starlette requests under uvicorn."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.reporter.helpers import KEY, BatchAPI
from tests.servers import serve, uvicorn
from zc_middleware import Usage, ZeroClickSettings, metered, open_ledger
from zc_middleware.gate import Gate
from zc_middleware.outbox import open_outbox
from zc_middleware.reporter import Reporter


@pytest.fixture(scope="module")
def app_base(api_server: BatchAPI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    db = tmp_path_factory.mktemp("batch-app") / "zc.db"
    env = {"ZEROCLICK_LEDGER": f"sqlite:///{db}", "ZEROCLICK_API_KEY": KEY, "ZEROCLICK_API_BASE_URL": api_server.base}
    with serve(uvicorn("tests.apps.batch_app:app"), env=env) as base:
        yield base, f"sqlite:///{db}"


def test_batch_meter_goes_to_the_outbox_not_the_header(api: BatchAPI, app_base: tuple[str, str]) -> None:
    base, url = app_base
    headers = {"zc-agent-id": "buyer-1", "zc-request-id": "req-42"}
    response = httpx.post(base + "/render", headers=headers, timeout=10)
    assert response.status_code == 200
    assert response.headers["x-zeroclick-usage"] == "api-requests=1"  # compute-seconds is not in the header
    keys = api.wait_for(1)
    assert list(keys) == ["buyer-1:req-42:compute-seconds"]
    event = keys["buyer-1:req-42:compute-seconds"][0]
    assert (event["userId"], event["meter"], event["quantity"]) == ("buyer-1", "compute-seconds", 4)
    # the proxy retrying the same request id cannot bill it twice
    assert httpx.post(base + "/render", headers=headers, timeout=10).status_code == 200
    ledger = open_ledger(url, plans={"starter": {"default": True}})
    try:
        assert ledger.balance("buyer-1").plan == "starter"
    finally:
        ledger.close()
    outbox = open_outbox(url)
    try:
        status = outbox.status()
        assert status.pending + status.sent == 1  # one event for req-42, however often it ran
    finally:
        outbox.close()


def test_late_header_usage_of_a_stream_lands_in_the_outbox(api: BatchAPI, app_base: tuple[str, str]) -> None:
    base, _ = app_base
    with httpx.stream("GET", base + "/stream", headers={"zc-agent-id": "buyer-2"}, timeout=10) as response:
        assert response.status_code == 200
        assert "x-zeroclick-usage" not in response.headers  # 0 tokens when the headers left
        assert response.read() == b"chunk-0\nchunk-1\nchunk-2\n"
    keys = api.wait_for(1)
    ((key, deliveries),) = keys.items()
    assert key.startswith("buyer-2:zc-") and key.endswith(":tokens")  # no zc-request-id: a generated one
    assert (deliveries[0]["userId"], deliveries[0]["quantity"]) == ("buyer-2", 30)


def test_shared_file_settles_and_queues_in_one_transaction(api: BatchAPI, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'zc.db'}"
    settings = ZeroClickSettings(
        meters={"compute-seconds": {"channel": "batch"}},
        plans={"p": {"default": True, "includes": {"compute-seconds": {"limit": 100}}}},
        ledger=url,
        api_key=KEY,
        api_base_url=api.base,
    )
    assert settings.outbox == url  # the default: the ledger's file
    reporter = Reporter(open_outbox(url), api_key=KEY, base_url=api.base, flush_interval=60)
    gate = Gate(settings, reporter=reporter)
    try:
        assert gate.ledger.joins(reporter.outbox)  # the store says so: one transaction for both
        charge = gate.charge_for(metered("compute-seconds", estimate=30)(lambda: None))
        assert charge is not None
        usage = Usage()
        gate.check({"zc-agent-id": "b", "zc-request-id": "r1"}.get, charge, usage)
        usage.add("compute-seconds", 7)
        gate.finish(usage, success=True)
        assert gate.ledger.balance("b").meter("compute-seconds").used == 7
        assert reporter.outbox.status().pending == 1
        assert reporter.counters["queued"] == 1
        assert reporter.flush(5)
        assert api.wait_for(1)["b:r1:compute-seconds"][0]["quantity"] == 7
    finally:
        reporter.close(timeout=1)
        gate.close()
        reporter.outbox.close()


def test_a_long_request_id_and_meter_name_still_make_a_valid_key(tmp_path: Path) -> None:
    """200 characters of request id and a 62-character meter pass the API's 255: the key is hashed,
    and the usage is queued (it used to raise out of the middleware, and be lost)."""
    meter = "m" * 62
    url = f"sqlite:///{tmp_path / 'zc.db'}"
    settings = ZeroClickSettings(
        meters={meter: {"channel": "batch"}},
        plans={"p": {"default": True, "includes": {meter: {"limit": 100}}}},
        ledger=url,
        api_key=KEY,
        api_base_url="http://127.0.0.1:9",
    )
    reporter = Reporter(open_outbox(url), api_key=KEY, base_url=settings.api_base_url, flush_interval=60)
    gate = Gate(settings, reporter=reporter)
    try:
        charge = gate.charge_for(metered(meter, estimate=10)(lambda: None))
        assert charge is not None
        for _ in range(2):  # the proxy retrying the same request: the same key
            usage = Usage()
            gate.check({"zc-agent-id": "b", "zc-request-id": "r" * 200}.get, charge, usage)
            usage.add(meter, 7)
            gate.finish(usage, success=True)
        assert gate.ledger.balance("b").meter(meter).used == 14
        assert reporter.outbox.status().pending == 1
        assert gate.stats["outbox_errors"] == 0
    finally:
        reporter.close(timeout=0.1)
        gate.close()
        reporter.outbox.close()


def test_batch_meters_without_an_api_key_fail_at_start_up() -> None:
    with pytest.raises(ValueError, match="api_key"):
        ZeroClickSettings(meters={"compute-seconds": {"channel": "batch"}}, ledger="memory://")
