"""What only the SQLite ledger promises: several processes, restarts, changed settings."""

from __future__ import annotations

import multiprocessing
import sqlite3
from pathlib import Path

import pytest

from tests.ledger.test_contract import PLANS
from zc_middleware import ConfigError, ZeroClickSettings, open_ledger
from zc_middleware.ledger import Hold


def _worker(url: str, attempts: int, start: multiprocessing.synchronize.Event, out: multiprocessing.Queue) -> None:
    ledger = open_ledger(url, plans=PLANS)
    start.wait()
    granted = sum(isinstance(ledger.reserve("crowd", {"api-requests": 1}), Hold) for _ in range(attempts))
    ledger.close()
    out.put(granted)


def test_four_processes_sharing_one_file_cannot_overspend(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    open_ledger(url, plans=PLANS).close()  # create the schema once
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Event()
    out: multiprocessing.Queue = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(url, 50, start, out)) for _ in range(4)]
    for proc in procs:
        proc.start()
    start.set()
    granted = [out.get(timeout=60) for _ in procs]
    for proc in procs:
        proc.join(30)
        assert proc.exitcode == 0
    assert sum(granted) == 50  # 200 attempts, 50 units
    ledger = open_ledger(url, plans=PLANS)
    assert ledger.balance("crowd").meter("api-requests").used == 50
    ledger.close()


def test_state_survives_a_restart_and_follows_changed_limits(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    ledger = open_ledger(url, plans=PLANS)
    assert isinstance(ledger.reserve("b", {"api-requests": 40}), Hold)
    ledger.close()
    tighter = {"starter": {"default": True, "includes": {"api-requests": {"limit": 30}}}}
    ledger = open_ledger(url, plans=tighter)
    assert not isinstance(ledger.reserve("b", {"api-requests": 1}), Hold)
    ledger.close()
    ledger = open_ledger(url, plans=PLANS)
    assert ledger.balance("b").meter("api-requests").used == 40
    assert isinstance(ledger.reserve("b", {"api-requests": 10}), Hold)
    ledger.close()


def test_no_checkpoint_on_the_request_path(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    ledger = open_ledger(f"sqlite:///{path}", plans=PLANS)
    ledger.reserve("b", {"api-requests": 1})
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()
    assert ledger.database.run("PRAGMA wal_autocheckpoint") == [(0,)]  # type: ignore[attr-defined]
    ledger.close()


@pytest.mark.parametrize("url", ["sqlite:///:memory:", "sqlite://", "mysql://x/y", "zeroclick.db"])
def test_bad_ledger_urls_fail_at_configuration(url: str) -> None:
    with pytest.raises((ConfigError, ValueError), match="ledger"):
        ZeroClickSettings(meters={"api-requests": {}}, ledger=url)
