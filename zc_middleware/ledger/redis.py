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
* An entitlement write (:meth:`RedisLedger.apply_entitlement`) is decided in Python from the
  account read first, then one script checks its idempotency key and version and stores it only if
  the account is still the one decided from. The last version applied lives in the account hash and
  is never trimmed; the plan history keeps the last :data:`~._redis_lua.HISTORY_KEPT` writes.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import os
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from ..errors import ConfigError, ZcError
from ..periods import period_bounds
from . import _redis_lua
from ._redis_client import POOL_SIZE, AsyncClient, SyncClient, Target, forget_idle, is_noscript, open_async, open_sync
from .balance import Balance, make_balance
from .base import APPLIED_TTL, Hold, Ledger, check_buyer_id
from .entitlements import Change, Entitlement, Outcome, decide
from .rules import Account, Reason, Refusal, Row, as_of

__all__ = ["RedisHold", "RedisLedger"]

#: how often a reservation may find the account changed under it before it gives up
_TRIES = 3


@dataclass(frozen=True, slots=True)
class RedisHold(Hold):
    """A hold and its leases, one per debit, as the scripts name them."""

    leases: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class _Script:
    source: str
    sha: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha", hashlib.sha1(self.source.encode()).hexdigest())


_RESERVE, _ADJUST, _STORE, _READ, _ENTITLE, _HISTORY = (
    _Script(source)
    for source in (
        _redis_lua.RESERVE,
        _redis_lua.ADJUST,
        _redis_lua.STORE,
        _redis_lua.READ,
        _redis_lua.ENTITLE,
        _redis_lua.HISTORY,
    )
)
_SCRIPTS = (_RESERVE, _ADJUST, _STORE, _READ, _ENTITLE, _HISTORY)
#: the scripts' calls, as the steps of a flow both the sync and the asyncio client play
_Call = tuple[_Script, Sequence[str], Sequence[str]]
_Flow = Generator[_Call, list[Any], Outcome]


#: ADJUST, run only if the marker KEYS[4] was not set (it is set, for ARGV[1] seconds); 1 if it ran
_ADJUST_ONCE = _Script(
    """
if not redis.call('SET', KEYS[4], '1', 'NX', 'EX', tonumber(ARGV[1])) then return 0 end
for i = 2, #ARGV, 5 do
  local held = redis.call('ZREM', KEYS[3], ARGV[i])
  local delta = ARGV[i + 4]
  if held == 1 then delta = ARGV[i + 3] end
  if delta ~= '0' and redis.call('HGET', KEYS[2], 's:' .. ARGV[i + 1]) == ARGV[i + 2] then
    if redis.call('HINCRBY', KEYS[2], 'u:' .. ARGV[i + 1], delta) < 0 then
      redis.call('HSET', KEYS[2], 'u:' .. ARGV[i + 1], '0')
    end
  end
end
return 1
"""
)


