"""Per-request cost of zc_middleware against a bare app, measured in the same run.

Calls each ASGI app in process (no sockets) so that only the framework and the
middleware are timed; ``--e2e`` adds latency percentiles under real uvicorn servers.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from starlette.applications import Starlette  # noqa: E402
from starlette.requests import Request  # noqa: E402
from starlette.responses import PlainTextResponse  # noqa: E402
from starlette.routing import Route  # noqa: E402

from zc_middleware import Ledger, ZeroClickSettings, metered  # noqa: E402
from zc_middleware.starlette import ZeroClickMiddleware  # noqa: E402
from zc_middleware.testing import sign  # noqa: E402

PLANS = {"big": {"default": True, "includes": {"api-requests": {"limit": 10**15, "reset": "month"}}}}
HEADERS = [(b"host", b"bench"), (b"zc-agent-id", b"agent-bench"), (b"user-agent", b"bench")]
#: the signed variant's secret, and its request: a small JSON body, signed once (the verifier keeps no
#: replay state, so one signature serves every request within the tolerance)
SIGNING = {"bench": "bench-signing-secret"}
SIGNED_BODY = b'{"q": "owls", "page": 2, "filters": ["a", "b"]}'
SMOKE_HELP = "a few requests of every variant, to check that the benchmark runs (its numbers mean nothing)"


class RawDebit:
    """One atomic conditional debit, the floor any SQLite ledger pays: the same statement shape
    (``UPDATE ... WHERE used + n <= lim RETURNING``), on its own connection with the ledger's
    pragmas, in a table of the ledger's own database file. Sharing the file shares the WAL and the
    ledger's background checkpoints, so both are timed under the same I/O conditions."""

    SQL = "UPDATE bench_raw SET used = used + 1 WHERE buyer = ? AND meter = ? AND used + 1 <= lim RETURNING used"

    def __init__(self, path: Path) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None, timeout=5)
        for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "wal_autocheckpoint=0"):
            self.conn.execute(f"PRAGMA {pragma}").fetchall()
        self.conn.execute(
            "CREATE TABLE IF NOT EXISTS bench_raw (buyer TEXT, meter TEXT, used INT, lim INT, "
            "PRIMARY KEY (buyer, meter)) WITHOUT ROWID"
        )
        self.conn.execute("INSERT OR REPLACE INTO bench_raw VALUES ('a', 'm', 0, 1000000000000000)")

    def once(self) -> None:
        self.conn.execute(self.SQL, ("a", "m")).fetchall()

    def run(self, n: int) -> float:
        execute, sql = self.conn.execute, self.SQL
        for _ in range(50):
            execute(sql, ("a", "m")).fetchall()
        start = time.perf_counter()
        for _ in range(n):
            execute(sql, ("a", "m")).fetchall()
        return (time.perf_counter() - start) / n * 1e6


async def hello(request: Request) -> PlainTextResponse:
    return PlainTextResponse("hello")


def starlette_app(
    middleware: str | None,
    tmp: Path,
    *,
    paid: bool,
    ledger: Ledger | None = None,
    guard: bool = True,
    signed: bool = False,
) -> Starlette:
    """An app with one route: ``/paid``, metered, or ``/free``. One route per app, so that every
    variant's router does the same work (a router tries its routes in order). ``middleware``:
    ``None`` (bare), ``"memory"``, ``"sqlite"``, or any name with an open ``ledger`` to use.
    ``guard=False`` routes the metered function itself (marked and priced the same) rather than the
    guard ``@metered`` returns: the difference is what the guard costs a paid request. ``signed``:
    settings with ``signing_secrets``, so every paid request's signature is verified."""
    if paid:

        async def view(request: Request) -> PlainTextResponse:
            return PlainTextResponse("hello")

        guarded = metered("api-requests")(view)  # marks ``view`` too
        app = Starlette(routes=[Route("/paid", guarded if guard else view)])
    else:
        app = Starlette(routes=[Route("/free", hello)])
    if middleware is not None:
        if ledger is not None:
            url = ledger.url
        else:
            url = "memory://" if middleware == "memory" else f"sqlite:///{tmp / 'bench.db'}"
        signing = {"signing_secrets": SIGNING, "signature_tolerance": 86_400} if signed else {}
        settings = ZeroClickSettings(meters={"api-requests": {}}, plans=PLANS, ledger=url, **signing)
        app.add_middleware(ZeroClickMiddleware, settings=settings, ledger=ledger)
    return app


