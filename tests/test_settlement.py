"""What a finished request writes: nothing for an exact charge, unless the ledger's holds are leases."""

from __future__ import annotations

from collections.abc import Mapping

from zc_middleware import Gate, Usage, ZeroClickSettings, metered
from zc_middleware.ledger import Hold
from zc_middleware.ledger.memory import MemoryLedger

SETTINGS = ZeroClickSettings(
    meters={"api-requests": {}},
    plans={"p": {"default": True, "includes": {"api-requests": {"limit": 10}}}},
    ledger="memory://",
)


class Counting(MemoryLedger):
    schemes = ()  # not a driver of its own: never registered for a URL

    def __init__(self, **kwargs: object) -> None:
        super().__init__(plans=SETTINGS.plans)  # type: ignore[arg-type]
        self.adjusted: list[dict[str, int]] = []

    def adjust(self, hold: Hold, used: Mapping[str, int]) -> None:
        self.adjusted.append(dict(used))
        super().adjust(hold, used)


class Leasing(Counting):
    leases = True


def _paid_request(gate: Gate) -> None:
    charge = gate.charge_for(metered("api-requests")(lambda: None))
    assert charge is not None
    usage = Usage()
    gate.check_buyer("b", {}.get, charge, usage)
    gate.finish(usage, success=True)


def test_an_exact_charge_is_not_written_twice() -> None:
    ledger = Counting()
    _paid_request(Gate(SETTINGS, ledger=ledger))
    assert ledger.adjusted == []  # the hold already is the bill
    assert ledger.balance("b").meter("api-requests").used == 1


def test_a_ledger_whose_holds_lapse_is_told_even_an_exact_charge() -> None:
    ledger = Leasing()
    _paid_request(Gate(SETTINGS, ledger=ledger))
    assert ledger.adjusted == [{"api-requests": 1}]
    assert ledger.balance("b").meter("api-requests").used == 1
