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
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402

from benchmarks.bench_requests import (  # noqa: E402
    PLANS,
    asgi_timers,
    raw_debit_app,
    sample,
    starlette_app,
    table,
    timed,
)
from zc_middleware import open_ledger  # noqa: E402

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


def bench(url: str, rounds: int, n: int) -> None:
    loop = asyncio.new_event_loop()
    raw = loop.run_until_complete(RawDebit.open(url))
    tmp = Path(".")
    ledger = open_ledger(url, plans=PLANS)
    variants: dict[str, tuple[Callable, str]] = {
        "bare": (starlette_app(None, tmp, paid=False), "/free"),
        "bare-2": (starlette_app(None, tmp, paid=False), "/free"),
        "bare + raw debit": (raw_debit_app(raw.once), "/paid"),
        "paid postgresql://": (starlette_app("postgresql", tmp, paid=True, ledger=ledger), "/paid"),
    }
    timers = asgi_timers(loop, variants)
    timers["raw debit"] = lambda n: loop.run_until_complete(timed(raw.once, n))
    try:
        samples = sample(timers, rounds, n)
    finally:
        loop.run_until_complete(raw.conn.close())
        ledger.close()
        loop.close()
    raw_best = min(samples.pop("raw debit"))
    best, _ = table("Starlette on postgresql://", samples, rounds, n)
    print(f"{'raw debit':<20}{raw_best:>9.1f}")
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
            bench(args.server.rsplit("/", 1)[0] + "/" + name, rounds, n)
        finally:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


if __name__ == "__main__":
    main()
