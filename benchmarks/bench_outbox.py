"""Usage outbox benchmark: ``.venv/bin/python benchmarks/bench_outbox.py`` (``--smoke``: a few events).

1. Events/s delivered end to end (SQLite outbox -> lease -> POST 1,000-event
   batches -> mark sent) to the local batch API (``tests/reporter/batch_server``
   under uvicorn, in a subprocess).
2. Request-path cost of a paid request through the gate (check + settle) with a
   header meter, and with a batch meter whose event is written in the settle's
   own transaction (ledger and outbox share one SQLite file).
3. ``report_usage`` (one durable commit per call).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.reporter.helpers import KEY, batch_api  # noqa: E402
from zc_middleware import Usage, ZeroClickSettings  # noqa: E402
from zc_middleware.gate import Gate  # noqa: E402
from zc_middleware.meters import metered  # noqa: E402
from zc_middleware.outbox import make_event, open_outbox  # noqa: E402
from zc_middleware.reporter import Reporter  # noqa: E402

T0 = datetime(2026, 6, 12, 9, 30, tzinfo=timezone.utc)
rows: list[tuple[str, str, str]] = []


def end_to_end(base: str, tmp: str, n_events: int) -> None:
    outbox = open_outbox(f"sqlite:///{tmp}/e2e.db")
    events = [
        make_event(
            user_id=f"user-{i % 50}",
            meter="compute-seconds",
            quantity=i % 9 + 1,
            idempotency_key=f"e-{i}",
            timestamp=T0,
        )
        for i in range(n_events)
    ]
    started = time.perf_counter()
    for i in range(0, n_events, 1000):
        outbox.add(events[i : i + 1000])
    enqueue = time.perf_counter() - started
    rows.append(("enqueue 1,000 per commit", f"{n_events / enqueue:,.0f} events/s", f"{n_events:,} events"))
    reporter = Reporter(outbox, api_key=KEY, base_url=base, timeout=30)
    started = time.perf_counter()
    done = reporter.flush(120)
    elapsed = time.perf_counter() - started
    assert done and reporter.counters["sent"] == n_events, reporter.counters
    rows.append(
        (
            "delivered end to end (1,000/batch)",
            f"{n_events / elapsed:,.0f} events/s",
            f"{math.ceil(n_events / 1000)} batches, {elapsed:.2f}s",
        )
    )
    reporter.close(timeout=0)
    outbox.close()


def request_path(base: str, tmp: str, meter: str, channel: str, requests: int, *, sender: bool = True) -> float:
    url = f"sqlite:///{tmp}/req-{channel}-{sender}.db"
    settings = ZeroClickSettings(
        meters={meter: {"channel": channel}},
        plans={"p": {"default": True, "includes": {meter: {"limit": None}}}},
        ledger=url,
        api_key=KEY,
        api_base_url=base,
        flush_interval=3600,
    )
    reporter = Reporter(open_outbox(url), api_key=KEY, base_url=base, flush_interval=3600, batch_size=1000)
    if not sender:  # isolate the request path: no sender thread competing for the GIL and the file
        reporter.start = reporter.notify = lambda *a: None  # type: ignore[method-assign]
    gate = Gate(settings, reporter=reporter)
    charge = gate.charge_for(metered(meter, estimate=30)(lambda: None))
    assert charge is not None
    headers = {"zc-agent-id": "buyer-1", "zc-request-id": ""}
    for i in range(200):  # warm up (nothing recorded: a zero batch quantity queues no event)
        headers["zc-request-id"] = f"warm-{i}"
        usage = Usage()
        gate.check(headers.get, charge, usage)
        gate.finish(usage, success=True)
    started = time.perf_counter()
    for i in range(requests):
        headers["zc-request-id"] = f"r-{i}"
        usage = Usage()
        gate.check(headers.get, charge, usage)
        usage.add(meter, 4)
        gate.finish(usage, success=True)
    per = (time.perf_counter() - started) / requests * 1e6
    if channel == "batch":
        status = reporter.outbox.status(dead_limit=0)  # the sender ran alongside, as in production
        assert status.pending + status.sent == requests, (status, reporter.counters)
    reporter._stopping = True
    reporter.close(timeout=0)
    gate.close()
    reporter.outbox.close()
    return per


def report_usage_cost(base: str, tmp: str, requests: int) -> float:
    reporter = Reporter(open_outbox(f"sqlite:///{tmp}/report.db"), api_key=KEY, base_url=base, flush_interval=3600)
    started = time.perf_counter()
    for i in range(requests):
        reporter.report(user_id="u", meter="compute-seconds", quantity=1, idempotency_key=f"k-{i}", timestamp=T0)
    per = (time.perf_counter() - started) / requests * 1e6
    reporter.close(timeout=0)
    reporter.outbox.close()
    return per


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=100_000, help="events delivered end to end")
    parser.add_argument("--requests", type=int, default=5_000, help="requests (and report_usage calls) timed")
    parser.add_argument("--smoke", action="store_true", help="a few events and requests, to check that it runs")
    args = parser.parse_args()
    if args.smoke:
        args.events, args.requests = 2_000, 100
    os.environ.setdefault("ZC_TEST_QUIET", "1")
    with tempfile.TemporaryDirectory() as tmp, batch_api() as api:
        end_to_end(api.base, tmp, args.events)
        header = request_path(api.base, tmp, "api-requests", "header", args.requests)
        batch = request_path(api.base, tmp, "compute-seconds", "batch", args.requests)
        rows.append(("request path, header meter (check+settle)", f"{header:.1f} us/request", "SQLite ledger"))
        rows.append(
            (
                "request path, batch meter (check+settle+event)",
                f"{batch:.1f} us/request",
                f"+{batch - header:.1f} us, sender running alongside",
            )
        )
        idle = request_path(api.base, tmp, "compute-seconds", "batch", args.requests, sender=False)
        rows.append(("request path, batch meter, sender idle", f"{idle:.1f} us/request", f"+{idle - header:.1f} us"))
        rows.append(
            (
                "report_usage (durable before return)",
                f"{report_usage_cost(api.base, tmp, args.requests):.1f} us/call",
                "one commit per event",
            )
        )
    width = [max(len(r[i]) for r in rows) for i in range(3)]
    print(f"zc_middleware outbox benchmark ({os.cpu_count()} CPUs)")
    for name, value, note in rows:
        print(f"  {name.ljust(width[0])}  {value.rjust(width[1])}  {note}")


if __name__ == "__main__":
    main()
