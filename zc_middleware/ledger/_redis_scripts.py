"""How the Redis ledger runs its Lua: each script by SHA, on a sync client and on one asyncio client per event loop.

* A script is sent with ``EVALSHA``; a server that answers ``NOSCRIPT`` (restarted, or failed
  over, it starts with no scripts) is sent the source with ``SCRIPT LOAD`` and asked again.
* The asyncio client belongs to the loop that opened it, and holds a slot per connection: a
  redis-py cluster client refuses a call beyond its pool instead of waiting for a connection.
* A write of several calls is a :data:`Flow`, written once and played by either client.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from . import _redis_lua
from ._redis_client import POOL_SIZE, AsyncClient, SyncClient, Target, forget_idle, is_noscript, open_async, open_sync

__all__ = ["ADJUST", "ADJUST_ONCE", "ENTITLE", "HISTORY", "READ", "RESERVE", "STORE", "Flow", "Script", "Scripts"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Script:
    source: str
    sha: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha", hashlib.sha1(self.source.encode()).hexdigest())


RESERVE, ADJUST, STORE, READ, ENTITLE, HISTORY = (
    Script(source)
    for source in (
        _redis_lua.RESERVE,
        _redis_lua.ADJUST,
        _redis_lua.STORE,
        _redis_lua.READ,
        _redis_lua.ENTITLE,
        _redis_lua.HISTORY,
    )
)
#: the scripts loaded when the ledger opens
_LOADED = (RESERVE, ADJUST, STORE, READ, ENTITLE, HISTORY)
#: the scripts' calls, as the steps of a flow both the sync and the asyncio client play
Call = tuple[Script, Sequence[str], Sequence[str]]
Flow = Generator[Call, list[Any], T]


ADJUST_ONCE = Script(_redis_lua.ADJUST_ONCE)


@dataclass(slots=True)
class _LoopClient:
    """The asyncio client of one event loop, and a slot per connection: a redis-py cluster client
    refuses a call beyond its pool instead of waiting for a connection."""

    loop: asyncio.AbstractEventLoop
    client: AsyncClient
    ready: asyncio.Task[Any]
    slots: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(POOL_SIZE))


class Scripts:
    """The clients of one ledger: the sync one opened (and the scripts loaded) at once, raising
    whatever redis-py raises; the asyncio one on first use in each event loop."""

    def __init__(self, target: Target, timeout: float) -> None:
        self.target = target
        self.timeout = timeout
        self._aio: _LoopClient | None = None
        self._client: SyncClient = open_sync(target.client_url, target.cluster, timeout)
        for script in _LOADED:
            self._client.script_load(script.source)

    def run(self, script: Script, keys: Sequence[str], args: Sequence[str]) -> Any:
        """The script's reply, as redis-py decodes it."""
        client = self._client
        try:
            return client.evalsha(script.sha, len(keys), *keys, *args)
        except Exception as exc:
            if not is_noscript(exc):
                raise
            client.script_load(script.source)  # a restarted or failed-over server starts with no scripts
            return client.evalsha(script.sha, len(keys), *keys, *args)

    async def arun(self, script: Script, keys: Sequence[str], args: Sequence[str]) -> Any:
        """:meth:`run` on the asyncio client of the running loop."""
        own = await self._aclient()
        client = own.client
        async with own.slots:
            try:
                return await client.evalsha(script.sha, len(keys), *keys, *args)
            except Exception as exc:
                if not is_noscript(exc):
                    await forget_idle(client, exc)
                    raise
                await client.script_load(script.source)
                return await client.evalsha(script.sha, len(keys), *keys, *args)

    def play(self, flow: Flow[T]) -> T:
        """Run each call ``flow`` yields, send it the reply, and return what it returns."""
        try:
            call = next(flow)
            while True:
                call = flow.send(self.run(*call))
        except StopIteration as stop:
            result: T = stop.value
            return result

    async def aplay(self, flow: Flow[T]) -> T:
        """:meth:`play` on the asyncio client."""
        try:
            call = next(flow)
            while True:
                call = flow.send(await self.arun(*call))
        except StopIteration as stop:
            result: T = stop.value
            return result

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
