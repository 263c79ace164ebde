"""A ledger and an outbox in one SQLite file settle a hold and queue its events in one transaction."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.ledger.test_contract import PLANS
from zc_middleware import ZcError, open_ledger
from zc_middleware.ledger import Hold, Ledger
from zc_middleware.outbox import Event, Outbox, make_event, open_outbox


def events(*keys: str, quantity: int = 3) -> list[Event]:
    return [
        make_event(user_id="b", meter="compute-seconds", quantity=quantity, idempotency_key=key, clock=lambda: 0.0)
        for key in keys
    ]


@pytest.fixture
def joined(tmp_path: Path) -> Iterator[tuple[Ledger, Outbox]]:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    ledger, outbox = open_ledger(url, plans=PLANS), open_outbox(url)
    yield ledger, outbox
    ledger.close()
    outbox.close()


def reserve(ledger: Ledger, amount: int = 30) -> Hold:
    hold = ledger.reserve("b", {"compute-seconds": amount})
    assert isinstance(hold, Hold)
    return hold


def used(ledger: Ledger) -> int:
    return ledger.balance("b").meter("compute-seconds").used


def test_one_file_joins_and_commits_both(joined: tuple[Ledger, Outbox]) -> None:
    ledger, outbox = joined
    assert ledger.joins(outbox)
    assert ledger.adjust_with_events(reserve(ledger), {"compute-seconds": 4}, outbox, events("a", "b")) == 2
    assert used(ledger) == 4
    assert [r.key for r in outbox.lease("me", 10, 30)] == ["a", "b"]


def test_a_key_already_queued_keeps_its_first_report(joined: tuple[Ledger, Outbox]) -> None:
    ledger, outbox = joined
    outbox.add(events("a"))
    other = events("a", "c", quantity=9)  # "a" with another payload: skipped, not an error
    assert ledger.adjust_with_events(reserve(ledger), {"compute-seconds": 4}, outbox, other) == 1
    assert used(ledger) == 4
    assert [r.body for r in outbox.lease("me", 10, 30)] == [events("a")[0].body, other[1].body]


def test_a_failing_insert_rolls_the_settle_back_too(joined: tuple[Ledger, Outbox], tmp_path: Path) -> None:
    ledger, outbox = joined
    hold = reserve(ledger)
    conn = sqlite3.connect(tmp_path / "shared.db")  # another process that made the outbox refuse rows
    conn.execute("CREATE TRIGGER refuse BEFORE INSERT ON zc_outbox BEGIN SELECT RAISE(ABORT, 'refused'); END")
    conn.commit()
    with pytest.raises(sqlite3.IntegrityError, match="refused"):
        ledger.adjust_with_events(hold, {"compute-seconds": 4}, outbox, events("a"))
    assert used(ledger) == 30  # the debit was not moved either
    conn.execute("DROP TRIGGER refuse")
    conn.commit()
    conn.close()
    assert outbox.status().pending == 0
    ledger.settle(hold, {"compute-seconds": 4})  # the caller can still settle on its own
    assert used(ledger) == 4


def test_the_same_file_by_another_path_joins(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "data")
    ledger = open_ledger(f"sqlite:///{tmp_path / 'data' / 'x.db'}", plans=PLANS)
    outbox = open_outbox(f"sqlite:///{tmp_path / 'link' / 'x.db'}")
    try:
        assert ledger.joins(outbox)
    finally:
        ledger.close()
        outbox.close()


@pytest.mark.parametrize(
    ("ledger_url", "outbox_url"),
    [("memory://", "memory://"), ("sqlite:///{}/a.db", "sqlite:///{}/b.db"), ("sqlite:///{}/a.db", "memory://")],
)
def test_other_pairs_do_not_join(ledger_url: str, outbox_url: str, tmp_path: Path) -> None:
    ledger = open_ledger(ledger_url.format(tmp_path), plans=PLANS)
    outbox = open_outbox(outbox_url.format(tmp_path))
    try:
        assert not ledger.joins(outbox)
        assert not ledger.joins(None)
        hold = reserve(ledger)
        with pytest.raises((NotImplementedError, ZcError)):
            ledger.adjust_with_events(hold, {"compute-seconds": 4}, outbox, events("a"))
        assert used(ledger) == 30
    finally:
        ledger.close()
        outbox.close()
