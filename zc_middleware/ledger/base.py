"""The ledger interface: reserve a plan's allowance before a paid action, settle it after.

A ledger answers one question atomically: can this buyer's plan cover these
amounts right now, and if so, debit them (a *hold*). The debit is provisional:
:meth:`Ledger.adjust` later moves it to what was actually used (settle) or
back to zero (release). The decision rules live in :mod:`.rules`, so that
every backend decides the same way.
"""

from __future__ import annotations

import re
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar, NoReturn

from ..errors import ZcError
from ..stores import Store
from .balance import Balance, MeterBalance
from .entitlements import Change, Entitlement, Outcome
from .rules import Account, Plans, Refusal, Status, new_account

if TYPE_CHECKING:
    from ..outbox.base import Event

__all__ = [
    "BUYER_ID",
    "Balance",
    "Change",
    "Clock",
    "Entitlement",
    "Hold",
    "Ledger",
    "MeterBalance",
    "Refusal",
    "check_buyer_id",
]

Clock = Callable[[], float]
#: how long a store remembers the id of a journaled write it applied (:meth:`Ledger.adjust_once`)
APPLIED_TTL = 30 * 86400.0
_once_lock = threading.Lock()


@dataclass(frozen=True, slots=True)
class Hold:
    """A granted, provisional debit: ``(meter, amount, period_start)`` per meter."""

    buyer: str
    debits: tuple[tuple[str, int, float], ...]


#: What a buyer id may be (``fullmatch``): 1 to 256 printable ASCII characters, without spaces or
#: commas. A comma is what servers join a repeated header with (``zc-agent-id: a, b``), so a request
#: naming two buyers is refused (401) by every adapter instead of billing a made-up third one.
BUYER_ID = re.compile(r"[\x21-\x2b\x2d-\x7e]{1,256}")


def check_buyer_id(buyer: object) -> str:
    """``buyer`` if it is a valid id (:data:`BUYER_ID`), else :class:`ZcError` ``invalid_buyer``."""
    if not isinstance(buyer, str) or not BUYER_ID.fullmatch(buyer):
        raise ZcError(
            "invalid_buyer",
            f"{buyer!r} is not a buyer id: 1 to 256 printable ASCII characters, no spaces or commas",
        )
    return buyer


def _epoch(value: datetime | None) -> float | None:
    if value is None:
        return None
    if value.tzinfo is None:
        raise ZcError("naive_datetime", "datetimes must be timezone-aware (e.g. datetime.now(timezone.utc))")
    return value.timestamp()


