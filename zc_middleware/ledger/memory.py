"""``memory://``: plan state in this process, guarded by one lock. For tests and single processes.

Each buyer-meter balance is one mutable :class:`_Cell` that also remembers the
plan's limit (fixed until the plan is reassigned, which drops the cells), until
when it may be debited without asking the account again, and the last hold it
granted. The common reservation (an active buyer, one meter, inside its period,
within its limit) is then a few comparisons and one addition under the lock,
handing back that same immutable hold; anything else is decided by the shared
:func:`~zc_middleware.ledger.rules.evaluate`.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from math import inf
from typing import Any

from .balance import Balance, make_balance
from .base import Hold, Ledger
from .entitlements import Change, Entitlement, Outcome, decide
from .rules import Account, Refusal, Row, evaluate, new_account

__all__ = ["MemoryLedger"]


class _Cell:
    """One buyer's balance on one meter for the current period."""

    __slots__ = ("end", "held", "hold", "limit", "start", "until", "used")

    def __init__(self, start: float, end: float, used: int, limit: float) -> None:
        self.start = start
        self.end = end
        self.used = used
        self.limit = limit
        #: the end of the period, or of the plan if sooner; ``-inf`` once the account changed or the
        #: cell was dropped: the next reservation asks the account again
        self.until = -inf
        #: the last single-meter hold granted on this cell (same amount and period: the same value)
        self.hold: Hold | None = None
        #: the amount ``hold`` debits
        self.held = 0

    def row(self) -> Row:
        return Row(self.start, self.end, self.used)


class MemoryLedger(Ledger):
    """``memory://``: plan state in this process only, for tests and single-process tools. One lock
    makes each check-and-hold atomic; nothing survives the process."""

    schemes = ("memory",)

    def __init__(self, url: str = "memory://", **kwargs: Any) -> None:
        super().__init__(url, **kwargs)
        self._lock = threading.Lock()
        self._accounts: dict[str, Account] = {}
        self._cells: dict[str, dict[str, _Cell]] = {}
        #: per buyer: the entitlement writes applied, oldest first
        self._history: dict[str, list[Change]] = {}

    def reserve(self, buyer: str, amounts: Mapping[str, int]) -> Hold | Refusal:
        now = self.clock()
        cells = self._cells.get(buyer)
        if cells is not None and len(amounts) == 1:
            [(meter, amount)] = amounts.items()
            cell = cells.get(meter)
            if cell is not None:
                lock = self._lock
                lock.acquire()  # acquire/release rather than ``with``: measurably cheaper on this hot path
                try:
                    if cell.start <= now < cell.until and cell.used + amount <= cell.limit:
                        cell.used += amount
                        hold = cell.hold
                        if hold is None or cell.held != amount:
                            hold = cell.hold = Hold(buyer, ((meter, amount, cell.start),))
                            cell.held = amount
                        return hold
                finally:
                    lock.release()
        return self._reserve_general(buyer, amounts, now)

    def _reserve_general(self, buyer: str, amounts: Mapping[str, int], now: float) -> Hold | Refusal:
        """First request, period rollover, several meters, or a refusal to explain."""
        with self._lock:
            account = self._accounts.get(buyer) or new_account(self.plans, now)
            cells = self._cells.get(buyer, {})
            rows = {meter: cell.row() for meter, cell in cells.items()}
            result = evaluate(self.plans, account, rows, amounts, now)
            if isinstance(result, Refusal):
                return result
            assert account is not None
            self._accounts.setdefault(buyer, account)
            cells = self._cells.setdefault(buyer, {})
            until = -inf
            if account.status == "active":
                until = inf if account.expires_at is None else account.expires_at
            for meter, row in result.items():
                cell = cells.get(meter)
                if cell is None or cell.start != row.period_start:
                    if cell is not None:
                        cell.until = -inf  # a reservation holding the old period's cell asks again
                    limit = self.plans.allowance(account.plan, meter)[0]
                    cell = cells[meter] = _Cell(row.period_start, row.period_end, row.used, limit)
                cell.used = row.used
                cell.until = min(cell.end, until)
        return Hold(buyer, tuple((m, amounts[m], r.period_start) for m, r in result.items()))

    def adjust(self, hold: Hold, used: Mapping[str, int]) -> None:
        with self._lock:
            cells = self._cells.get(hold.buyer, {})
            for meter, amount, start in hold.debits:
                delta = used.get(meter, 0) - amount
                cell = cells.get(meter)
                if delta and cell is not None and cell.start == start:
                    cell.used = max(0, cell.used + delta)

    def _account(self, buyer: str) -> Account | None:
        return self._accounts.get(buyer)

    def _store_account(self, buyer: str, account: Account, *, reset: bool) -> None:
        with self._lock:
            self._accounts[buyer] = account
            cells = self._cells.pop(buyer, {}) if reset else self._cells.get(buyer, {})
            for cell in cells.values():
                cell.until = -inf  # a reservation already past the dict lookup re-checks the account

    def _apply_entitlement(self, write: Entitlement, now: float) -> Outcome:
        with self._lock:
            history = self._history.setdefault(write.buyer, [])
            if any(change.key == write.key for change in history):
                return "duplicate"
            if history and write.version <= history[-1].version:
                return "stale"
            account, reset, change = decide(self._accounts.get(write.buyer), write)
            self._accounts[write.buyer] = account
            cells = self._cells.pop(write.buyer, {}) if reset else self._cells.get(write.buyer, {})
            for meter, cell in cells.items():
                cell.until = -inf  # the next reservation asks the account again
                cell.limit = self.plans.allowance(account.plan, meter)[0]
            history.append(Change(now, write.kid, write.version, write.key, change))
        return "applied"

    def history(self, buyer: str) -> tuple[Change, ...]:
        with self._lock:
            return tuple(self._history.get(buyer, ()))

    def balance(self, buyer: str) -> Balance:
        with self._lock:
            account = self._accounts.get(buyer)
            rows = {meter: cell.row() for meter, cell in self._cells.get(buyer, {}).items()}
        return make_balance(self.plans, buyer, account, rows, self.clock())
