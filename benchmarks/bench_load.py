"""Throughput under load: 16 connections against one uvicorn worker, and how paid requests scale with workers.

Every variant is a Starlette app with one route, ``GET /paid``, served by its own uvicorn
process: ``bare`` (no middleware), ``slowapi`` (a limit never reached) and the route metered by
ZeroClickMiddleware on ``sqlite://``, ``redis://`` and ``postgresql://``. The load generator (wrk,
one thread, 16 connections, a buyer id out of 1,000 on each request) runs against one variant at a
time, in rounds that each start one variant further on, so all of them see the same machine. Then a
scaling table: paid requests/s with 1, 2 and 4 worker processes on each store.

It starts its own ``redis-server`` and creates a PostgreSQL database of its own on ``--server``
(dropped at the end); a store that is not available is left out, saying why. Without ``wrk``
(``apt-get install wrk``) a Python load generator stands in, and the report says so: it needs
about as much CPU per request as the server, so it bounds the numbers. ``--smoke``: one short
round and one scaling step, for the tests.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.servers import serve, uvicorn  # noqa: E402

SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"
CONNECTIONS = 16
BUYERS = 1000

APP = """
import os
from pathlib import Path

from starlette.applications import Starlette
from starlette.routing import Route

from benchmarks.bench_requests import PLANS, hello, slowapi_app, starlette_app
from zc_middleware import open_ledger

variant, url = os.environ["BENCH_VARIANT"], os.environ.get("BENCH_LEDGER", "")
if variant == "bare":
    app = Starlette(routes=[Route("/paid", hello)])
elif variant == "slowapi":
    app = slowapi_app()
else:
    app = starlette_app(variant, Path("."), paid=True, ledger=open_ledger(url, plans=PLANS))
"""

WRK_SCRIPT = f"""
counter = 0
request = function()
  counter = counter + 1
  return wrk.format("GET", "/paid", {{["zc-agent-id"] = "agent-" .. (counter % {BUYERS})}})
end
"""


class Load:
    """One measurement for ``seconds`` of load: requests/s, the 99th percentile latency (ms), and how many
    answers were not 2xx (a 503 when a store call outlasts ``ledger_timeout`` on an overloaded machine)."""

    def __init__(self, tmp: Path, warm: int) -> None:
        self.wrk = shutil.which("wrk")
        self.warm = warm
        self.script = tmp / "buyers.lua"
        self.script.write_text(WRK_SCRIPT)

    def warm_up(self, base: str) -> None:
        """Unmeasured load first: imports, connections, and every buyer's account in the store."""
        if self.warm:
            self.run(base, self.warm)

    def run(self, base: str, seconds: int) -> tuple[float, float, int]:
        if self.wrk is None:
            return asyncio.run(python_load(base, seconds))
        argv = [self.wrk, "-t1", f"-c{CONNECTIONS}", f"-d{seconds}s", "--latency", "-s", str(self.script)]
        out = subprocess.run([*argv, base + "/paid"], capture_output=True, text=True, check=True).stdout
        errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
        p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)\b", out)
        if rate is None or p99 is None:
            raise RuntimeError(f"unexpected wrk output:\n{out}")
        scale = {"us": 1e-3, "ms": 1.0, "s": 1e3}[p99.group(2)]
        return float(rate.group(1)), float(p99.group(1)) * scale, int(errors.group(1)) if errors else 0


async def python_load(base: str, seconds: float) -> tuple[float, float, int]:
    """The stand-in for wrk: ``CONNECTIONS`` keep-alive HTTP/1.1 connections, one request at a time each."""
    host, port = base.removeprefix("http://").split(":")
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds

    async def connection(number: int) -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection(host, int(port))
        serial = 0
        while time.perf_counter() < deadline:
            serial += 1
            buyer = f"agent-{(number * 7919 + serial) % BUYERS}"
            start = time.perf_counter()
            writer.write(f"GET /paid HTTP/1.1\r\nhost: {host}\r\nzc-agent-id: {buyer}\r\n\r\n".encode())
            head = await reader.readuntil(b"\r\n\r\n")
            errors += not head.startswith(b"HTTP/1.1 2")
            length = re.search(rb"(?i)content-length: (\d+)", head)
            await reader.readexactly(int(length.group(1)) if length else 0)
            latencies.append((time.perf_counter() - start) * 1e3)
        writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(connection(n) for n in range(CONNECTIONS)))
    rate = len(latencies) / (time.perf_counter() - started)
    return rate, statistics.quantiles(latencies, n=100)[98], errors


