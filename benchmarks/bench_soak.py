"""Soak test with faults: ``.venv/bin/python benchmarks/bench_soak.py [--minutes 10]`` (``--smoke``: 20 s).

Two real servers share one SQLite ledger file (ledger and outbox in it) and send their batch events to
a local stand-in for the batch API (``tests/reporter/batch_server``): gunicorn with 2 gthread workers
on a Flask app and uvicorn on a Starlette app. Each app serves

=================  =========================================================================================
``GET /free``      free
``GET /paid``      ``api-calls`` (header meter, estimate 10), records ``?units=``
``GET /job``       ``compute-seconds`` (batch channel, estimate 30), records ``?units=``
``GET /stream``    ``tokens`` (header meter, estimate 100), three chunks of 10 recorded after the headers
                   went out: late usage, sent on the batch channel as the remainder
=================  =========================================================================================

Eight client threads send a mix of these to both servers for ``--minutes``, from 40 buyers, each request
with its own ``zc-request-id``. Every ``--fault-every`` seconds one fault is injected, six kinds in
turn: another process holds the ledger's write lock for half the busy timeout (1 s: writes wait) or
for 2.5 times it (writes fail: a check answers 503, a settle is journaled); a gunicorn worker gets
``kill -9`` (the master starts another, which replays the dead worker's journal); uvicorn gets
``kill -9`` and is restarted on its port (replaying its predecessor's journal); and each kill once
more in a long lock, aimed at a process with journaled settles (waiting for one at most 2 s more),
so that the next process has something to replay.

Then the load stops, the servers settle (every journal applied, the outbox sent; at most 120 s) and
stop. The report gives the answers by server and status (``refused``: no connection, the server was
down; ``no answer``: the connection broke mid-request, a kill), the faults by kind, how many settles
were journaled and how many of those a later process replayed, and three invariants:

1. per buyer and meter, the ledger's ``used`` equals the usage billed by ``X-ZeroClick-Usage`` on 2xx
   answers plus the batch events delivered, plus what killed requests still hold, each at most its
   estimate (the table's ``held``). A killed request is one with ``no answer``, or one answered by a
   process killed within 2 s after (``cut``): a settle is written after the answer went out, waiting
   up to the busy timeout in a lock, and a kill meanwhile takes it along before it is journaled.
   Fails (exit 1) when the ledger has less than was billed and delivered (a lost write), or more
   than the killed requests can explain.
2. no event key reached the batch API twice. Fails (exit 1) otherwise.
3. holds left past their lease: SQLite holds are not leases yet, so a killed request keeps its hold
   for good. Reported as "units held by killed requests", not hidden; it does not fail the run.

A run that does not settle within 120 s exits 1 too. The files (ledger, server logs) stay in the
temporary directory the first line names.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.faults.journal_support import children, journal_files, wait_until, write_lock  # noqa: E402
from tests.reporter.helpers import KEY, batch_api  # noqa: E402
from tests.servers import free_port  # noqa: E402
from zc_middleware import ZeroClickSettings, metered, record_usage  # noqa: E402
from zc_middleware.journal import parse  # noqa: E402

ESTIMATES = {"api-calls": 10, "compute-seconds": 30, "tokens": 100}
ROUTE_METER = {"/paid": "api-calls", "/job": "compute-seconds", "/stream": "tokens"}
MIX = ["/free"] * 3 + ["/paid"] * 4 + ["/job"] * 2 + ["/stream"]
BUYERS = [f"buyer-{i}" for i in range(40)]
BUSY_TIMEOUT = 1.0
CUT_WINDOW = BUSY_TIMEOUT + 1.0  # a settle waits up to the busy timeout, after its answer went out
JOB_SECONDS = 0.1  # a job takes a while: some are in flight when a lock starts, and their settles fail
FAULTS = [
    "lock shorter than the busy timeout",
    "lock longer than the busy timeout",
    "kill -9 a gunicorn worker",
    "kill -9 uvicorn (restarted)",
    "kill -9 a gunicorn worker in a long lock",
    "kill -9 uvicorn in a long lock",
]
GUNICORN = "gunicorn -b 127.0.0.1:{port} -w 2 --threads 4 --log-level warning bench_soak:wsgi_app".split()
UVICORN = "uvicorn bench_soak:asgi_app --host 127.0.0.1 --port {port} --log-level warning".split()


def settings() -> ZeroClickSettings:
    """The meters and an unlimited plan; the ledger, batch API and timeouts come from ``ZEROCLICK_*``."""
    plans: dict[str, Any] = {"soak": {"default": True, "includes": {m: {"limit": None} for m in ESTIMATES}}}
    meters: dict[str, Any] = {"api-calls": {}, "compute-seconds": {"channel": "batch"}, "tokens": {}}
    return ZeroClickSettings(meters=meters, plans=plans)


def served_by() -> dict[str, str]:
    """The process that answered: a request answered shortly before that process was killed may have
    lost its settle (written after the answer went out) with the process."""
    return {"x-soak-pid": str(os.getpid())}


def units(raw: str | None, meter: str) -> int:
    return max(1, min(ESTIMATES[meter], int(raw or 1)))


def _starlette_app() -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse, Response, StreamingResponse
    from starlette.routing import Route

    from zc_middleware.starlette import ZeroClickMiddleware

    async def free(request: Request) -> Response:
        return PlainTextResponse("free", headers=served_by())

    @metered("api-calls", estimate=ESTIMATES["api-calls"])
    async def paid(request: Request) -> Response:
        record_usage("api-calls", units(request.query_params.get("units"), "api-calls"))
        return PlainTextResponse("paid", headers=served_by())

    @metered("compute-seconds", estimate=ESTIMATES["compute-seconds"])
    async def job(request: Request) -> Response:
        await asyncio.sleep(JOB_SECONDS)
        record_usage("compute-seconds", units(request.query_params.get("units"), "compute-seconds"))
        return PlainTextResponse("job", headers=served_by())

    @metered("tokens", estimate=ESTIMATES["tokens"])
    async def stream(request: Request) -> Response:
        async def body() -> Any:
            for i in range(3):
                await asyncio.sleep(0.02)  # long enough for a kill to land mid-body now and then
                record_usage("tokens", 10)
                yield f"chunk-{i}\n".encode()

        return StreamingResponse(body(), media_type="text/plain", headers=served_by())

    routes = [Route("/free", free), Route("/paid", paid), Route("/job", job), Route("/stream", stream)]
    app = Starlette(routes=routes)
    app.add_middleware(ZeroClickMiddleware, settings=settings())
    return app


def _flask_app() -> Any:
    from flask import Flask, Response, request

    from zc_middleware.flask import ZeroClick

    app = Flask(__name__)

    @app.get("/free")
    def free() -> str:
        return "free"

    @app.get("/paid")
    @metered("api-calls", estimate=ESTIMATES["api-calls"])
    def paid() -> str:
        record_usage("api-calls", units(request.args.get("units"), "api-calls"))
        return "paid"

    @app.get("/job")
    @metered("compute-seconds", estimate=ESTIMATES["compute-seconds"])
    def job() -> str:
        time.sleep(JOB_SECONDS)
        record_usage("compute-seconds", units(request.args.get("units"), "compute-seconds"))
        return "job"

    @app.get("/stream")
    @metered("tokens", estimate=ESTIMATES["tokens"])
    def stream() -> Response:
        def body() -> Any:
            for i in range(3):
                time.sleep(0.02)
                record_usage("tokens", 10)
                yield f"chunk-{i}\n"

        return Response(body(), mimetype="text/plain")

    @app.after_request
    def pid(response: Response) -> Response:
        response.headers.update(served_by())
        return response

    ZeroClick(app, settings=settings())
    return app


def __getattr__(name: str) -> Any:  # the apps are built only in the servers that import them
    if name == "asgi_app":
        return _starlette_app()
    if name == "wsgi_app":
        return _flask_app()
    raise AttributeError(name)


class Server:
    """A server process group on a fixed port, which :meth:`start` can start again after a kill."""

    def __init__(self, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.argv = [sys.executable, "-m", *(part.replace("{port}", str(self.port)) for part in argv)]
        self.env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'benchmarks'}", **env}
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.argv, cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + 60
        while self.proc.poll() is None and time.monotonic() < deadline:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(self.base + "/free", timeout=1).status_code == 200:
                    return
            time.sleep(0.05)
        raise RuntimeError(f"{self.argv[2]} did not start:\n{self.log.read_text(errors='replace')[-3000:]}")

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def billed(response: httpx.Response) -> dict[str, int]:
    header = response.headers.get("x-zeroclick-usage", "")
    pairs = (part.strip().split("=") for part in header.split(",") if part.strip())
    return {meter: int(quantity) for meter, quantity in pairs}


class Tally:
    """What the clients saw, shared by their threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.statuses: Counter[tuple[str, str]] = Counter()  # (server, status)
        self.billed: Counter[tuple[str, str]] = Counter()  # (buyer, meter) -> units on 2xx headers
        self.unanswered: Counter[tuple[str, str]] = Counter()  # (buyer, meter) -> requests killed mid-flight
        self.answered: list[tuple[str, int, float, str, str]] = []  # server, pid, when, buyer, meter
        self.kills: list[tuple[int, float]] = []  # pid, when
        self.seconds = 0.0


