"""What every scenario app shares: settings, and the work the handlers do.

Each adapter's app serves the same routes with the same behaviour:

=================  ==========================================================
``GET /free``      free; 200 ``free``; calls ``record_usage`` (:func:`free_work`)
``GET /search``    ``@metered("api-requests")``; 200 JSON, with its own usage and cache headers (:data:`OWN_HEADERS`)
``POST /render``   ``@metered("compute-seconds", estimate=30)``; records 4 via :func:`do_work`
``GET /fail``      ``@metered("api-requests")``; raises ``RuntimeError``
``GET /missing``   ``@metered("api-requests")``; answers 404 with its own usage and cache headers (:data:`OWN_HEADERS`)
``GET /stream``    ``@metered("api-requests")``; streams ``chunk-0`` .. ``chunk-2``
``GET /configured``  not decorated; route name ``configured`` is paid in settings
``GET /a/b``       not decorated; route name ``ab`` is paid in settings
``GET /runs``      free; how many times each paid handler ran, per buyer (JSON)
=================  ==========================================================

The ledger URL comes from ``ZEROCLICK_LEDGER`` (settings read the environment).
"""

from __future__ import annotations

import collections
import threading

from zc_middleware import ZcError, ZeroClickSettings, record_usage

PLANS = {
    "starter": {
        "default": True,
        "includes": {
            "api-requests": {"limit": 5, "reset": "month"},
            "compute-seconds": {"limit": 100, "reset": "day"},
        },
    }
}

RUNS: collections.Counter[str] = collections.Counter()
_lock = threading.Lock()


def settings() -> ZeroClickSettings:
    return ZeroClickSettings(
        service_slug="acme-search",
        meters={"api-requests": {}, "compute-seconds": {}},
        plans=PLANS,
        routes={"configured": {"api-requests": 2}, "ab": {"api-requests": 1}},
    )


def ran(buyer: str | None, what: str) -> None:
    with _lock:
        RUNS[f"{buyer}:{what}"] += 1


def free_work(buyer: str | None) -> None:
    """Code a free handler calls: ``record_usage`` has no paid request to count for. The error code
    it raises is noted in :data:`RUNS` as ``free:<code>``."""
    try:
        record_usage("api-requests", 1)
    except ZcError as exc:
        ran(buyer, f"free:{exc.code}")


def do_work() -> None:
    """Code a handler calls: usage is recorded from here, not from the handler."""
    record_usage("compute-seconds", 4)


#: what ``/search`` and ``/missing`` set themselves: a usage header, as a seller reporting by hand would (it
#: never goes out), and public caching, in CDNs too (a paid response goes out private, without the CDNs')
OWN_HEADERS = {
    "X-ZeroClick-Usage": "api-requests=7",
    "Cache-Control": "public, max-age=60",
    "CDN-Cache-Control": "max-age=600",
}

CHUNKS = [b"chunk-0\n", b"chunk-1\n", b"chunk-2\n"]


# -- many hosts: a route whose cost varies per request ---------------------------------------------
#: ``GET /vary?units=k``: ``@metered("compute-seconds", estimate=VARY_ESTIMATE)``; records ``k``, kept
#: within 1..estimate, so the ledger's total is the sum of the usage headers of the successes
VARY_ESTIMATE = 10


def vary_work(units: str | None) -> None:
    record_usage("compute-seconds", max(1, min(VARY_ESTIMATE, int(units or 1))))
