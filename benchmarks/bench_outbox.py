"""Usage outbox benchmark: ``.venv/bin/python benchmarks/bench_outbox.py``.

1. Events/s delivered end to end (SQLite outbox -> lease -> POST 1,000-event
   batches -> mark sent) to the local batch API (``tests/reporter/batch_server``
   under uvicorn, in a subprocess).
2. Request-path cost of a paid request through the gate (check + settle) with a
   header meter, and with a batch meter whose event is written in the settle's
   own transaction (ledger and outbox share one SQLite file).
3. ``report_usage`` (one durable commit per call).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.reporter.helpers import KEY, batch_api  # noqa: E402
from zc_middleware import ZeroClickSettings  # noqa: E402
from zc_middleware.gate import Gate  # noqa: E402
from zc_middleware.meters import metered  # noqa: E402
from zc_middleware.outbox import make_event, open_outbox  # noqa: E402
from zc_middleware.reporter import Reporter  # noqa: E402

T0 = datetime(2026, 6, 12, 9, 30, tzinfo=timezone.utc)
EVENTS = 100_000
REQUESTS = 5_000
rows: list[tuple[str, str, str]] = []


def end_to_end(base: str, tmp: str) -> None:
    outbox = open_outbox(f"sqlite:///{tmp}/e2e.db")
    events = [
        make_event(
            user_id=f"user-{i % 50}",
            meter="compute-seconds",
            quantity=i % 9 + 1,
            idempotency_key=f"e-{i}",
            timestamp=T0,
        )
        for i in range(EVENTS)
    ]
    started = time.perf_counter()
    for i in range(0, EVENTS, 1000):
        outbox.add(events[i : i + 1000])
    enqueue = time.perf_counter() - started
    rows.append(("enqueue 1,000 per commit", f"{EVENTS / enqueue:,.0f} events/s", f"{EVENTS:,} events"))
    reporter = Reporter(outbox, api_key=KEY, base_url=base, timeout=30)
    started = time.perf_counter()
    done = reporter.flush(120)
    elapsed = time.perf_counter() - started
    assert done and reporter.counters["sent"] == EVENTS, reporter.counters
    rows.append(
        (
            "delivered end to end (1,000/batch)",
            f"{EVENTS / elapsed:,.0f} events/s",
            f"{EVENTS // 1000} batches, {elapsed:.2f}s",
        )
    )
    reporter.close(timeout=0)
    outbox.close()


def request_path(base: str, tmp: str, meter: str, channel: str, *, sender: bool = True) -> float:
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
        usage = gate.new_usage()
        gate.check(headers.get, charge, usage)
        gate.finish(usage, success=True)
    started = time.perf_counter()
    for i in range(REQUESTS):
        headers["zc-request-id"] = f"r-{i}"
        usage = gate.new_usage()
        gate.check(headers.get, charge, usage)
        usage.add(meter, 4)
        gate.finish(usage, success=True)
    per = (time.perf_counter() - started) / REQUESTS * 1e6
    if channel == "batch":
        status = reporter.outbox.status(dead_limit=0)  # the sender ran alongside, as in production
        assert status.pending + status.sent == REQUESTS, (status, reporter.counters)
    reporter._stopping = True
    reporter.close(timeout=0)
    gate.close()
    reporter.outbox.close()
    return per


def report_usage_cost(base: str, tmp: str) -> float:
    reporter = Reporter(open_outbox(f"sqlite:///{tmp}/report.db"), api_key=KEY, base_url=base, flush_interval=3600)
    started = time.perf_counter()
    for i in range(REQUESTS):
        reporter.report(user_id="u", meter="compute-seconds", quantity=1, idempotency_key=f"k-{i}", timestamp=T0)
    per = (time.perf_counter() - started) / REQUESTS * 1e6
    reporter.close(timeout=0)
    reporter.outbox.close()
    return per


def main() -> None:
    os.environ.setdefault("ZC_TEST_QUIET", "1")
    with tempfile.TemporaryDirectory() as tmp, batch_api() as api:
        end_to_end(api.base, tmp)
        header = request_path(api.base, tmp, "api-requests", "header")
        batch = request_path(api.base, tmp, "compute-seconds", "batch")
        rows.append(("request path, header meter (check+settle)", f"{header:.1f} us/request", "SQLite ledger"))
        rows.append(
            (
                "request path, batch meter (check+settle+event)",
                f"{batch:.1f} us/request",
                f"+{batch - header:.1f} us, sender running alongside",
            )
        )
        idle = request_path(api.base, tmp, "compute-seconds", "batch", sender=False)
        rows.append(("request path, batch meter, sender idle", f"{idle:.1f} us/request", f"+{idle - header:.1f} us"))
        rows.append(
            (
                "report_usage (durable before return)",
                f"{report_usage_cost(api.base, tmp):.1f} us/call",
                "one commit per event",
            )
        )
    width = [max(len(r[i]) for r in rows) for i in range(3)]
    print(f"zc_middleware outbox benchmark ({os.cpu_count()} CPUs)")
    for name, value, note in rows:
        print(f"  {name.ljust(width[0])}  {value.rjust(width[1])}  {note}")


if __name__ == "__main__":
    main()