def client(servers: dict[str, Server], tally: Tally, stop: threading.Event, seed: int) -> None:
    rng = random.Random(seed)
    with httpx.Client(timeout=30) as http:
        for n in itertools.count():
            if stop.is_set():
                return
            name, route, buyer = rng.choice(list(servers)), rng.choice(MIX), rng.choice(BUYERS)
            meter = ROUTE_METER.get(route)
            params = {"units": str(rng.randint(1, ESTIMATES[meter]))} if meter else {}
            headers = {"zc-agent-id": buyer, "zc-request-id": f"soak-{seed}-{n}"}
            try:
                response = http.get(servers[name].base + route, params=params, headers=headers)
                status, usage = str(response.status_code), billed(response) if response.is_success else {}
                pid = int(response.headers.get("x-soak-pid", 0))
            except httpx.ConnectError:
                status, usage = "refused", {}
                time.sleep(0.05)
            except httpx.TransportError:
                status, usage = "no answer", {}
            with tally.lock:
                tally.statuses[name, status] += 1
                for billed_meter, quantity in usage.items():
                    tally.billed[buyer, billed_meter] += quantity
                if status == "no answer" and meter:
                    tally.unanswered[buyer, meter] += 1
                elif status.startswith("2") and meter:
                    tally.answered.append((name, pid, time.monotonic(), buyer, meter))


