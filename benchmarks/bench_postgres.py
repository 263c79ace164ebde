"""Per-request cost of a paid Starlette route on a ``postgresql://`` ledger, against a bare app and one raw debit.

Calls each ASGI app in process (no sockets on the HTTP side) so that only the
framework, the middleware and the database round trip are timed. The floor a
PostgreSQL ledger can reach is one ``UPDATE ... WHERE used + 1 <= lim
RETURNING`` round trip; ``bare + raw debit`` is a bare app whose handler does
exactly that, on its own async connection to the same database. The benchmark
creates a database of its own on the server (``--server``) and drops it at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402
from starlette.applications import Starlette  # noqa: E402
from starlette.requests import Request  # noqa: E402
from starlette.responses import PlainTextResponse  # noqa: E402
from starlette.routing import Route  # noqa: E402

from benchmarks.bench_requests import PLANS, run_asgi, starlette_app  # noqa: E402
from zc_middleware import ZeroClickSettings, metered, open_ledger  # noqa: E402
from zc_middleware.starlette import ZeroClickMiddleware  # noqa: E402

SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"


class RawDebit:
    """One atomic conditional debit on its own async connection: the floor any PostgreSQL ledger pays."""

    SQL = "UPDATE bench_raw SET used = used + 1 WHERE buyer = %s AND meter = %s AND used + 1 <= lim RETURNING used"

    def __init__(self, conn: psycopg.AsyncConnection) -> None:
        self.conn = conn

    @classmethod
    async def open(cls, url: str) -> RawDebit:
        conn = await psycopg.AsyncConnection.connect(url, autocommit=True)
        await conn.execute(
            "CREATE TABLE bench_raw (buyer TEXT, meter TEXT, used BIGINT, lim BIGINT, PRIMARY KEY (buyer, meter))"
        )
        await conn.execute("INSERT INTO bench_raw VALUES ('a', 'm', 0, 1000000000000000)")
        return cls(conn)

    async def once(self) -> None:
        await (await self.conn.execute(self.SQL, ("a", "m"))).fetchall()

    async def run(self, n: int) -> float:
        for _ in range(50):
            await self.once()
        start = time.perf_counter()
        for _ in range(n):
            await self.once()
        return (time.perf_counter() - start) / n * 1e6


def paid_app(url: str) -> Starlette:
    async def view(request: Request) -> PlainTextResponse:
        return PlainTextResponse("hello")

    metered("api-requests")(view)
    app = Starlette(routes=[Route("/paid", view)])
    settings = ZeroClickSettings(meters={"api-requests": {}}, plans=PLANS, ledger=url)
    app.add_middleware(ZeroClickMiddleware, settings=settings, ledger=open_ledger(url, plans=PLANS))
    return app


def raw_debit_app(debit: RawDebit) -> Starlette:
    async def paid(request: Request) -> PlainTextResponse:
        await debit.once()
        return PlainTextResponse("hello")

    return Starlette(routes=[Route("/paid", paid)])


async def bench(url: str, rounds: int, n: int) -> None:
    raw = await RawDebit.open(url)
    tmp = Path(".")
    variants: dict[str, tuple[Callable, str]] = {
        "bare": (starlette_app(None, tmp, paid=False), "/free"),
        "bare-2": (starlette_app(None, tmp, paid=False), "/free"),
        "bare + raw debit": (raw_debit_app(raw), "/paid"),
        "paid postgresql://": (paid_app(url), "/paid"),
    }
    samples: dict[str, list[float]] = {name: [] for name in [*variants, "raw debit"]}
    names = list(samples)
    for r in range(rounds):
        start = r % len(names)
        for name in names[start:] + names[:start]:
            if name == "raw debit":
                samples[name].append(await raw.run(n))
            else:
                app, path = variants[name]
                samples[name].append(await run_asgi(app, path, n))
    await raw.conn.close()
    raw_best = min(samples.pop("raw debit"))
    best = {name: min(values) for name, values in samples.items()}
    median = {name: statistics.median(values) for name, values in samples.items()}
    print(f"\nStarlette on postgresql://, in process: {rounds} rounds x {n} requests (µs per request)\n")
    print(f"{'variant':<22}{'best':>9}{'x bare':>9}{'+µs':>9}{'median':>10}{'+µs':>9}")
    for name in samples:
        print(
            f"{name:<22}{best[name]:>9.1f}{best[name] / best['bare']:>9.3f}{best[name] - best['bare']:>+9.1f}"
            f"{median[name]:>10.1f}{median[name] - median['bare']:>+9.1f}"
        )
    print(f"{'raw debit':<22}{raw_best:>9.1f}")
    paid, floor = best["paid postgresql://"] - best["bare"], best["bare + raw debit"] - best["bare"]
    print(
        f"\npaid postgresql:// adds {paid:.1f} µs = one raw debit inside a request ({floor:.1f} µs) "
        f"{paid - floor:+.1f} µs; x{best['paid postgresql://'] / best['bare + raw debit']:.2f} of bare + raw debit; "
        f"a raw debit in a tight loop takes {raw_best:.1f} µs"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--server", default=SERVER, help="an administrative URL; a database is created there")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("-n", type=int, default=300, help="requests per variant per round")
    parser.add_argument("--smoke", action="store_true", help="two rounds of a few requests: checks it runs")
    args = parser.parse_args()
    rounds, n = (2, 10) if args.smoke else (args.rounds, args.n)
    name = f"zc_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(args.server, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
        try:
            asyncio.run(bench(args.server.rsplit("/", 1)[0] + "/" + name, rounds, n))
        finally:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


if __name__ == "__main__":
    main()
