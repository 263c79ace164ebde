"""The access path's core (:class:`Access`), its setting, and a write that meets a store it cannot use.

Writes here go through :meth:`Access.handle` as every adapter calls it; the adapters themselves,
under real servers, are ``tests/test_access_scenarios.py``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from zc_middleware import Gate, Ledger, ZeroClickSettings
from zc_middleware.access import Access
from zc_middleware.ledger.memory import MemoryLedger
from zc_middleware.ledger.sqlite import SQLiteLedger
from zc_middleware.sandbox.writes import Status, entitlement, signed_headers
from zc_middleware.settings import settings_from_mapping

SECRET, KID = "zeroclick-secret", "k1"
PLANS = {
    "starter": {"default": True, "includes": {"api-requests": {"limit": 5, "reset": "month"}}},
    "pro": {"includes": {"api-requests": {"limit": 50, "reset": "month"}}},
}
PATH = "/zeroclick/access"


def make_settings(**extra: Any) -> ZeroClickSettings:
    values: dict[str, Any] = {
        "meters": {"api-requests": {}},
        "plans": PLANS,
        "ledger": "memory://",
        "signing_secrets": {KID: SECRET},
        **extra,
    }
    return ZeroClickSettings(**values)


def send(access: Access, buyer: str, raw: bytes) -> tuple[int, dict[str, Any]]:
    headers = signed_headers(raw, path=PATH, agent=buyer, secret=SECRET, kid=KID)
    answer = access.handle("POST", PATH, raw, headers.get)
    return answer.status, json.loads(answer.body)


def post(
    access: Access,
    buyer: str,
    *,
    plan: str = "pro",
    status: Status = "active",
    version: int = 1,
    start: float | None = None,
    body: bytes | None = None,
) -> tuple[int, dict[str, Any]]:
    raw = (
        body
        if body is not None
        else entitlement(agent=buyer, plan=plan, status=status, start=start or time.time(), end=None, version=version)
    )
    return send(access, buyer, raw)


@pytest.fixture
def gate() -> Iterator[Gate]:
    gate = Gate(make_settings())
    yield gate
    gate.close()


def test_a_write_puts_the_buyer_on_its_plan_and_counts_in_no_paid_stat(gate: Gate) -> None:
    assert gate.access is not None
    assert post(gate.access, "agent-1") == (200, {"lifecycle": "active"})
    balance = gate.ledger.balance("agent-1")
    assert (balance.plan, balance.meter("api-requests").limit) == ("pro", 50)
    assert balance.meter("api-requests").used == 0
    [change] = gate.ledger.history("agent-1")
    assert (change.kid, change.version) == (KID, 1)
    assert gate.stats == {}  # nothing about a write is a paid request's
    assert gate.access.stats == {"applied": 1}


def test_an_unknown_plan_is_refused_and_logged_with_the_declared_plans(
    gate: Gate, caplog: pytest.LogCaptureFixture
) -> None:
    assert gate.access is not None
    with caplog.at_level(logging.ERROR, logger="zc_middleware"):
        assert post(gate.access, "agent-2", plan="enterprise") == (400, {"error": "unknown_plan"})
    [record] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert "'enterprise'" in record.getMessage() and "starter, pro" in record.getMessage()
    assert gate.ledger.history("agent-2") == ()
    assert gate.ledger.balance("agent-2").plan == "starter"  # the default plan, as before


def test_an_invalid_write_names_its_fields_in_a_warning(gate: Gate, caplog: pytest.LogCaptureFixture) -> None:
    assert gate.access is not None
    body = json.loads(entitlement(agent="agent-3", plan="pro", status="active", start=time.time(), end=None, version=1))
    body["stateVersion"] = -1
    del body["state"]["period"]["end"]
    with caplog.at_level(logging.WARNING, logger="zc_middleware"):
        answer = post(gate.access, "agent-3", body=json.dumps(body).encode())
    assert answer == (400, {"error": "invalid_entitlement"})
    said = " ".join(r.getMessage() for r in caplog.records)
    assert "stateVersion" in said and "state.period.end" in said
    assert gate.ledger.history("agent-3") == ()


def test_a_buyer_id_the_ledger_refuses_is_an_invalid_write(gate: Gate) -> None:
    assert gate.access is not None
    assert post(gate.access, "two buyers") == (400, {"error": "invalid_entitlement"})


@pytest.mark.parametrize(
    ("field", "value"),
    [("stateVersion", 1 << 63), ("start", "0000-01-01T00:00:00Z")],
)
def test_values_the_sdk_accepts_but_no_store_can_keep_are_invalid_writes(gate: Gate, field: str, value: object) -> None:
    assert gate.access is not None
    body = json.loads(entitlement(agent="agent-7", plan="pro", status="active", start=time.time(), end=None, version=1))
    if field == "start":
        body["state"]["period"]["start"] = value
    else:
        body[field] = value
    assert post(gate.access, "agent-7", body=json.dumps(body).encode()) == (400, {"error": "invalid_entitlement"})
    assert gate.ledger.history("agent-7") == ()


class _Broken(MemoryLedger):
    """Fails between deciding and storing, as a store that dies mid-write would: nothing may stick."""

    def _apply_entitlement(self, write: Any, now: float) -> Any:
        raise OSError("disk I/O error")


def test_a_store_that_fails_is_503_and_the_write_can_be_sent_again() -> None:
    ledger = _Broken("memory://", plans=PLANS)
    gate = Gate(make_settings(), ledger=ledger)
    assert gate.access is not None
    assert post(gate.access, "agent-4") == (503, {"error": "seller_unavailable"})
    assert gate.ledger.history("agent-4") == ()
    assert gate.access.stats == {"seller_unavailable": 1}


def test_the_async_path_applies_through_the_ledger_async_method() -> None:
    calls: list[str] = []

    class Networked(MemoryLedger):
        async def aapply_entitlement(self, write: Any) -> Any:
            calls.append(write.buyer)
            return self.apply_entitlement(write)

    gate = Gate(make_settings(), ledger=Networked("memory://", plans=PLANS))
    assert gate.access is not None
    raw = entitlement(agent="agent-5", plan="pro", status="suspended", start=time.time(), end=None, version=1)
    headers = signed_headers(raw, path=PATH, agent="agent-5", secret=SECRET, kid=KID)
    answer = asyncio.run(gate.access.ahandle("POST", PATH, raw, headers.get))
    assert (answer.status, calls) == (200, ["agent-5"])
    assert gate.ledger.balance("agent-5").status == "capped"


def test_the_async_path_never_holds_the_event_loop_while_the_store_is_busy() -> None:
    release = threading.Event()

    class Busy(MemoryLedger):
        """A store that answers only once the event loop has run something else (a lock let go)."""

        def _apply_entitlement(self, write: Any, now: float) -> Any:
            if not release.wait(10):
                raise TimeoutError("the event loop was held")
            return super()._apply_entitlement(write, now)

    gate = Gate(make_settings(), ledger=Busy("memory://", plans=PLANS))
    assert gate.access is not None
    access = gate.access
    raw = entitlement(agent="agent-8", plan="pro", status="active", start=time.time(), end=None, version=1)
    headers = signed_headers(raw, path=PATH, agent="agent-8", secret=SECRET, kid=KID)

    async def write_while_the_loop_serves() -> int:
        task = asyncio.ensure_future(access.ahandle("POST", PATH, raw, headers.get))
        await asyncio.sleep(0.05)  # the loop serves other work meanwhile
        release.set()
        return (await task).status

    assert asyncio.run(write_while_the_loop_serves()) == 200
    assert len(gate.ledger.history("agent-8")) == 1


# -- the setting ------------------------------------------------------------------------------
def test_the_access_path_is_on_by_default_and_can_be_moved_or_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    assert make_settings().access_path == PATH
    assert make_settings(access_path="/hooks/zc").access_path == "/hooks/zc"
    assert Gate(make_settings(access_path=None)).access is None
    monkeypatch.setenv("ZEROCLICK_ACCESS_PATH", "")
    assert make_settings().access_path is None
    monkeypatch.setenv("ZEROCLICK_ACCESS_PATH", "/from/env")
    assert make_settings().access_path == "/from/env"
    django_style = {"METERS": {"api-requests": {}}, "ACCESS_PATH": None}
    assert settings_from_mapping(django_style, "ZEROCLICK").access_path is None


@pytest.mark.parametrize("bad", ["zeroclick/access", "/a b", "/access?x=1", "/a#b", 7])
def test_a_bad_access_path_is_a_configuration_error(bad: object) -> None:
    with pytest.raises(Exception, match="access_path"):
        make_settings(access_path=bad)


# -- a write that meets a locked SQLite file ---------------------------------------------------------
needs_sqlite_writes = pytest.mark.skipif(
    SQLiteLedger._apply_entitlement is Ledger._apply_entitlement, reason="the SQLite ledger takes no writes yet"
)

HOLD_LOCK = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.readline()
conn.execute("ROLLBACK")
"""