def journaling(pids: list[int], directory: Path) -> list[int]:
    """The processes among ``pids`` with journaled writes pending: a journal file of theirs not emptied."""
    found = []
    for path in journal_files(directory):
        with contextlib.suppress(OSError):  # a replayed file is removed at any time
            found += [pid for pid in pids if f"-{pid}-" in path.name and path.stat().st_size]
    return found


def inject(kind: str, db: Path, gunicorn: Server, uvicorn: Server) -> int | None:
    """One fault; the process killed, if any. A kill "in a long lock" waits (the lock held, at most
    two busy timeouts more) for a process with journaled settles, so that the next one replays them."""
    assert gunicorn.proc is not None and uvicorn.proc is not None
    killed = None
    with write_lock(db) if "lock" in kind else contextlib.nullcontext():
        if "lock" in kind:
            time.sleep(BUSY_TIMEOUT * (0.5 if "shorter" in kind else 2.5))
        if "gunicorn" in kind or "uvicorn" in kind:
            # one uvicorn process: the server is the app's only process
            pids = children(gunicorn.proc.pid) if "gunicorn" in kind else [uvicorn.proc.pid]
            if "lock" in kind:
                wait_until(lambda: journaling(pids, db.parent), timeout=BUSY_TIMEOUT * 2)
            if pids:
                killed = random.choice(journaling(pids, db.parent) or pids)
                os.kill(killed, signal.SIGKILL)
    if "uvicorn" in kind:
        uvicorn.signal(signal.SIGKILL)  # reaps it
        uvicorn.start()
    return killed


def faults(tally: Tally, kinds: Counter[str], stop: threading.Event, every: float, *args: Any) -> None:
    for kind in itertools.cycle(FAULTS):
        if stop.wait(every):
            return
        killed = inject(kind, *args)
        if killed is not None:
            with tally.lock:
                tally.kills.append((killed, time.monotonic()))
        kinds[kind] += 1


