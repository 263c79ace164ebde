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
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import redis.asyncio  # noqa: E402
from starlette.applications import Starlette  # noqa: E402
from starlette.requests import Request  # noqa: E402
from starlette.responses import PlainTextResponse  # noqa: E402
from starlette.routing import Route  # noqa: E402

from benchmarks.bench_requests import PLANS, run_asgi, starlette_app  # noqa: E402
from tests.ledger.redis_servers import RedisServer  # noqa: E402
from zc_middleware import ZeroClickSettings, metered  # noqa: E402
from zc_middleware.ledger import open_ledger  # noqa: E402
from zc_middleware.ledger.redis import RedisLedger  # noqa: E402
from zc_middleware.starlette import ZeroClickMiddleware  # noqa: E402

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

    async def run(self, n: int) -> float:
        for _ in range(50):
            await self.once()
        start = time.perf_counter()
        for _ in range(n):
            await self.once()
        return (time.perf_counter() - start) / n * 1e6


def raw_evalsha_app(raw: RawEvalsha) -> Starlette:
    """A bare app whose handler makes one raw ``EVALSHA``: the cost of that call inside a request."""

    async def paid(request: Request) -> PlainTextResponse:
        await raw.once()
        return PlainTextResponse("hello")

    return Starlette(routes=[Route("/paid", paid)])


def redis_app(ledger: RedisLedger) -> Starlette:
    async def view(request: Request) -> PlainTextResponse:
        return PlainTextResponse("hello")

    metered("api-requests")(view)
    app = Starlette(routes=[Route("/paid", view)])
    settings = ZeroClickSettings(meters={"api-requests": {}}, plans=PLANS, ledger=ledger.url)
    app.add_middleware(ZeroClickMiddleware, settings=settings, ledger=ledger)
    return app


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
        "bare + raw EVALSHA": (raw_evalsha_app(raw), "/paid"),
        "paid redis://": (redis_app(ledger), "/paid"),
    }
    timers: dict[str, Callable[[int], float]] = {
        name: (lambda n, app=app, path=path: loop.run_until_complete(run_asgi(app, path, n)))
        for name, (app, path) in variants.items()
    }
    timers["raw EVALSHA"] = lambda n: loop.run_until_complete(raw.run(n))
    try:
        report(timers, rounds, n)
    finally:
        loop.run_until_complete(raw.client.aclose())
        loop.run_until_complete(ledger.aclose())
        loop.close()


def report(timers: dict[str, Callable[[int], float]], rounds: int, n: int) -> None:
    """Best and median of ``rounds`` rounds per variant, each round starting one variant further on:
    on a shared machine other work only ever slows a round down, so the best is the closest to the cost."""
    samples: dict[str, list[float]] = {name: [] for name in timers}
    names = list(timers)
    for r in range(rounds):
        start = r % len(names)
        for name in names[start:] + names[:start]:
            samples[name].append(timers[name](n))
    best = {name: min(values) for name, values in samples.items()}
    median = {name: statistics.median(values) for name, values in samples.items()}
    print(f"\nStarlette on redis://, in process: {rounds} rounds x {n} requests (µs per request)\n")
    print(f"{'variant':<22}{'best':>9}{'x bare':>9}{'+µs':>9}{'median':>10}")
    for name in names:
        print(
            f"{name:<22}{best[name]:>9.1f}{best[name] / best['bare']:>9.3f}"
            f"{best[name] - best['bare']:>+9.1f}{median[name]:>10.1f}"
        )
    paid, floor = best["paid redis://"], best["bare + raw EVALSHA"]
    print(f"\nbare-vs-bare noise: {abs(best['bare-2'] - best['bare']):.1f} µs")
    print(
        f"paid redis:// = {paid / best['bare']:.2f} x bare, {paid / floor:.2f} x a bare request with one raw "
        f"EVALSHA ({paid - floor:+.1f} µs); a raw EVALSHA in a tight loop takes {best['raw EVALSHA']:.1f} µs"
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