def vendor_signed_app(tmp: Path) -> Starlette:
    """The signed variant with the vendor SDK's ``verify_request`` (and the ``ZcRequest`` it takes) in
    place of the package's verifier: what depending on the SDK would cost the same request."""
    from zeroclick_sellers import ZcRequest, verify_request

    def verify(method: str, target: str, body: bytes | None, get_header: Callable) -> None:
        names = ("zc-signature", "zc-request-id", "zc-agent-id")
        request = ZcRequest(method, target, {n: v for n in names if (v := get_header(n))}, body or b"")
        result = verify_request(request, signing_secrets=SIGNING, tolerance_seconds=86_400)
        assert result.ok, result

    app = starlette_app("memory", tmp, paid=True, signed=True)
    app.middleware_stack = layer = app.build_middleware_stack()
    while not isinstance(layer, ZeroClickMiddleware):
        layer = layer.app
    layer.gate.verify = verify  # type: ignore[method-assign,assignment]
    return app


class PassThrough:
    """The least any pure ASGI middleware adds: it awaits the app. The floor for a free route."""

    def __init__(self, app: Callable) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        await self.app(scope, receive, send)


class SendWrapper:
    """A pure ASGI middleware that wraps ``send`` as ZeroClick wraps a free route's (to drop the
    contract's headers the app set), and does nothing with it: the floor for that shape."""

    def __init__(self, app: Callable) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        async def wrapped(message: dict) -> None:
            await send(message)

        await self.app(scope, receive, wrapped)


def pass_through_app(tmp: Path, middleware: type = PassThrough) -> Starlette:
    app = starlette_app(None, tmp, paid=False)
    app.add_middleware(middleware)
    return app


def raw_debit_app(once: Callable[[], object]) -> Starlette:
    """A bare app whose handler makes one raw store call (``once``, sync or async): the cost of that
    call inside a request, the floor any ledger on that store pays."""
    if inspect.iscoroutinefunction(once):

        async def paid(request: Request) -> PlainTextResponse:
            await once()
            return PlainTextResponse("hello")

    else:

        async def paid(request: Request) -> PlainTextResponse:
            once()
            return PlainTextResponse("hello")

    return Starlette(routes=[Route("/paid", paid)])


async def timed(once: Callable[[], Awaitable[object]], n: int) -> float:
    """µs per call of an async ``once`` in a tight loop, after 50 warm-up calls."""
    for _ in range(50):
        await once()
    start = time.perf_counter()
    for _ in range(n):
        await once()
    return (time.perf_counter() - start) / n * 1e6


def slowapi_app() -> Starlette:
    from slowapi import Limiter, _rate_limit_exceeded_handler
    from slowapi.errors import RateLimitExceeded
    from slowapi.util import get_remote_address

    limiter = Limiter(key_func=get_remote_address, storage_uri="memory://")

    @limiter.limit("1000000000/minute")
    async def limited(request: Request) -> PlainTextResponse:
        return PlainTextResponse("hello")

    app = Starlette(routes=[Route("/paid", limited)])
    app.state.limiter = limiter
    app.add_exception_handler(RateLimitExceeded, _rate_limit_exceeded_handler)  # type: ignore[arg-type]
    return app


def signed_headers(path: str) -> list[tuple[bytes, bytes]]:
    """:data:`HEADERS`, and the signature of a ``GET`` of ``path`` carrying :data:`SIGNED_BODY` (the
    routes take ``GET`` only; the verifier's work is the same for any method)."""
    (kid, secret), agent = next(iter(SIGNING.items())), {"zc-agent-id": "agent-bench"}
    extra = sign("GET", path, SIGNED_BODY, agent, secret=secret, kid=kid)
    added = [(name.encode(), value.encode()) for name, value in extra.items() if name != "zc-agent-id"]
    return [*HEADERS, (b"content-length", str(len(SIGNED_BODY)).encode()), *added]


def scope(path: str, headers: list[tuple[bytes, bytes]] | None = None) -> dict:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": HEADERS if headers is None else headers,
        "server": ("bench", 80),
        "client": ("127.0.0.1", 5000),
    }


async def _receive() -> dict:
    return {"type": "http.request", "body": b"", "more_body": False}


async def _send(message: dict) -> None:
    if message["type"] == "http.response.start" and message["status"] != 200:
        raise RuntimeError(f"unexpected status {message['status']}")


async def _receive_signed() -> dict:
    return {"type": "http.request", "body": SIGNED_BODY, "more_body": False}


async def run_asgi(app: Callable, path: str, n: int, headers: list[tuple[bytes, bytes]] | None = None) -> float:
    """µs per request of ``app`` at ``path``; with ``headers``, the signed request with its body."""
    sc = scope(path, headers)
    receive = _receive if headers is None else _receive_signed
    for _ in range(50):  # warm caches
        await app(dict(sc), receive, _send)
    start = time.perf_counter()
    for _ in range(n):
        await app(dict(sc), receive, _send)
    return (time.perf_counter() - start) / n * 1e6


