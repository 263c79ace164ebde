"""The SQLite ledger file is deleted or replaced while the app runs: never a silent second ledger.

Running processes stop writing to the file they had open (it is no longer the
ledger anyone else reads), processes started afterwards (a restarted uvicorn,
gunicorn's respawned workers) do not create or adopt a file in its place, and
every paid request answers ``503 ledger_unavailable`` with one ERROR per process
naming the path, until an operator runs ``zc-middleware ledger-restore``; then
the same processes serve again, and the ledger bills exactly what the usage
headers said.
"""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

from tests.apps.common import SCENARIO_PLANS
from tests.faults.conftest import LIMIT, Server, billed, restore, server, used
from zc_middleware import open_ledger


def _search(srv: Server, buyer: str) -> httpx.Response:
    """One paid request on a connection of its own, so that gunicorn hands it to any of its workers."""
    return httpx.get(srv.base + "/search", headers={"zc-agent-id": buyer}, timeout=30)


def _until_402(srv: Server, buyer: str) -> tuple[int, int]:
    """Paid requests until the plan refuses one: how many succeeded, and what their headers billed."""
    successes = total = 0
    for _ in range(LIMIT + 3):
        response = _search(srv, buyer)
        if response.status_code == 402:
            return successes, total
        assert response.status_code == 200, response.text
        successes += 1
        total += billed(response)
    raise AssertionError(f"{buyer} was never refused")


def _refused(srv: Server, buyers: list[str], times: int = 6) -> None:
    """Every paid request answers 503 ledger_unavailable, none is billed."""
    for _ in range(times):
        for buyer in buyers:
            response = _search(srv, buyer)
            assert response.status_code == 503, (response.status_code, response.text)
            assert response.json()["error"] == "ledger_unavailable"
            assert not billed(response)


def _errors_naming(srv: Server, path: Path) -> int:
    return sum(1 for line in srv.output().splitlines() if str(path) in line and "unavailable" in line)


@pytest.mark.parametrize("kind", ["uvicorn", "gunicorn"])
def test_deleted_ledger_is_not_recreated_until_restored(kind: str, tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    url = f"sqlite:///{db}"
    with server(kind, url, tmp_path) as srv:
        assert _until_402(srv, "spent") == (LIMIT, LIMIT)

        os.remove(db)  # as ``rm ledger.db`` while the app runs: its -wal and -shm stay
        _refused(srv, ["spent", "fresh"])  # the exhausted buyer is not served from a file nobody reads
        logged = _errors_naming(srv, db)
        assert 1 <= logged <= (1 if kind == "uvicorn" else 2)  # once per process, not once per request

        srv.respawn()  # new processes of an app that has opened this ledger before
        _refused(srv, ["spent", "fresh"])
        assert not db.exists()  # nothing created in its place
        assert _errors_naming(srv, db) > logged

        refused = restore(url)  # nothing at the path: the operator must say "start a new one"
        assert refused.returncode == 2 and f"no ledger at {db}" in refused.stderr
        done = restore(url, new=True)
        assert done.returncode == 0, done.stderr
        assert str(db) in done.stdout

        # the same processes, without a restart: a new, empty ledger, deliberately
        successes, total = _until_402(srv, "spent")
        assert successes == LIMIT
        assert used(url, "spent") == total == LIMIT


@pytest.mark.parametrize("kind", ["uvicorn", "gunicorn"])
def test_replaced_ledger_is_not_adopted_until_restored(kind: str, tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    url = f"sqlite:///{db}"
    other = tmp_path / "other.db"
    with server(kind, url, tmp_path) as srv:
        billed_before = sum(billed(_search(srv, "swap")) for _ in range(3))
        assert used(url, "swap") == billed_before == 3

        ledger = open_ledger(f"sqlite:///{other}", plans=SCENARIO_PLANS)  # another ledger: swap used 1 there
        ledger.reserve("swap", {"api-requests": 1})
        ledger.close()
        os.replace(other, db)

        _refused(srv, ["swap", "fresh"])
        logged = _errors_naming(srv, db)
        assert logged >= 1
        srv.respawn()
        _refused(srv, ["swap", "fresh"])
        assert _errors_naming(srv, db) > logged

        done = restore(url)
        assert done.returncode == 0, done.stderr

        successes, total = _until_402(srv, "swap")  # served from the restored file: 1 used there
        assert successes == LIMIT - 1
        assert used(url, "swap") == 1 + total == LIMIT


def test_ledger_moved_back_serves_again_without_the_command(tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    url = f"sqlite:///{db}"
    with server("uvicorn", url, tmp_path) as srv:
        first = _search(srv, "moved")
        assert first.status_code == 200
        os.rename(db, tmp_path / "aside.db")
        _refused(srv, ["moved"], times=2)
        os.rename(tmp_path / "aside.db", db)  # the very file the process had open: nothing was lost
        again = _search(srv, "moved")
        assert again.status_code == 200
        assert used(url, "moved") == billed(first) + billed(again) == 2


def test_usage_pending_in_a_deleted_ledger_is_delivered_after_the_restore(tmp_path: Path) -> None:
    """Batch events queued in the ledger's file (its outbox) and not yet delivered when the file was
    deleted: served usage, so the running process carries them over to the restored file and sends them."""
    from tests.reporter.helpers import KEY, batch_api

    db = tmp_path / "ledger.db"
    url = f"sqlite:///{db}"
    with batch_api() as api:
        api.configure(fail=1.0)  # the batch API is down: the events stay pending in the file
        env = {"ZC_TEST_BATCH_API": api.base, "ZC_TEST_API_KEY": KEY}
        with server("uvicorn", url, tmp_path, env) as srv:
            rendered = [httpx.post(srv.base + "/render", headers={"zc-agent-id": "late"}, timeout=30) for _ in "ab"]
            assert [r.status_code for r in rendered] == [200, 200]
            os.remove(db)
            _refused(srv, ["late"], times=1)
            api.configure()  # the batch API is back
            assert restore(url, new=True).returncode == 0
            keys = api.wait_for(2, timeout=30)
    assert (
        sorted((d[0]["userId"], d[0]["meter"], d[0]["quantity"]) for d in keys.values())
        == [("late", "compute-seconds", 4)] * 2
    )