def query(db: Path, sql: str) -> list[Any]:
    conn = sqlite3.connect(db, timeout=30)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def pending_journal(directory: Path) -> int:
    count = 0
    for path in journal_files(directory):
        written, done = parse(path.read_bytes())
        count += sum(entry["id"] not in done for entry in written)
    return count


def settled(db: Path, directory: Path) -> bool:
    return pending_journal(directory) == 0 and query(db, "SELECT COUNT(*) FROM zc_outbox WHERE state = 0")[0][0] == 0


def run(minutes: float, every: float) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="zc-soak-"))
    db = tmp / "ledger.db"
    with batch_api() as api:
        api.configure()
        env = {
            "ZEROCLICK_LEDGER": f"sqlite:///{db}",
            "ZEROCLICK_API_KEY": KEY,
            "ZEROCLICK_API_BASE_URL": api.base,
            "ZEROCLICK_FLUSH_INTERVAL": "0.2",
            "ZEROCLICK_SQLITE_BUSY_TIMEOUT": str(BUSY_TIMEOUT),
            "ZEROCLICK_RETRY_BACKOFF": "0.1",
            "ZEROCLICK_RETRY_BACKOFF_MAX": "1",
        }
        gunicorn = Server(GUNICORN, env, tmp / "gunicorn.log")
        uvicorn = Server(UVICORN, env, tmp / "uvicorn.log")
        tally, kinds, stop = Tally(), Counter[str](), threading.Event()
        try:
            for server in (gunicorn, uvicorn):
                server.start()
            servers = {"gunicorn/Flask": gunicorn, "uvicorn/Starlette": uvicorn}
            threads = [threading.Thread(target=client, args=(servers, tally, stop, seed)) for seed in range(8)]
            threads.append(threading.Thread(target=faults, args=(tally, kinds, stop, every, db, gunicorn, uvicorn)))
            print(f"soak: {minutes:g} min, a fault every {every:g} s, files in {tmp}", flush=True)
            for thread in threads:
                thread.start()
            started = time.monotonic()
            try:
                time.sleep(minutes * 60)
            finally:
                stop.set()
                for thread in threads:
                    thread.join()
            tally.seconds = time.monotonic() - started
            ok = wait_until(lambda: settled(db, tmp), timeout=120)
            time.sleep(1)  # a batch in flight when the outbox showed empty reaches the API meanwhile
        finally:
            for server in (gunicorn, uvicorn):
                if server.proc is not None and server.proc.poll() is None:
                    server.signal(signal.SIGTERM)
        keys = api.keys()
    return report(tally, kinds, db, tmp, keys, ok)


def cut_by_kills(
    answered: list[tuple[str, int, float, str, str]], kills: list[tuple[int, float]]
) -> Counter[tuple[str, str]]:
    """Per (buyer, meter): paid requests answered by a process killed within ``CUT_WINDOW`` seconds
    after. Their settle is written after the answer went out (waiting up to the busy timeout in a
    lock), so the kill may have cut it off before it reached the journal: their hold stays."""
    cut: Counter[tuple[str, str]] = Counter()
    for _, pid, when, buyer, meter in answered:
        if any(pid == killed and 0 <= at - when <= CUT_WINDOW for killed, at in kills):
            cut[buyer, meter] += 1
    return cut


def account(
    ledger: Counter[tuple[str, str]], accounted: Counter[tuple[str, str]], killed: Counter[tuple[str, str]]
) -> tuple[list[str], Counter[str]]:
    """Invariant (1): per (buyer, meter), ``used`` minus what was billed and delivered is what killed
    requests still hold, between 0 and their estimates. The pairs off, and per meter the units held
    by killed requests (of the pairs not off)."""
    failures, held = [], Counter[str]()
    for buyer, meter in sorted(set(ledger) | set(accounted)):
        excess = ledger[buyer, meter] - accounted[buyer, meter]
        if 0 <= excess <= ESTIMATES[meter] * killed[buyer, meter]:
            held[meter] += excess
        else:
            failures.append(
                f"{buyer} {meter}: used {ledger[buyer, meter]}, billed + delivered {accounted[buyer, meter]}, "
                f"{killed[buyer, meter]} killed"
            )
    return failures, held


