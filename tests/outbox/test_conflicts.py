"""A key already queued for other usage: the first report wins, and the other is logged at ERROR,
kept and counted (``status().conflicts``, ``zc-middleware outbox status``), never dropped silently."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from tests.outbox.test_contract import clock_outbox, ev, outbox  # noqa: F401  (fixtures)
from tests.postgres_db import postgres_server, postgres_url  # noqa: F401  (fixtures)
from zc_middleware import ZcError
from zc_middleware.cli import main
from zc_middleware.ledger import Hold, open_ledger
from zc_middleware.outbox import Outbox, open_outbox


@pytest.fixture
def box(outbox: Outbox) -> Outbox:  # noqa: F811  (the contract suite's fixture)
    """The contract suite's outbox, on every backend."""
    return outbox


def test_a_conflict_is_logged_kept_and_counted(box: Outbox, caplog: pytest.LogCaptureFixture) -> None:
    assert box.add([ev("a", 5)]) == 1
    with caplog.at_level(logging.ERROR, logger="zc_middleware"):
        assert box.add([ev("a", 6), ev("b", 1)], strict=False) == 1  # "b" is queued, "a" refused
    (record,) = [r for r in caplog.records if r.levelno == logging.ERROR]
    message = record.getMessage()
    assert "'a'" in message and '"quantity":6' in message and '"quantity":5' in message
    status = box.status()
    assert (status.pending, status.conflicts) == (2, 1)
    assert [r.body for r in box.lease("me", 10, 30)] == [ev("a", 5).body, ev("b", 1).body]  # the first wins


def test_the_same_payload_again_is_no_conflict(box: Outbox, caplog: pytest.LogCaptureFixture) -> None:
    assert box.add([ev("a", 5)]) == 1
    with caplog.at_level(logging.ERROR, logger="zc_middleware"):
        assert box.add([ev("a", 5)], strict=False) == 0
    assert caplog.records == []
    assert box.status().conflicts == 0


def test_a_strict_conflict_raises_and_keeps_nothing(box: Outbox) -> None:
    assert box.add([ev("a", 5)]) == 1
    with pytest.raises(ZcError) as info:
        box.add([ev("b"), ev("a", 6)])
    assert info.value.code == "idempotency_conflict"  # the caller is told: nothing to keep
    status = box.status()
    assert (status.pending, status.conflicts) == (1, 0)


def test_a_settle_that_queues_a_conflicting_event_keeps_it(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The SQLite ledger settling with its outbox in one transaction: the conflict is kept there too."""
    url = f"sqlite:///{tmp_path / 'zc.db'}"
    plans = {"p": {"default": True, "includes": {"compute-seconds": {"limit": 100}}}}
    ledger, box = open_ledger(url, plans=plans), open_outbox(url)
    try:
        assert ledger.joins(box)
        box.add([ev("k", 5)])
        held = ledger.reserve("user-1", {"compute-seconds": 9})
        assert isinstance(held, Hold)
        with caplog.at_level(logging.ERROR, logger="zc_middleware"):
            assert ledger.adjust_with_events(held, {"compute-seconds": 9}, box, [ev("k", 9)]) == 0
        assert any("'k'" in r.getMessage() for r in caplog.records if r.levelno == logging.ERROR)
        assert box.status().conflicts == 1
        assert ledger.balance("user-1").meter("compute-seconds").used == 9
    finally:
        box.close()
        ledger.close()


def test_the_command_shows_conflicts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'zc.db'}"
    box = open_outbox(url)
    box.add([ev("a", 5)])
    box.add([ev("a", 6)], strict=False)
    box.close()
    assert main(["outbox", "status", "--outbox", url]) == 0
    assert "conflicts    1" in capsys.readouterr().out
    assert main(["outbox", "status", "--outbox", url, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["conflicts"] == 1