@needs_sqlite_writes
def test_a_write_while_another_process_holds_the_sqlite_lock_is_503_and_never_half_applied(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    ledger = SQLiteLedger(url, plans=PLANS, busy_timeout=0.5)
    gate = Gate(make_settings(ledger=url), ledger=ledger)
    assert gate.access is not None
    start = time.time() - 120
    assert post(gate.access, "agent-6", status="suspended", start=start) == (200, {"lifecycle": "active"})
    before = ledger.history("agent-6"), ledger.balance("agent-6").status
    extension = entitlement(agent="agent-6", plan="pro", status="active", start=start + 60, end=None, version=2)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(tmp_path / "ledger.db")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        assert send(gate.access, "agent-6", extension) == (503, {"error": "seller_unavailable"})
    finally:
        assert holder.stdin is not None
        holder.stdin.write("\n")
        holder.stdin.close()
        holder.wait(10)
        assert holder.stdout is not None
        holder.stdout.close()
    assert (ledger.history("agent-6"), ledger.balance("agent-6").status) == before
    # ZeroClick retries the same write once the lock is gone: applied, once
    assert send(gate.access, "agent-6", extension) == (200, {"lifecycle": "active"})
    assert send(gate.access, "agent-6", extension) == (200, {"lifecycle": "active"})
    assert len(ledger.history("agent-6")) == 2
    assert ledger.balance("agent-6").status == "active"
    gate.close()