def report(tally: Tally, kinds: Counter[str], db: Path, tmp: Path, keys: dict[str, Any], ok: bool) -> int:
    total, seconds = sum(tally.statuses.values()), tally.seconds
    print(f"\nAnswers, by server and status ({total:,} requests, {total / seconds:,.0f}/s)")
    for (name, status), count in sorted(tally.statuses.items()):
        print(f"  {name:<20} {status:<10} {count:>8,}")
    print("\nFaults injected, by kind")
    for kind in FAULTS:
        print(f"  {kind:<40} {kinds[kind]:>4}")
    logs = "".join(path.read_text(errors="replace") for path in tmp.glob("*.log"))
    replayed = sum(int(n) for n in re.findall(r"replaying (\d+) writes a previous run left", logs))
    applied = "SELECT COUNT(*) FROM sqlite_master WHERE name = 'zc_applied'"
    journaled = query(db, "SELECT COUNT(*) FROM zc_applied")[0][0] if query(db, applied)[0][0] else 0
    print(f"\nSettles journaled in a fault and applied later: {journaled:,}, of which replayed by the next")
    print(f"process after a kill: {replayed:,}. Settled (journals applied, outbox sent) within 120 s: {ok};")
    print(f"journal entries left: {pending_journal(tmp)}")

    ledger = Counter({(b, m): int(u) for b, m, u in query(db, "SELECT buyer, meter, used FROM zc_balances")})
    delivered: Counter[tuple[str, str]] = Counter()
    for deliveries in keys.values():
        delivered[deliveries[0]["userId"], deliveries[0]["meter"]] += deliveries[0]["quantity"]
    cut = cut_by_kills(tally.answered, tally.kills)
    failures, held = account(ledger, tally.billed + delivered, tally.unanswered + cut)

    def per_meter(counts: Counter[tuple[str, str]], meter: str) -> int:
        return sum(v for (_, m), v in counts.items() if m == meter)

    print("\n(1) ledger used == billed on 2xx + delivered by batch + held by killed requests (each <= its estimate)")
    print(f"  {'meter':<16} {'used':>10} {'billed':>10} {'delivered':>10} {'held':>8} {'no answer':>9} {'cut':>5}")
    for meter in ESTIMATES:
        used, bill, sent, lost, cuts = (
            per_meter(c, meter) for c in (ledger, tally.billed, delivered, tally.unanswered, cut)
        )
        print(f"  {meter:<16} {used:>10,} {bill:>10,} {sent:>10,} {held[meter]:>8,} {lost:>9,} {cuts:>5,}")
    print(f"  {'PASS' if not failures else 'FAIL'}: {len(failures)} of {len(ledger)} buyer/meter pairs off")
    for line in failures[:20]:
        print(f"    {line}")
    twice = {key: len(d) for key, d in keys.items() if len(d) > 1}
    print(f"\n(2) no event delivered twice: {'PASS' if not twice else 'FAIL'}; {len(keys):,} keys, {len(twice)} twice")
    for key, count in list(twice.items())[:20]:
        print(f"    {key}: {count} deliveries")
    print("\n(3) holds past their lease: SQLite holds are not leases yet, so a killed request keeps its hold.")
    print(f"  Paid requests with no answer: {sum(tally.unanswered.values())}; answered by a process killed")
    print(f"  within {CUT_WINDOW:g} s after (their settle may have died with it): {sum(cut.values())}")
    print("  Units held by killed requests: " + ", ".join(f"{m} {held[m]:,}" for m in ESTIMATES))
    return 1 if failures or twice or not ok else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--minutes", type=float, default=10.0, help="how long the load runs (default 10)")
    parser.add_argument("--fault-every", type=float, default=10.0, help="seconds between faults (default 10)")
    parser.add_argument("--smoke", action="store_true", help="20 s, a fault every 3 s")
    args = parser.parse_args()
    minutes, every = (1 / 3, 3.0) if args.smoke else (args.minutes, args.fault_every)
    sys.exit(run(minutes, every))


if __name__ == "__main__":
    main()