@contextlib.contextmanager
def open_stores(tmp: Path, admin_url: str) -> Iterator[dict[str, str]]:
    """The stores' URLs, by name: SQLite always, Redis and PostgreSQL where this machine has them."""
    urls = {"sqlite": f"sqlite:///{tmp / 'bench.db'}"}
    with contextlib.ExitStack() as stack:
        try:
            from tests.ledger.redis_servers import RedisServer

            redis_server = RedisServer(tmp / "redis").start()
            stack.callback(redis_server.stop)
            urls["redis"] = f"redis://{redis_server.address}/0?prefix=bench:"
        except (ImportError, OSError, RuntimeError) as exc:
            print(f"redis:// left out: no redis-server could be started ({exc})")
        try:
            import psycopg

            name = f"zc_bench_{uuid.uuid4().hex[:12]}"
            admin = psycopg.connect(admin_url, autocommit=True, connect_timeout=3)
            admin.execute(f"CREATE DATABASE {name}")  # type: ignore[arg-type]
            admin.execute(f"ALTER DATABASE {name} SET synchronous_commit = off")  # type: ignore[arg-type]
            stack.callback(admin.close)
            stack.callback(admin.execute, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            urls["postgresql"] = admin_url.rsplit("/", 1)[0] + "/" + name
        except Exception as exc:
            print(f"postgresql:// left out: no database could be made on {admin_url} ({exc})")
        yield urls


@contextlib.contextmanager
def served(tmp: Path, variant: str, url: str = "", workers: int = 1) -> Iterator[str]:
    env = {"PYTHONPATH": f"{tmp}{os.pathsep}{ROOT}", "BENCH_VARIANT": variant, "BENCH_LEDGER": url}
    argv = [*uvicorn("bench_load_app:app"), "--workers", str(workers), "--no-access-log"]
    with serve(argv, env=env, ready_path="/paid") as base:
        if workers > 1:
            time.sleep(0.5 * workers)  # every worker up, not only the first that answered
        yield base


def compare(tmp: Path, load: Load, urls: dict[str, str], rounds: int, seconds: int) -> None:
    variants = {"bare": "", "slowapi": "", **{f"paid {name}://": url for name, url in urls.items()}}
    results: dict[str, list[tuple[float, float, int]]] = {name: [] for name in variants}
    with contextlib.ExitStack() as stack:
        bases = {}
        for name, url in variants.items():
            bases[name] = stack.enter_context(served(tmp, name.split()[-1].rstrip(":/"), url))
            load.warm_up(bases[name])
        names = list(variants)
        for r in range(rounds):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                results[name].append(load.run(bases[name], seconds))
    rate = {name: statistics.median(r for r, _, _ in values) for name, values in results.items()}
    p99 = {name: statistics.median(p for _, p, _ in values) for name, values in results.items()}
    errors = {name: sum(e for _, _, e in values) for name, values in results.items()}
    print(f"\n{CONNECTIONS} connections, one uvicorn worker, {rounds} rounds x {seconds} s (medians)\n")
    print(f"{'variant':<22}{'req/s':>9}{'x bare':>9}{'p99 ms':>9}{'+ms':>8}{'non-2xx':>9}")
    for name in variants:
        print(
            f"{name:<22}{rate[name]:>9.0f}{rate[name] / rate['bare']:>9.2f}{p99[name]:>9.2f}"
            f"{p99[name] - p99['bare']:>+8.2f}{errors[name]:>9}"
        )


def scaling(tmp: Path, load: Load, urls: dict[str, str], workers: list[int], seconds: int) -> None:
    print(f"\nPaid requests/s by uvicorn worker processes, {CONNECTIONS} connections, {seconds} s each\n")
    print(f"{'store':<14}" + "".join(f"{f'{w} worker' + ('s' if w > 1 else ''):>20}" for w in workers))
    for name, url in {"bare": "", **urls}.items():
        row = []
        for count in workers:
            with served(tmp, name, url, workers=count) as base:
                load.warm_up(base)
                rate, _, failed = load.run(base, seconds)
                row.append(f"{rate:.0f}" + (f" ({failed} non-2xx)" if failed else ""))
        print(f"{name:<14}" + "".join(f"{cell:>20}" for cell in row))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--server", default=SERVER, help="a PostgreSQL administrative URL; a database is made there")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=2, help="of load per variant per round")
    parser.add_argument("--scaling-seconds", type=int, default=5)
    parser.add_argument("--smoke", action="store_true", help="one short round and one scaling step: checks it runs")
    args = parser.parse_args()
    rounds, seconds, scale_seconds, workers = (
        (1, 1, 1, [1]) if args.smoke else (args.rounds, args.seconds, args.scaling_seconds, [1, 2, 4])
    )
    tmp = Path(tempfile.mkdtemp())
    (tmp / "bench_load_app.py").write_text(APP)
    load = Load(tmp, warm=0 if args.smoke else 2)
    stand_in = "Python (wrk is not installed: apt-get install wrk); it bounds the numbers"
    print(f"load generator: {'wrk' if load.wrk else stand_in}")
    print(f"machine: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, {time.strftime('%Y-%m-%d')}")
    with open_stores(tmp, args.server) as urls:
        compare(tmp, load, urls, rounds, seconds)
        scaling(tmp, load, urls, workers, scale_seconds)


if __name__ == "__main__":
    main()