@dataclass(slots=True)
class _LoopClient:
    """The asyncio client of one event loop, and a slot per connection: a redis-py cluster client
    refuses a call beyond its pool instead of waiting for a connection."""

    loop: asyncio.AbstractEventLoop
    client: AsyncClient
    ready: asyncio.Task[Any]
    slots: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(POOL_SIZE))


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
        self._aio: _LoopClient | None = None
        try:
            self._client: SyncClient = open_sync(self.target.client_url, self.target.cluster, self.timeout)
            for script in _SCRIPTS:
                self._client.script_load(script.source)
        except ConfigError:
            raise
        except Exception as exc:
            raise ConfigError(
                "cannot_open_ledger", f"settings.ledger {self.target.shown!r}: cannot use Redis: {exc}"
            ) from None

    @classmethod
    def check_url(cls, url: str) -> None:
        Target.parse(url)

    # -- one call each way --------------------------------------------------------
    def _run(self, script: _Script, keys: Sequence[str], args: Sequence[str]) -> list[Any]:
        client = self._client
        try:
            return cast("list[Any]", client.evalsha(script.sha, len(keys), *keys, *args))
        except Exception as exc:
            if not is_noscript(exc):
                raise
            client.script_load(script.source)  # a restarted or failed-over server starts with no scripts
            return cast("list[Any]", client.evalsha(script.sha, len(keys), *keys, *args))

    async def _arun(self, script: _Script, keys: Sequence[str], args: Sequence[str]) -> list[Any]:
        own = await self._aclient()
        client = own.client
        async with own.slots:
            try:
                return cast("list[Any]", await client.evalsha(script.sha, len(keys), *keys, *args))
            except Exception as exc:
                if not is_noscript(exc):
                    await forget_idle(client, exc)
                    raise
                await client.script_load(script.source)
                return cast("list[Any]", await client.evalsha(script.sha, len(keys), *keys, *args))

    async def _aclient(self) -> _LoopClient:
        """The asyncio client of the running loop (its connections belong to that loop), started
        once: concurrent first calls on a cluster client that is still starting fail in redis-py."""
        loop = asyncio.get_running_loop()
        current = self._aio
        if current is None or current.loop is not loop:
            client = open_async(self.target.client_url, self.target.cluster, self.timeout)
            current = self._aio = _LoopClient(loop, client, loop.create_task(client.initialize()))
        try:
            await current.ready  # a finished task answers at once
        except BaseException:
            if self._aio is current:
                self._aio = None  # start again on the next call
            raise
        return current

    def keys(self, buyer: str) -> tuple[str, str, str]:
        """The buyer's account, rows and leases keys, in one hash slot. A buyer id with a brace is
        written in hex after a comma (which no buyer id contains), so its braces cannot move the tag."""
        tag = buyer if "{" not in buyer and "}" not in buyer else "," + buyer.encode().hex()
        base = f"{self.prefix}{{{tag}}}:"
        return base + "a", base + "r", base + "l"

    # -- the request path ---------------------------------------------------------
    def reserve(self, buyer: str, amounts: Mapping[str, int]) -> Hold | Refusal:
        now, keys = self.clock(), self.keys(buyer)
        for _ in range(_TRIES):
            known, lease, args = self._ask(buyer, amounts, now)
            answer = self._answer(buyer, amounts, now, known, lease, self._run(_RESERVE, keys, args))
            if answer is not None:
                return answer
        raise _contended(buyer)

    async def areserve(self, buyer: str, amounts: Mapping[str, int]) -> Hold | Refusal:
        now, keys = self.clock(), self.keys(buyer)
        for _ in range(_TRIES):
            known, lease, args = self._ask(buyer, amounts, now)
            answer = self._answer(buyer, amounts, now, known, lease, await self._arun(_RESERVE, keys, args))
            if answer is not None:
                return answer
        raise _contended(buyer)

    def adjust(self, hold: Hold, used: Mapping[str, int]) -> None:
        self._run(_ADJUST, self.keys(hold.buyer), _adjustments(hold, used))

    async def aadjust(self, hold: Hold, used: Mapping[str, int]) -> None:
        await self._arun(_ADJUST, self.keys(hold.buyer), _adjustments(hold, used))

    def adjust_once(self, entry_id: str, hold: Hold, used: Mapping[str, int]) -> bool:
        """:meth:`adjust` at most once per ``entry_id``: the script sets a marker key in the buyer's
        hash slot, with a TTL of :data:`~zc_middleware.ledger.base.APPLIED_TTL`, only if it was not
        there, and moves the hold in the same step."""
        account = self.keys(hold.buyer)
        keys = (*account, account[0][:-1] + "once:" + entry_id)
        args = (str(int(APPLIED_TTL)), *_adjustments(hold, used))
        client = self._client
        try:
            done = client.evalsha(_ADJUST_ONCE.sha, 4, *keys, *args)
        except Exception as exc:
            if not is_noscript(exc):
                raise
            client.script_load(_ADJUST_ONCE.source)
            done = client.evalsha(_ADJUST_ONCE.sha, 4, *keys, *args)
        return bool(int(cast("int", done)))

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
        account, flat = self._run(_READ, self.keys(buyer), ())
        fields = dict(zip(flat[::2], flat[1::2], strict=True))
        rows = {
            key[2:]: Row(float(start), _float(fields[f"e:{key[2:]}"]), int(fields[f"u:{key[2:]}"]))
            for key, start in fields.items()
            if key.startswith("s:")
        }
        return _as_account(account), rows

    def _account(self, buyer: str) -> Account | None:
        return self._read(buyer)[0]

    def _store_account(self, buyer: str, account: Account, *, reset: bool) -> None:
        self._known.pop(buyer, None)
        expires = "" if account.expires_at is None else repr(account.expires_at)
        args = (account.plan, repr(account.anchor), expires, account.status, "1" if reset else "0")
        self._run(_STORE, self.keys(buyer), args)

    # -- plan state pushed by ZeroClick -------------------------------------------------
    def _history_keys(self, buyer: str) -> tuple[str, str, str, str]:
        """:meth:`keys`, then the plan history's list, in the same hash slot."""
        account, rows, leases = self.keys(buyer)
        return account, rows, leases, account[:-1] + "h"

    def _entitle(self, write: Entitlement, now: float) -> _Flow:
        """Read the account, decide, and have one script check the key and the version and store the
        write, if the account is still the one decided from (else decide again)."""
        keys = self._history_keys(write.buyer)
        for _ in range(_TRIES):
            stored = (yield _READ, keys[:3], ())[0]
            before = ("", "", "", "") if not stored[0] else tuple(stored)
            account, reset, change = decide(_as_account(stored), write)
            expires = "" if account.expires_at is None else repr(account.expires_at)
            entry = json.dumps([now, write.kid, write.version, write.key, change])
            args = [write.key, str(write.version), *before, account.plan, repr(account.anchor), expires]
            args += (account.status, "1" if reset else "0", entry, str(_redis_lua.HISTORY_KEPT))
            outcome = (yield _ENTITLE, keys, args)[0]
            if outcome != "changed":
                self._known.pop(write.buyer, None)  # the next reservation asks for the stored account
                return cast("Outcome", outcome)
        raise _contended(write.buyer)

    def _apply_entitlement(self, write: Entitlement, now: float) -> Outcome:
        flow = self._entitle(write, now)
        try:
            call = next(flow)
            while True:
                call = flow.send(self._run(*call))
        except StopIteration as stop:
            return cast("Outcome", stop.value)

    async def aapply_entitlement(self, write: Entitlement) -> Outcome:
        """:meth:`apply_entitlement` on the asyncio client."""
        check_buyer_id(write.buyer)
        self.plans.check(write.plan)
        flow = self._entitle(write, self.clock())
        try:
            call = next(flow)
            while True:
                call = flow.send(await self._arun(*call))
        except StopIteration as stop:
            return cast("Outcome", stop.value)

    def history(self, buyer: str) -> tuple[Change, ...]:
        """The last :data:`~._redis_lua.HISTORY_KEPT` writes applied, oldest first."""
        return tuple(Change(*json.loads(entry)) for entry in self._run(_HISTORY, self._history_keys(buyer), ()))

    def balance(self, buyer: str) -> Balance:
        account, rows = self._read(buyer)
        return make_balance(self.plans, buyer, account, rows, self.clock())

    async def aclose(self) -> None:
        """Close the asyncio client from inside its loop, then the rest."""
        current, self._aio = self._aio, None
        if current is not None:
            await current.client.aclose()
        self.close()

    def close(self) -> None:
        self._client.close()
        current, self._aio = self._aio, None
        if current is None:
            return
        loop, client = current.loop, current.client
        if loop.is_running():
            asyncio.run_coroutine_threadsafe(client.aclose(), loop)  # from its own thread too: runs soon
        elif not loop.is_closed():
            loop.run_until_complete(client.aclose())


def _as_account(stored: list[Any]) -> Account | None:
    """The account from its hash's plan, anchor, expires and status (``plan`` empty: none)."""
    if not stored[0]:
        return None
    return Account(stored[0], float(stored[1]), _float(stored[2], None), stored[3])


def _float(text: str, never: float | None = math.inf) -> Any:
    return never if text == "" else float(text)


def _adjustments(hold: Hold, used: Mapping[str, int]) -> list[str]:
    if not isinstance(hold, RedisHold):
        raise ZcError("foreign_hold", f"{hold!r} was not granted by a Redis ledger")
    args: list[str] = []
    for (meter, amount, _), lease in zip(hold.debits, hold.leases, strict=True):
        spent = used.get(meter, 0)
        args += (lease, meter, lease.split("|")[2], str(spent - amount), str(spent))
    return args


def _contended(buyer: str) -> ZcError:
    return ZcError("ledger_contention", f"the account of {buyer!r} kept changing during a reservation")
