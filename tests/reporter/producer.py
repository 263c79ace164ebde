"""A separate process that reports usage: ``python -m tests.reporter.producer OUTBOX BASE N [flush-only]``.

Prints each index once ``report_usage`` returned (the event is durable), then
delivers what is left and prints ``done``. Payloads are a pure function of the
index, so a restarted producer re-reports exactly the same events.
"""

from __future__ import annotations

import sys
from datetime import datetime, timedelta, timezone

from tests.reporter.helpers import KEY
from zc_middleware import ZeroClickSettings, report_usage
from zc_middleware.reporter import get_reporter

T0 = datetime(2026, 6, 12, 9, 30, tzinfo=timezone.utc)


def event(i: int) -> dict[str, object]:
    return {
        "user_id": f"buyer-{i % 5}",
        "meter": "compute-seconds",
        "quantity": i % 7 + 1,
        "idempotency_key": f"job-{i}",
        "timestamp": T0 + timedelta(seconds=i),
    }


def main() -> None:
    outbox, base, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    settings = ZeroClickSettings(
        meters={"compute-seconds": {"channel": "batch"}},
        ledger="memory://",
        outbox=outbox,
        api_key=KEY,
        api_base_url=base,
        flush_interval=0.02,
        request_timeout=0.3,
        retry_backoff=0.02,
        retry_backoff_max=0.2,
        batch_size=200,
    )
    reporter = get_reporter(settings)
    reporter.start()
    if "flush-only" not in sys.argv:
        for i in range(n):
            report_usage(settings=settings, **event(i))  # type: ignore[arg-type]
            print(i, flush=True)
    ok = reporter.close(timeout=15)
    print("done" if ok else "pending", flush=True)


if __name__ == "__main__":
    main()
