"""Per-request cost of a paid Starlette route on a ``redis://`` ledger, against a bare app, in one run.

Starts its own ``redis-server`` on a free port (never the machine's own Redis),
calls each ASGI app in process, and sets the paid route beside the floor any
Redis ledger pays: one raw ``EVALSHA`` of a script that does nothing, inside a
request and in a tight loop. ``--smoke`` runs a few requests, for the tests.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import redis.asyncio  # noqa: E402

from benchmarks.bench_requests import (  # noqa: E402
    PLANS,
    asgi_timers,
    raw_debit_app,
    sample,
    starlette_app,
    table,
    timed,
)
from tests.ledger.redis_servers import RedisServer  # noqa: E402
from zc_middleware.ledger import open_ledger  # noqa: E402
from zc_middleware.ledger.redis import RedisLedger  # noqa: E402

TRIVIAL = "return 1"


class RawEvalsha:
    """One ``EVALSHA`` of a script that does nothing, on its own asyncio client: a round trip to
    the same server and a script call, the floor under any one-script ledger."""

    def __init__(self, port: int) -> None:
        self.client = redis.asyncio.Redis(port=port)
        self.sha = hashlib.sha1(TRIVIAL.encode()).hexdigest()

    async def load(self) -> None:
        await self.client.script_load(TRIVIAL)

    async def once(self) -> None:
        await self.client.evalsha(self.sha, 0)


def bench(port: int, rounds: int, n: int) -> None:
    tmp = Path(tempfile.mkdtemp())
    loop = asyncio.new_event_loop()
    ledger = open_ledger(f"redis://127.0.0.1:{port}/0?prefix=bench:", plans=PLANS)
    assert isinstance(ledger, RedisLedger)
    raw = RawEvalsha(port)
    loop.run_until_complete(raw.load())
    variants: dict[str, tuple[Callable, str]] = {
        "bare": (starlette_app(None, tmp, paid=False), "/free"),
        "bare-2": (starlette_app(None, tmp, paid=False), "/free"),
        "bare + raw EVALSHA": (raw_debit_app(raw.once), "/paid"),
        "paid redis://": (starlette_app("redis", tmp, paid=True, ledger=ledger), "/paid"),
    }
    timers = asgi_timers(loop, variants)
    timers["raw EVALSHA"] = lambda n: loop.run_until_complete(timed(raw.once, n))
    try:
        samples = sample(timers, rounds, n)
    finally:
        loop.run_until_complete(raw.client.aclose())
        loop.run_until_complete(ledger.aclose())
        loop.close()
    raw_best = min(samples.pop("raw EVALSHA"))
    best, _ = table("Starlette on redis://", samples, rounds, n)
    print(f"{'raw EVALSHA':<20}{raw_best:>9.1f}")
    paid, floor = best["paid redis://"], best["bare + raw EVALSHA"]
    print(f"\nbare-vs-bare noise: {abs(best['bare-2'] - best['bare']):.1f} µs")
    print(
        f"paid redis:// = {paid / best['bare']:.2f} x bare, {paid / floor:.2f} x a bare request with one raw "
        f"EVALSHA ({paid - floor:+.1f} µs); a raw EVALSHA in a tight loop takes {raw_best:.1f} µs"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("-n", type=int, default=500, help="requests per variant per round")
    parser.add_argument("--smoke", action="store_true", help="a few requests: that it runs, not how fast")
    args = parser.parse_args()
    rounds, n = (2, 20) if args.smoke else (args.rounds, args.n)
    server = RedisServer(Path(tempfile.mkdtemp())).start()
    try:
        bench(server.port, rounds, n)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