def asgi_timers(
    loop: asyncio.AbstractEventLoop, variants: dict[str, tuple[Callable, str]]
) -> dict[str, Callable[[int], float]]:
    """One timer per ``(app, path)`` variant: ``n`` requests on ``loop`` -> µs per request. A variant
    whose name says ``signed`` sends the signed request (:func:`signed_headers`)."""

    def timer(app: Callable, path: str, headers: list[tuple[bytes, bytes]] | None) -> Callable[[int], float]:
        return lambda n: loop.run_until_complete(run_asgi(app, path, n, headers))

    return {
        name: timer(app, path, signed_headers(path) if "signed" in name else None)
        for name, (app, path) in variants.items()
    }


def bench_inprocess(rounds: int, n: int) -> None:
    tmp = Path(tempfile.mkdtemp())
    variants: dict[str, tuple[Callable, str]] = {
        "bare": (starlette_app(None, tmp, paid=False), "/free"),
        "bare-2": (starlette_app(None, tmp, paid=False), "/free"),
        "no-op middleware": (pass_through_app(tmp), "/free"),
        "no-op wrapper": (pass_through_app(tmp, SendWrapper), "/free"),
        "free route + zc": (starlette_app("memory", tmp, paid=False), "/free"),
        "paid memory://": (starlette_app("memory", tmp, paid=True), "/paid"),
        "paid memory://, no guard": (starlette_app("memory", tmp, paid=True, guard=False), "/paid"),
        "paid memory://, signed": (starlette_app("memory", tmp, paid=True, signed=True), "/paid"),
        "paid memory://, signed (vendor SDK)": (vendor_signed_app(tmp), "/paid"),
        "paid sqlite://": (starlette_app("sqlite", tmp, paid=True), "/paid"),
    }
    try:
        variants["slowapi @limit"] = (slowapi_app(), "/paid")
    except ImportError:
        print("(slowapi not installed: pip install -e '.[bench]')")
    loop = asyncio.new_event_loop()
    loop.run_until_complete(run_asgi(variants["paid sqlite://"][0], "/paid", 1))  # creates the ledger file
    raw_debit = RawDebit(tmp / "bench.db")
    variants["bare + raw debit"] = (raw_debit_app(raw_debit.once), "/paid")
    measure("Starlette", asgi_timers(loop, variants), raw_debit, rounds, n)
    loop.close()


def sample(timers: dict[str, Callable[[int], float]], rounds: int, n: int) -> dict[str, list[float]]:
    """Time every variant (``n`` requests -> µs per request) ``rounds`` times, each round starting
    one variant further on, so that no variant always runs first or last."""
    samples: dict[str, list[float]] = {name: [] for name in timers}
    names = list(timers)
    for r in range(rounds):
        start = r % len(names)
        for name in names[start:] + names[:start]:
            samples[name].append(timers[name](n))
    return samples


Best = dict[str, float]


def table(title: str, samples: dict[str, list[float]], rounds: int, n: int) -> tuple[Best, Best]:
    """Print each variant's best round and median against ``bare``'s; returns (best, median).

    The targets are judged on the best rounds: on a shared machine other work can only slow a round
    down, never speed it up, so the fastest round is the closest to what the code costs. The garbage
    collector stays on: the collections a variant's allocations cause are part of its cost. The
    medians are printed beside them to show the noise."""
    best = {name: min(values) for name, values in samples.items()}
    median = {name: statistics.median(values) for name, values in samples.items()}
    width = max(20, *(len(name) + 2 for name in samples))
    print(f"\n{title}, in process: {rounds} rounds x {n} requests (µs per request)\n")
    print(f"{'variant':<{width}}{'best':>9}{'x bare':>9}{'+µs':>9}{'median':>10}{'+µs':>9}")
    for name in samples:
        print(
            f"{name:<{width}}{best[name]:>9.1f}{best[name] / best['bare']:>9.3f}{best[name] - best['bare']:>+9.1f}"
            f"{median[name]:>10.1f}{median[name] - median['bare']:>+9.1f}"
        )
    return best, median