class Ledger(Store, ABC):
    """Where plan state lives. Every backend passes ``tests/ledger/test_contract.py``.

    A driver declares the URL schemes it serves (``schemes = ("sqlite",)``) and
    is opened with ``(url, *, plans, clock, create, timeout, ...)``; ``timeout`` is the seconds a
    networked store may take to answer (embedded ones ignore it).
    """

    kind: ClassVar[str] = "ledger"
    #: holds are leases that lapse unless settled: a success must be settled even when it used
    #: exactly what was held (otherwise the hold already is the bill, and nothing is written)
    leases: ClassVar[bool] = False

    def __init__(
        self,
        url: str,
        *,
        plans: Mapping[str, Any],
        clock: Clock = time.time,
        create: bool = True,
        timeout: float = 0.5,
    ) -> None:
        super().__init__(url, create=create)
        self.plans = Plans(plans)
        self.clock = clock
        self.timeout = timeout

    # -- the request path -------------------------------------------------
    @abstractmethod
    def reserve(self, buyer: str, amounts: Mapping[str, int]) -> Hold | Refusal:
        """Atomically check that ``amounts`` are covered and debit them."""

    @abstractmethod
    def adjust(self, hold: Hold, used: Mapping[str, int]) -> None:
        """Move a hold's debits to ``used`` (missing meters: 0). Idempotence is the caller's job."""

    def adjust_once(self, entry_id: str, hold: Hold, used: Mapping[str, int]) -> bool:
        """:meth:`adjust`, at most once per ``entry_id`` (a journaled write replayed after a crash or
        a retry); ``False`` when that id was applied already. Stores that outlive the process record
        the id with the write, in one step; this default remembers ids in the process, which is
        enough for a ledger that lives in the process too (``memory://``)."""
        with _once_lock:
            applied: set[str] = vars(self).setdefault("_applied_once", set())
            if entry_id in applied:
                return False
            self.adjust(hold, used)
            applied.add(entry_id)
            return True

    def settle(self, hold: Hold, used: Mapping[str, int]) -> None:
        self.adjust(hold, used)

    def release(self, hold: Hold) -> None:
        self.adjust(hold, {})

    def debit(self, buyer: str, amounts: Mapping[str, int]) -> Hold | Refusal:
        """Atomically debit ``amounts`` for good, only if the plan still covers them: the excess of a
        request that used more than its hold, with ``over_estimate="bill"``. A :meth:`reserve` that
        is settled at once where holds are leases, so the debit never lapses."""
        result = self.reserve(buyer, amounts)
        if self.leases and isinstance(result, Hold):
            self.adjust(result, amounts)
        return result

    async def adebit(self, buyer: str, amounts: Mapping[str, int]) -> Hold | Refusal:
        result = await self.areserve(buyer, amounts)
        if self.leases and isinstance(result, Hold):
            await self.aadjust(result, amounts)
        return result

    async def areserve(self, buyer: str, amounts: Mapping[str, int]) -> Hold | Refusal:
        return self.reserve(buyer, amounts)

    async def aadjust(self, hold: Hold, used: Mapping[str, int]) -> None:
        self.adjust(hold, used)

    # -- settling together with the outbox ------------------------------------
    def joins(self, outbox: object) -> bool:
        """Whether :meth:`adjust_with_events` can commit a settle and ``outbox``'s insert in one
        transaction (a SQLite ledger and outbox on one file). None can by default."""
        return False

    def adjust_with_events(self, hold: Hold, used: Mapping[str, int], outbox: object, events: Sequence[Event]) -> int:
        """:meth:`adjust`, and add ``events`` to ``outbox`` in the same transaction: both or neither.
        A key already queued keeps its first report. Returns how many events were new. Only for an
        ``outbox`` this ledger :meth:`joins`."""
        raise NotImplementedError(f"{type(self).__name__} cannot settle and queue events in one transaction")

    async def aadjust_with_events(
        self, hold: Hold, used: Mapping[str, int], outbox: object, events: Sequence[Event]
    ) -> int:
        return self.adjust_with_events(hold, used, outbox, events)

    # -- administration -----------------------------------------------------
    def assign_plan(
        self,
        buyer: str,
        plan: str,
        *,
        starts_at: datetime | None = None,
        expires_at: datetime | None = None,
    ) -> None:
        """Put ``buyer`` on ``plan`` with fresh allowances, periods anchored at ``starts_at``."""
        check_buyer_id(buyer)
        self.plans.check(plan)
        anchor = _epoch(starts_at) or self.clock()
        expires = _epoch(expires_at)
        if starts_at is not None and expires is not None and expires <= anchor:
            raise ZcError("invalid_dates", "the plan would expire before it starts: give expires_at after starts_at")
        self._store_account(buyer, Account(plan, anchor, expires), reset=True)

    def expire_plan(self, buyer: str) -> None:
        self._set_status(buyer, "expired")

    def mark_spend_cap_reached(self, buyer: str) -> None:
        """Stop serving paid actions to ``buyer`` until a plan is assigned again."""
        self._set_status(buyer, "capped")

    def _set_status(self, buyer: str, status: Status) -> None:
        check_buyer_id(buyer)
        account = self._account(buyer) or new_account(self.plans, self.clock())
        if account is None:
            return  # no plan to expire
        self._store_account(buyer, Account(account.plan, account.anchor, account.expires_at, status), reset=False)

    # -- plan state pushed by ZeroClick -------------------------------------------------
    def apply_entitlement(self, write: Entitlement) -> Outcome:
        """Apply a signed entitlement write (:mod:`.entitlements`): atomically with checks, at most
        once per idempotency key, and only if its version is newer than the last one applied
        (``"applied"``; otherwise ``"stale"`` or ``"duplicate"``, and nothing changes). A plan that
        ``settings.plans`` does not declare is :class:`ZcError` ``unknown_plan``."""
        check_buyer_id(write.buyer)
        self.plans.check(write.plan)
        return self._apply_entitlement(write, self.clock())

    async def aapply_entitlement(self, write: Entitlement) -> Outcome:
        return self.apply_entitlement(write)

    def _apply_entitlement(self, write: Entitlement, now: float) -> Outcome:
        raise NotImplementedError(f"{type(self).__name__} does not take entitlement writes")

    def history(self, buyer: str) -> tuple[Change, ...]:
        """The entitlement writes applied for ``buyer``, oldest first."""
        raise NotImplementedError(f"{type(self).__name__} does not keep a plan history")

    @abstractmethod
    def _account(self, buyer: str) -> Account | None: ...

    @abstractmethod
    def _store_account(self, buyer: str, account: Account, *, reset: bool) -> None: ...

    @abstractmethod
    def balance(self, buyer: str) -> Balance:
        """The buyer's per-meter balance now."""

    def close(self) -> None:
        """Release connections; the ledger may not be used afterwards."""

    async def aclose(self) -> None:
        """:meth:`close` from the event loop its asyncio connections belong to (an ASGI server's shutdown)."""
        self.close()


class Unavailable(Ledger):
    """A ledger that could not be opened (no scheme of its own): every call raises the error that
    said why, so a Gate built on it answers paid requests ``503 ledger_unavailable``."""

    def __init__(self, error: Exception, url: str, **kwargs: Any) -> None:
        super().__init__(url, **kwargs)
        self.error = error

    def _fail(self, *args: object, **kwargs: object) -> NoReturn:
        raise self.error

    reserve = adjust = balance = _account = _store_account = _apply_entitlement = history = _fail
