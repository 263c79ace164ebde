"""``memory://``: plan state in this process, guarded by one lock. For tests and single processes."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from .base import Account, Balance, Hold, Ledger, Refusal, Row, evaluate, make_balance, new_account

__all__ = ["MemoryLedger"]


class MemoryLedger(Ledger):
    def __init__(self, url: str = "memory://", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._lock = threading.Lock()
        self._accounts: dict[str, Account] = {}
        self._rows: dict[str, dict[str, Row]] = {}

    def reserve(self, buyer: str, amounts: Mapping[str, int]) -> Hold | Refusal:
        now = self.clock()
        if len(amounts) == 1:
            hold = self._reserve_one(buyer, amounts, now)
            if hold is not None:
                return hold
        with self._lock:
            account = self._accounts.get(buyer) or new_account(self.plans, now)
            rows = self._rows.get(buyer, {})
            result = evaluate(self.plans, account, rows, amounts, now)
            if isinstance(result, Refusal):
                return result
            assert account is not None
            self._accounts.setdefault(buyer, account)
            self._rows[buyer] = {**rows, **result}
        return Hold(buyer, tuple((m, amounts[m], r.period_start) for m, r in result.items()))

    def _reserve_one(self, buyer: str, amounts: Mapping[str, int], now: float) -> Hold | None:
        """The common case (an active buyer, one meter, inside its period) without the general rules."""
        ((meter, amount),) = amounts.items()
        with self._lock:
            account = self._accounts.get(buyer)
            row = self._rows.get(buyer, {}).get(meter)
            if (
                account is None
                or row is None
                or account.status != "active"
                or not (account.expires_at is None or now < account.expires_at)
                or not (row.period_start <= now < row.period_end)
                or row.used + amount > self.plans.allowance(account.plan, meter)[0]
            ):
                return None  # let evaluate() decide, and explain a refusal
            self._rows[buyer][meter] = Row(row.period_start, row.period_end, row.used + amount)
        return Hold(buyer, ((meter, amount, row.period_start),))

    def adjust(self, hold: Hold, used: Mapping[str, int]) -> None:
        with self._lock:
            rows = self._rows.get(hold.buyer, {})
            for meter, amount, start in hold.debits:
                delta = used.get(meter, 0) - amount
                row = rows.get(meter)
                if delta and row is not None and row.period_start == start:
                    rows[meter] = Row(row.period_start, row.period_end, max(0, row.used + delta))

    def _account(self, buyer: str) -> Account | None:
        return self._accounts.get(buyer)

    def _store_account(self, buyer: str, account: Account, *, reset: bool) -> None:
        with self._lock:
            self._accounts[buyer] = account
            if reset:
                self._rows.pop(buyer, None)

    def balance(self, buyer: str) -> Balance:
        with self._lock:
            account = self._accounts.get(buyer)
            rows = dict(self._rows.get(buyer, {}))
        return make_balance(self.plans, buyer, account, rows, self.clock())
