"""Usage recorded past a route's hold, on every ledger backend: billed at the hold (``cap``), or with
``over_estimate="bill"`` the excess debited apart, atomically and only while the plan covers it.
Either way a buyer's ``used`` never passes the plan's limit."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal

import httpx
import pytest

from tests.ledger.test_contract import url  # noqa: F401  (fixture: every backend)
from tests.postgres_db import postgres_server, postgres_url  # noqa: F401  (fixtures)
from zc_middleware import Gate, Usage, ZeroClickSettings, metered, open_ledger
from zc_middleware.ledger import Hold, Refusal
from zc_middleware.meters import Charge
from zc_middleware.outbox import open_outbox
from zc_middleware.reporter import Reporter

PLANS = {"p": {"default": True, "includes": {"gpu-seconds": {"limit": 50, "reset": "month"}}}}
KEY = "zc_test_key"


def make_gate(where: str, mode: Literal["cap", "bill"], outbox: Path | None = None) -> Gate:
    """A Gate on the ledger at ``where``; with ``outbox``, a batch channel queuing into that SQLite file
    (its sender talks to a stand-in API that is always busy, so every event stays there to be read)."""
    settings = ZeroClickSettings(
        meters={"gpu-seconds": {}},
        plans=PLANS,
        ledger=where,
        over_estimate=mode,
        api_key=KEY if outbox else None,
        api_base_url="http://127.0.0.1:9",
    )
    reporter = None
    if outbox is not None:
        busy = httpx.MockTransport(lambda request: httpx.Response(503))
        box = open_outbox(f"sqlite:///{outbox}")
        reporter = Reporter(box, api_key=KEY, base_url=settings.api_base_url, flush_interval=3600, transport=busy)
    return Gate(settings, ledger=open_ledger(where, plans=PLANS), reporter=reporter)


@pytest.fixture
def gates(url: str, tmp_path: Path) -> Iterator[dict[str, Gate]]:  # noqa: F811
    made = {mode: make_gate(url, mode, tmp_path / f"{mode}.db") for mode in ("cap", "bill")}
    yield made
    for gate in made.values():
        gate.close_reporter(0)
        gate.close()
        assert gate.reporter is not None
        gate.reporter.outbox.close()


def charge(gate: Gate) -> Charge:
    found = gate.charge_for(metered("gpu-seconds", estimate=5)(lambda: None))
    assert found is not None
    return found


def request(gate: Gate, buyer: str, records: int, rid: str = "r1") -> tuple[int, str | None]:
    """One paid request recording ``records``: its status and usage header, settled as a server would."""
    usage = Usage()
    allowed = gate.check_buyer(buyer, {"zc-request-id": rid}.get, charge(gate), usage)
    if getattr(allowed, "status", 200) != 200:
        return 402, None
    usage.add("gpu-seconds", records)
    header = usage.report()
    gate.finish(usage, success=True)
    return 200, header


def used(gate: Gate, buyer: str) -> int:
    return gate.ledger.balance(buyer).meter("gpu-seconds").used


def queued(gate: Gate) -> dict[str, int]:
    """Every event the Gate queued so far, by key."""
    assert gate.reporter is not None
    path = gate.reporter.outbox.url.removeprefix("sqlite:///")
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return {key: json.loads(body)["quantity"] for key, body in conn.execute("SELECT key, body FROM zc_outbox")}


def test_cap_bills_the_estimate_and_logs_the_excess(gates: dict[str, Gate], caplog: pytest.LogCaptureFixture) -> None:
    gate = gates["cap"]
    with caplog.at_level(logging.ERROR, logger="zc_middleware"):
        assert request(gate, "b", 40) == (200, "gpu-seconds=5")
    assert used(gate, "b") == 5
    assert gate.stats["over_estimate"] == 1
    (record,) = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert all(part in record.getMessage() for part in ("b used 40", "'gpu-seconds'", "the 5 checked", "other 35"))
    assert queued(gate) == {}  # the header said it all


def test_cap_under_concurrency_never_passes_the_limit(gates: dict[str, Gate]) -> None:
    gate = gates["cap"]
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda i: request(gate, "b", 40, f"r{i}"), range(100)))
    assert sum(status == 200 for status, _ in answers) == 10
    assert used(gate, "b") == 50
    assert gate.stats["over_estimate"] == 10


def test_bill_debits_the_excess_only_while_the_plan_covers_it(
    gates: dict[str, Gate], caplog: pytest.LogCaptureFixture
) -> None:
    gate = gates["bill"]
    assert request(gate, "b", 40, "r1") == (200, "gpu-seconds=5")  # the header never says past the hold
    assert used(gate, "b") == 40  # 5 held, 35 more debited: the plan covered them
    assert queued(gate) == {"b:r1:gpu-seconds": 35}  # the part the header did not say, by the batch channel
    with caplog.at_level(logging.ERROR, logger="zc_middleware"):
        assert request(gate, "b", 40, "r2") == (200, "gpu-seconds=5")
    assert used(gate, "b") == 45  # 35 more would pass 50: billed at the estimate, logged
    assert queued(gate) == {"b:r1:gpu-seconds": 35}  # nothing more
    assert (gate.stats["over_estimate_billed"], gate.stats["over_estimate"]) == (1, 1)
    assert any("b used 40" in r.getMessage() for r in caplog.records if r.levelno == logging.ERROR)


def test_bill_under_concurrency_never_passes_the_limit(gates: dict[str, Gate]) -> None:
    gate = gates["bill"]
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda i: request(gate, "b", 12, f"r{i}"), range(60)))
    billed = gate.stats["over_estimate_billed"]
    assert used(gate, "b") <= 50
    assert used(gate, "b") == 5 * sum(status == 200 for status, _ in answers) + 7 * billed
    assert sum(queued(gate).values()) == 7 * billed  # every debited excess is reported, once


def test_bill_settles_the_async_way_too(gates: dict[str, Gate]) -> None:
    gate = gates["bill"]
    usage = Usage()
    gate.check_buyer("b", {"zc-request-id": "ra"}.get, charge(gate), usage)
    usage.add("gpu-seconds", 9)
    usage.report()

    async def settle() -> None:
        try:
            await gate.afinish(usage, success=True)
        finally:
            aclose = getattr(gate.ledger, "aclose", None)  # networked ledgers: their async client, in its loop
            if aclose is not None:
                await aclose()

    asyncio.run(settle())
    assert used(gate, "b") == 9
    assert queued(gate) == {"b:ra:gpu-seconds": 4}


def test_bill_without_a_batch_channel_caps(url: str) -> None:  # noqa: F811
    """The excess of a header meter has no channel left once the header went out: billed at the hold."""
    gate = make_gate(url, "bill")
    try:
        assert request(gate, "b", 40) == (200, "gpu-seconds=5")
        assert used(gate, "b") == 5
        assert gate.stats["over_estimate"] == 1
    finally:
        gate.close()


def test_a_failed_request_bills_nothing_even_past_its_hold(gates: dict[str, Gate]) -> None:
    for gate in gates.values():
        usage = Usage()
        gate.check_buyer("f", {}.get, charge(gate), usage)
        usage.add("gpu-seconds", 40)
        gate.finish(usage, success=False)
        assert used(gate, "f") == 0


def test_the_setting_reads_from_the_environment_and_framework_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    from zc_middleware.settings import settings_from_mapping

    base = {"METERS": {"gpu-seconds": {}}, "LEDGER": "memory://"}
    assert settings_from_mapping(base, "ZEROCLICK").over_estimate == "cap"
    assert settings_from_mapping({**base, "OVER_ESTIMATE": "bill"}, "ZEROCLICK").over_estimate == "bill"
    monkeypatch.setenv("ZEROCLICK_OVER_ESTIMATE", "bill")
    assert settings_from_mapping(base, "ZEROCLICK").over_estimate == "bill"
    with pytest.raises(ValueError, match="over_estimate"):
        ZeroClickSettings(meters={"gpu-seconds": {}}, over_estimate="maybe")  # type: ignore[arg-type]


def test_debit_is_all_or_nothing_and_only_while_the_plan_covers_it(url: str) -> None:  # noqa: F811
    plans = {"p": {"default": True, "includes": {"gpu-seconds": {"limit": 50}, "api-requests": {"limit": 3}}}}
    ledger = open_ledger(url, plans=plans)
    try:
        assert isinstance(ledger.debit("b", {"gpu-seconds": 30, "api-requests": 3}), Hold)
        refused = ledger.debit("b", {"gpu-seconds": 10, "api-requests": 1})  # gpu fits, api-requests does not
        assert isinstance(refused, Refusal) and refused.meter == "api-requests"
        assert isinstance(ledger.debit("b", {"gpu-seconds": 21}), Refusal)
        assert isinstance(ledger.debit("b", {"gpu-seconds": 20}), Hold)
        balance = ledger.balance("b")
        assert (balance.meter("gpu-seconds").used, balance.meter("api-requests").used) == (50, 3)
    finally:
        ledger.close()


def test_a_debit_is_no_lease(redis_url: str) -> None:
    """Where holds are leases that lapse unless settled, a debit is settled at once: it stays."""
    ledger = open_ledger(redis_url, plans=PLANS, hold_timeout=0.2)
    try:
        assert isinstance(ledger.debit("b", {"gpu-seconds": 30}), Hold)
        time.sleep(0.3)
        assert ledger.balance("b").meter("gpu-seconds").used == 30
    finally:
        ledger.close()


@pytest.mark.parametrize("mode", ["cap", "bill"])
def test_a_stream_recording_past_its_hold_after_the_header_reports_it_once(
    url: str,  # noqa: F811
    tmp_path: Path,
    mode: Literal["cap", "bill"],
) -> None:
    """The header went out saying nothing; 40 recorded afterwards. What is billed beyond what the
    header said leaves by the batch channel, once: the hold (cap), or all 40 the plan covers (bill)."""
    gate = make_gate(url, mode, tmp_path / "outbox.db")
    try:
        usage = Usage()
        gate.check_buyer("s", {"zc-request-id": "rs"}.get, charge(gate), usage)
        assert usage.report() is None  # the response started before anything was recorded
        usage.add("gpu-seconds", 40)
        gate.finish(usage, success=True)
        billed = 5 if mode == "cap" else 40
        assert used(gate, "s") == billed
        assert queued(gate) == {"s:rs:gpu-seconds": billed}
    finally:
        gate.close_reporter(0)
        gate.close()
        assert gate.reporter is not None
        gate.reporter.outbox.close()


def test_bill_with_the_ledger_and_outbox_in_one_sqlite_file(tmp_path: Path) -> None:
    """The debit of the hold and the events commit together there; the excess debited apart is in them."""
    db = tmp_path / "zc.db"
    gate = make_gate(f"sqlite:///{db}", "bill", db)
    try:
        assert gate.reporter is not None and gate.ledger.joins(gate.reporter.outbox)
        assert request(gate, "j", 12, "rj") == (200, "gpu-seconds=5")
        assert used(gate, "j") == 12
        assert queued(gate) == {"j:rj:gpu-seconds": 7}
    finally:
        gate.close_reporter(0)
        gate.close()
        assert gate.reporter is not None
        gate.reporter.outbox.close()