def measure(title: str, timers: dict[str, Callable[[int], float]], raw: RawDebit, rounds: int, n: int) -> None:
    """Time every variant and the raw debit in the same rounds (:func:`sample`), print the table
    (:func:`table`) and the targets."""
    samples = sample({**timers, "raw SQLite debit": raw.run}, rounds, n)
    raw_best = min(samples.pop("raw SQLite debit"))
    best, median = table(title, samples, rounds, n)
    print(f"{'raw SQLite debit':<20}{raw_best:>9.1f}")

    def added(name: str) -> float:
        return best[name] - best["bare"]

    print("\nTargets, judged on the best rounds:")
    spread = abs(median["bare-2"] - median["bare"])
    print(f"bare-vs-bare noise: {abs(added('bare-2')):.1f} µs (medians: {spread:.1f} µs)")
    print(
        f"free route adds {added('free route + zc'):.1f} µs; a no-op middleware adds "
        f"{added('no-op middleware'):.1f} µs, and one that wraps the response the same way "
        f"{added('no-op wrapper'):.1f} µs"
    )
    free_over = best["free route + zc"] - best["no-op wrapper"]
    print(
        f"free route vs the no-op wrapper: {free_over:+.2f} µs, x{best['free route + zc'] / best['no-op wrapper']:.3f} "
        "(target: <= +1.5 µs)"
    )
    print(f"paid memory:// adds {added('paid memory://'):.1f} µs (target: <= +10 µs)")
    if "paid memory://, signed" in best:
        signing = best["paid memory://, signed"] - best["paid memory://"]
        print(f"verifying the proxy's signature adds {signing:.1f} µs to a paid request (target: <= +5 µs)")
    if "paid memory://, signed (vendor SDK)" in best:
        vendor = best["paid memory://, signed (vendor SDK)"] - best["paid memory://"]
        print(f"the same with the vendor SDK's verify_request adds {vendor:.1f} µs")
    in_request = added("bare + raw debit")
    print(
        f"paid sqlite:// adds {added('paid sqlite://'):.1f} µs = one raw debit inside a request ({in_request:.1f} µs) "
        f"{added('paid sqlite://') - in_request:+.1f} µs (target: <= +10 µs); "
        f"a raw debit in a tight loop takes {raw_best:.1f} µs"
    )


ZC_SERVER = """
import os
from pathlib import Path
from benchmarks.bench_requests import starlette_app
app = starlette_app("sqlite", Path(os.environ["BENCH_TMP"]), paid=True)
"""

BARE_SERVER = """
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route
async def hello(request): return PlainTextResponse("hello")
app = Starlette(routes=[Route("/paid", hello)])
"""


def bench_e2e(n: int, warm: int = 100) -> None:
    import httpx

    sys.path.insert(0, str(ROOT / "tests"))
    from tests.servers import serve, uvicorn

    tmp = Path(tempfile.mkdtemp())
    (tmp / "bare_app.py").write_text(BARE_SERVER)
    (tmp / "zc_app.py").write_text(ZC_SERVER)
    env = {"PYTHONPATH": f"{tmp}{os.pathsep}{ROOT}", "BENCH_TMP": str(tmp)}
    lat: dict[str, list[float]] = {"bare": [], "paid sqlite://": []}
    with serve(uvicorn("bare_app:app"), env=env) as bare, serve(uvicorn("zc_app:app"), env=env) as paid:
        urls = {"bare": bare + "/paid", "paid sqlite://": paid + "/paid"}
        with httpx.Client(headers={"zc-agent-id": "agent-e2e"}) as client:
            for _ in range(warm):
                for url in urls.values():
                    client.get(url)
            for _ in range(n):
                for name, url in urls.items():
                    t = time.perf_counter()
                    assert client.get(url).status_code == 200
                    lat[name].append((time.perf_counter() - t) * 1e3)
    print(f"\nEnd to end under uvicorn, {n} sequential keep-alive requests each (ms)\n")
    print(f"{'variant':<20}{'p50':>8}{'p99':>8}")
    for name, values in lat.items():
        q = statistics.quantiles(values, n=100)
        print(f"{name:<20}{q[49]:>8.3f}{q[98]:>8.3f}")
    p99 = {name: statistics.quantiles(v, n=100)[98] for name, v in lat.items()}
    print(f"\np99 difference: {p99['paid sqlite://'] - p99['bare']:+.3f} ms (target: within 1.5 ms)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("-n", type=int, default=500, help="requests per variant per round")
    parser.add_argument("--e2e", action="store_true", help="also measure end to end under uvicorn")
    parser.add_argument("--smoke", action="store_true", help=SMOKE_HELP)
    args = parser.parse_args()
    e2e_requests, e2e_warm = 2000, 100
    if args.smoke:
        args.rounds, args.n, e2e_requests, e2e_warm = 2, 20, 50, 5
    bench_inprocess(args.rounds, args.n)
    if args.e2e:
        bench_e2e(e2e_requests, warm=e2e_warm)


if __name__ == "__main__":
    main()
