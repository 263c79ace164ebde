"""``redis://host:port/db``: plan state in Redis or Redis Cluster, one Lua call per check-and-hold.

* Every check-and-hold of a request, all its meters, is **one** ``EVALSHA`` of a
  script loaded with ``SCRIPT LOAD`` (loaded again on ``NOSCRIPT``, after a restart
  or a failover): Redis runs it atomically, in one round trip. Settle and release are
  one more. The plan arithmetic stays here, in Python: each call passes the plan's
  current limits and the period bounds for this ledger's clock, and the account it
  expects; the script compares and increments (:mod:`._redis_lua`).
* All of a buyer's keys carry one ``{hash tag}``, so each script touches one slot and
  runs unchanged on Redis Cluster (``redis+cluster://host:port``).
* A hold is a lease: it stops counting ``hold_timeout`` seconds after it was granted
  (on the server's clock) unless settled or released before, so a process that dies
  mid-request leaves nothing held for good.
* Nothing is retried after a command was sent: a timeout may hide a granted hold, and
  sending it again could debit twice. The caller sees the error within ``timeout``
  (the Gate answers 503) and the lease gives the hold back.
* An entitlement write (:meth:`RedisLedger.apply_entitlement`) and a journaled settle
  (:meth:`RedisLedger.adjust_once`) are applied at most once (:mod:`._redis_once`); the clients
  that run the scripts are in :mod:`._redis_scripts`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, cast

from ..errors import ConfigError, ZcError
from ..periods import period_bounds
from . import _redis_once
from ._redis_client import Target
from ._redis_once import TRIES, as_account, as_float, contended
from ._redis_scripts import ADJUST, HISTORY, READ, RESERVE, STORE, Scripts
from .balance import Balance, make_balance
from .base import Hold, Ledger, check_buyer_id
from .entitlements import Change, Entitlement, Outcome
from .rules import Account, Reason, Refusal, Row, as_of

__all__ = ["RedisHold", "RedisLedger"]


@dataclass(frozen=True, slots=True)
class RedisHold(Hold):
    """A hold and its leases, one per debit, as the scripts name them."""

    leases: tuple[str, ...] = ()


@dataclass(slots=True)
class _Known:
    """The account this process last saw for a buyer: what a reservation sends, for the script to confirm.
    ``create``: the account a first-time buyer gets, stored by the script if none exists yet."""

    plan: str
    anchor: str
    create: bool = False
    #: meter -> (start, end, start as sent, end as sent) of the period last computed
    bounds: dict[str, tuple[float, float, str, str]] = field(default_factory=dict)


class RedisLedger(Ledger):
    """``redis://[:password@]host:port/db``, ``rediss://`` (TLS), ``redis+cluster://host:port``;
    ``?prefix=myapp:`` names the keys (default ``zc:``). ``hold_timeout``: seconds a hold counts
    when it is neither settled nor released."""

    schemes = ("redis", "rediss", "redis+cluster")
    leases = True

    def __init__(self, url: str, *, hold_timeout: float = 600.0, **kwargs: Any) -> None:
        super().__init__(url, **kwargs)
        self.target = Target.parse(url)
        self.prefix = self.target.prefix
        if not hold_timeout > 0:
            raise ConfigError("invalid_ledger", f"hold_timeout must be seconds above 0, not {hold_timeout!r}")
        self.hold_timeout = hold_timeout
        self._known: dict[str, _Known] = {}
        try:
            self._scripts = Scripts(self.target, self.timeout)
        except ConfigError:
            raise
        except Exception as exc:
            raise ConfigError(
                "cannot_open_ledger", f"settings.ledger {self.target.shown!r}: cannot use Redis: {exc}"
            ) from None

    @classmethod
    def check_url(cls, url: str) -> None:
        Target.parse(url)

    def keys(self, buyer: str) -> tuple[str, str, str]:
        """The buyer's account, rows and leases keys, in one hash slot. A buyer id with a brace is
        written in hex after a comma (which no buyer id contains), so its braces cannot move the tag."""
        tag = buyer if "{" not in buyer and "}" not in buyer else "," + buyer.encode().hex()
        base = f"{self.prefix}{{{tag}}}:"
        return base + "a", base + "r", base + "l"

    # -- the request path ---------------------------------------------------------
    def reserve(self, buyer: str, amounts: Mapping[str, int]) -> Hold | Refusal:
        now, keys = self.clock(), self.keys(buyer)
        for _ in range(TRIES):
            known, lease, args = self._ask(buyer, amounts, now)
            answer = self._answer(buyer, amounts, now, known, lease, self._scripts.run(RESERVE, keys, args))
            if answer is not None:
                return answer
        raise contended(buyer)

    async def areserve(self, buyer: str, amounts: Mapping[str, int]) -> Hold | Refusal:
        now, keys = self.clock(), self.keys(buyer)
        for _ in range(TRIES):
            known, lease, args = self._ask(buyer, amounts, now)
            answer = self._answer(buyer, amounts, now, known, lease, await self._scripts.arun(RESERVE, keys, args))
            if answer is not None:
                return answer
        raise contended(buyer)

    def adjust(self, hold: Hold, used: Mapping[str, int]) -> None:
        self._scripts.run(ADJUST, self.keys(hold.buyer), _adjustments(hold, used))

    async def aadjust(self, hold: Hold, used: Mapping[str, int]) -> None:
        await self._scripts.arun(ADJUST, self.keys(hold.buyer), _adjustments(hold, used))

    def adjust_once(self, entry_id: str, hold: Hold, used: Mapping[str, int]) -> bool:
        """:meth:`adjust` at most once per ``entry_id``: the script sets a marker key in the buyer's
        hash slot, with a TTL of :data:`~zc_middleware.ledger.base.APPLIED_TTL`, only if it was not
        there, and moves the hold in the same step."""
        call = _redis_once.adjust_once(self.keys(hold.buyer), entry_id, _adjustments(hold, used))
        return bool(int(self._scripts.run(*call)))

    def _ask(self, buyer: str, amounts: Mapping[str, int], now: float) -> tuple[_Known, str, list[str]]:
        """What the reserve script needs: the expected account, the lease id, and per meter the
        current limit and the period that starts if the stored one has ended."""
        known = self._known.get(buyer)
        if known is None:  # first seen: expect the default plan's new account, anchored now
            known = _Known(self.plans.default or "", repr(now), create=self.plans.default is not None)
        lease = os.urandom(8).hex()
        anchor = float(known.anchor or now)
        now = as_of(anchor, now)
        args = [repr(now), known.plan, known.anchor, "1" if known.create else "0", lease, repr(self.hold_timeout)]
        if known.plan not in self.plans.configs:
            return known, lease, args  # no plan to price: the script only reports the stored account
        for meter, amount in amounts.items():
            limit, reset = self.plans.allowance(known.plan, meter)
            bounds = known.bounds.get(meter)
            if bounds is None or not bounds[0] <= now < bounds[1]:
                start, end = period_bounds(anchor, reset, now)
                bounds = known.bounds[meter] = (start, end, repr(start), "" if end == math.inf else repr(end))
            args += (meter, str(amount), "" if limit == math.inf else str(int(limit)), bounds[2], bounds[3])
        return known, lease, args

    def _answer(
        self, buyer: str, amounts: Mapping[str, int], now: float, known: _Known, lease: str, reply: list[Any]
    ) -> Hold | Refusal | None:
        """The script's reply as a hold or a refusal; ``None`` to ask again with the stored account."""
        if reply[0] == "ok":
            self._remember(buyer, _Known(known.plan, known.anchor, bounds=known.bounds))
            starts = list(zip(amounts.items(), reply[1:], strict=True))
            debits = tuple((m, a, float(s)) for (m, a), s in starts)
            return RedisHold(buyer, debits, tuple(f"{lease}|{a}|{s}|{m}" for (m, a), s in starts))
        if reply[0] == "refused":
            if not known.create:
                self._remember(buyer, known)
            reason, index, end = cast("Reason", reply[1]), int(reply[2]), reply[3]
            if reason != "usage_exhausted":
                return Refusal(reason)
            retry = None if end == "" else max(1, math.ceil(float(end) - now))
            return Refusal(reason, list(amounts)[index - 1], retry)
        self._known.pop(buyer, None)  # "stale": the stored account is another one, or there is none
        plan, anchor = reply[1], reply[2]
        if (not plan and self.plans.default is None) or (plan and plan not in self.plans.configs):
            return Refusal("plan_expired")
        self._known[buyer] = _Known(plan, anchor) if plan else _Known(self.plans.default or "", repr(now), create=True)
        return None

    def _remember(self, buyer: str, known: _Known) -> None:
        if len(self._known) >= 65536:
            self._known.clear()  # a bound on memory; a forgotten buyer costs one more round trip
        self._known[buyer] = known

    # -- administration -------------------------------------------------------------
    def _read(self, buyer: str) -> tuple[Account | None, dict[str, Row]]:
        account, flat = self._scripts.run(READ, self.keys(buyer), ())
        fields = dict(zip(flat[::2], flat[1::2], strict=True))
        rows = {
            key[2:]: Row(float(start), as_float(fields[f"e:{key[2:]}"]), int(fields[f"u:{key[2:]}"]))
            for key, start in fields.items()
            if key.startswith("s:")
        }
        return as_account(account), rows

    def _account(self, buyer: str) -> Account | None:
        return self._read(buyer)[0]

    def _store_account(self, buyer: str, account: Account, *, reset: bool) -> None:
        self._known.pop(buyer, None)
        expires = "" if account.expires_at is None else repr(account.expires_at)
        args = (account.plan, repr(account.anchor), expires, account.status, "1" if reset else "0")
        self._scripts.run(STORE, self.keys(buyer), args)

    # -- plan state pushed by ZeroClick -------------------------------------------------
    def _apply_entitlement(self, write: Entitlement, now: float) -> Outcome:
        outcome = self._scripts.play(_redis_once.entitle(self.keys(write.buyer), write, now))
        self._known.pop(write.buyer, None)  # the next reservation asks for the stored account
        return outcome

    async def aapply_entitlement(self, write: Entitlement) -> Outcome:
        """:meth:`apply_entitlement` on the asyncio client."""
        check_buyer_id(write.buyer)
        self.plans.check(write.plan)
        outcome = await self._scripts.aplay(_redis_once.entitle(self.keys(write.buyer), write, self.clock()))
        self._known.pop(write.buyer, None)  # the next reservation asks for the stored account
        return outcome

    def history(self, buyer: str) -> tuple[Change, ...]:
        """The last :data:`~._redis_lua.HISTORY_KEPT` writes applied, oldest first."""
        keys = _redis_once.history_keys(self.keys(buyer))
        return _redis_once.changes_of(self._scripts.run(HISTORY, keys, ()))

    def balance(self, buyer: str) -> Balance:
        account, rows = self._read(buyer)
        return make_balance(self.plans, buyer, account, rows, self.clock())

    async def aclose(self) -> None:
        """Close the asyncio client from inside its loop, then the rest."""
        await self._scripts.aclose()

    def close(self) -> None:
        self._scripts.close()


def _adjustments(hold: Hold, used: Mapping[str, int]) -> list[str]:
    if not isinstance(hold, RedisHold):
        raise ZcError("foreign_hold", f"{hold!r} was not granted by a Redis ledger")
    args: list[str] = []
    for (meter, amount, _), lease in zip(hold.debits, hold.leases, strict=True):
        spent = used.get(meter, 0)
        args += (lease, meter, lease.split("|")[2], str(spent - amount), str(spent))
    return args
