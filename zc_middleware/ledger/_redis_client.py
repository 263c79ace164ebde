"""A ``redis://`` ledger URL taken apart, and the redis-py clients it opens: sync and asyncio, standalone or cluster.

redis-py is imported only when a client is opened, so a ``redis://`` URL can be
validated (settings, ``check_url``) where the package is not installed, and opening
one there is a :class:`ConfigError` with the install hint.
"""

from __future__ import annotations

from collections.abc import Awaitable, Coroutine
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol, cast
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

from ..errors import ConfigError

__all__ = ["POOL_SIZE", "AsyncClient", "SyncClient", "Target", "is_noscript", "open_async", "open_sync"]


@dataclass(frozen=True, slots=True)
class Target:
    """A ``redis://`` ledger URL taken apart: what redis-py opens, the key prefix, and the URL to show."""

    client_url: str
    prefix: str
    cluster: bool
    shown: str

    @classmethod
    def parse(cls, url: str) -> Target:
        parts = urlsplit(url)
        shown = url
        if parts.password is not None:
            user, _, host = parts.netloc.rpartition("@")
            shown = urlunsplit(parts._replace(netloc=f"{user.partition(':')[0]}:***@{host}"))

        def bad(what: str) -> ConfigError:
            return ConfigError("invalid_ledger", f"settings.ledger {shown!r}: {what}")

        try:
            parts.port  # noqa: B018 -- urlsplit checks the port only when it is read
        except ValueError:
            raise bad("the port is not a number from 0 to 65535") from None
        if not parts.hostname:
            raise bad(f"no host: expected {parts.scheme}://host:port")
        query = parse_qs(parts.query, keep_blank_values=True)
        prefix = query.pop("prefix", ["zc:"])
        if len(prefix) > 1 or "{" in prefix[0] or "}" in prefix[0]:
            raise bad("give one prefix, without { or }: braces would split a buyer's keys across hash slots")
        db = parts.path.strip("/")
        if not db.isdigit() and db:
            raise bad(f"the database {db!r} is not a number (redis://host:port/0)")
        cluster = parts.scheme == "redis+cluster"
        if cluster and db not in ("", "0"):
            raise bad("Redis Cluster has database 0 only")
        scheme = "redis" if cluster else parts.scheme
        client_url = urlunsplit((scheme, parts.netloc, parts.path, urlencode(query, doseq=True), ""))
        return cls(client_url, prefix[0], cluster, shown)


class SyncClient(Protocol):
    def evalsha(self, sha: str, numkeys: int, *keys_and_args: str) -> Any: ...
    def script_load(self, script: str) -> Any: ...
    def close(self) -> None: ...


class AsyncClient(Protocol):
    def evalsha(self, sha: str, numkeys: int, *keys_and_args: str) -> Awaitable[Any]: ...
    def script_load(self, script: str) -> Awaitable[Any]: ...
    def initialize(self) -> Coroutine[Any, Any, Any]: ...
    def aclose(self) -> Coroutine[Any, Any, None]: ...


def _options(timeout: float) -> dict[str, Any]:
    """No retry once a command may have been sent: a reservation sent twice could debit twice.
    A pooled connection the server closed is still replaced before it is used."""
    from redis.backoff import NoBackoff

    return {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "decode_responses": True,
        "_retry": (NoBackoff(), 0),
    }


def _imported() -> None:
    try:
        import redis  # noqa: F401
    except ImportError:
        raise ConfigError(
            "missing_dependency", "redis:// ledgers need redis-py: pip install 'zc-middleware[redis]'"
        ) from None


#: connections per process and server: a thread or task beyond them waits for one, within ``timeout``
POOL_SIZE = 100


def open_sync(url: str, cluster: bool, timeout: float) -> SyncClient:
    _imported()
    from redis import BlockingConnectionPool, Redis
    from redis.cluster import RedisCluster
    from redis.retry import Retry

    options = _options(timeout)
    options["retry"] = Retry(*options.pop("_retry"))
    if cluster:
        pools = partial(BlockingConnectionPool, timeout=timeout)  # one per node
        client = RedisCluster.from_url(url, connection_pool_class=pools, max_connections=POOL_SIZE, **options)
        return cast(SyncClient, client)
    pool = BlockingConnectionPool.from_url(url, max_connections=POOL_SIZE, timeout=timeout, **options)
    return cast(SyncClient, Redis.from_pool(pool))  # closing the client closes its pool


def open_async(url: str, cluster: bool, timeout: float) -> AsyncClient:
    """The caller holds at most :data:`POOL_SIZE` calls at once per client (a semaphore), so a plain
    pool never runs out: redis-py's blocking asyncio pool costs a lock round per call."""
    from redis.asyncio import Redis
    from redis.asyncio.cluster import RedisCluster
    from redis.asyncio.retry import Retry

    options = _options(timeout)
    options["retry"] = Retry(*options.pop("_retry"))
    client_class = RedisCluster if cluster else Redis
    return cast(AsyncClient, client_class.from_url(url, max_connections=POOL_SIZE, **options))


async def forget_idle(client: AsyncClient, exc: BaseException) -> None:
    """After a connection error, close the pool's idle connections. redis-py's asyncio pool hands out a
    connection the server has closed (seen with redis-py 8.1 after a restart) without replacing it, so
    each connection idle through an outage would fail one more request after it; closed here, each is
    made again when next used. A cluster client replaces its nodes' connections itself."""
    from redis.exceptions import ConnectionError as Lost

    pool = getattr(client, "connection_pool", None)
    if isinstance(exc, Lost) and pool is not None:
        await pool.disconnect(inuse_connections=False)


def is_noscript(exc: BaseException) -> bool:
    """Whether ``exc`` says the server does not have the script (``NOSCRIPT``): nothing ran."""
    from redis.exceptions import NoScriptError

    return isinstance(exc, NoScriptError)
