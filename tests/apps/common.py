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
``POST /echo``     ``@metered("api-requests")``; 200 JSON: the SHA-256 and length of the body it read (:func:`echo`)
``GET /runs``      free; how many times each paid handler ran, per buyer (JSON)
``GET /overuse``   ``@metered("cpu-seconds", estimate=5)``; records 40 via :func:`overuse_work`, past its estimate
``GET /relay``     free; 200 with the contract's headers set by the app (:data:`CONTRACT_HEADERS`)
``GET /reasoned``  ``@metered("api-requests")``; 200 with the contract's headers set by the app
``GET /refused``   ``@metered("api-requests")``; the app's own 402 with the contract's headers
=================  ==========================================================

With ``ZC_TEST_BARE=1`` in the environment (:data:`BARE`) each app is served without the
middleware: its metered handlers must refuse to run.

The ledger URL comes from ``ZEROCLICK_LEDGER`` (settings read the environment).
"""

from __future__ import annotations

import collections
import hashlib
import os
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
#: :data:`PLANS` and the meter of ``/overuse``, which only the scenario apps declare
SCENARIO_PLANS = {
    "starter": {
        "default": True,
        "includes": {**PLANS["starter"]["includes"], "cpu-seconds": {"limit": 50, "reset": "month"}},
    }
}

#: serve the app without the middleware (the server's environment says ``ZC_TEST_BARE=1``)
BARE = os.environ.get("ZC_TEST_BARE") == "1"

RUNS: collections.Counter[str] = collections.Counter()
_lock = threading.Lock()


#: with ``ZC_TEST_BATCH_API=<url>`` (and ``ZC_TEST_API_KEY``) the apps report ``compute-seconds`` on the
#: batch channel, to that stand-in for ZeroClick's batch API
BATCH_API = os.environ.get("ZC_TEST_BATCH_API")


def meters() -> dict[str, dict[str, str]]:
    return {"api-requests": {}, "compute-seconds": {"channel": "batch"} if BATCH_API else {}, "cpu-seconds": {}}


def batch_settings() -> dict[str, object]:
    """The settings that turn the batch channel on (none without :data:`BATCH_API`)."""
    if not BATCH_API:
        return {}
    return {"api_key": os.environ["ZC_TEST_API_KEY"], "api_base_url": BATCH_API, "flush_interval": 0.05}


def settings() -> ZeroClickSettings:
    return ZeroClickSettings(
        service_slug="acme-search",
        meters=meters(),
        plans=SCENARIO_PLANS,
        routes={"configured": {"api-requests": 2}, "ab": {"api-requests": 1}},
        **batch_settings(),  # type: ignore[arg-type]
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


def echo(buyer: str | None, body: bytes) -> dict[str, object]:
    """What ``/echo`` answers: the body as the handler read it, hashed."""
    ran(buyer, "echo")
    return {"sha256": hashlib.sha256(body).hexdigest(), "length": len(body)}


def do_work() -> None:
    """Code a handler calls: usage is recorded from here, not from the handler."""
    record_usage("compute-seconds", 4)


def overuse_work() -> None:
    """A handler recording more than its estimate (5) said: it is billed at most the estimate."""
    record_usage("cpu-seconds", 40)


#: what ``/search`` and ``/missing`` set themselves: a usage header, as a seller reporting by hand would (it
#: never goes out), and public caching, in CDNs too (a paid response goes out private, without the CDNs')
OWN_HEADERS = {
    "X-ZeroClick-Usage": "api-requests=7",
    "Cache-Control": "public, max-age=60",
    "CDN-Cache-Control": "max-age=600",
}

#: what ``/relay``, ``/reasoned`` and ``/refused`` set themselves: the contract's headers, as an app relaying
#: an upstream response would; none of them ever goes out (the proxy bills from them)
CONTRACT_HEADERS = {"X-ZeroClick-Usage": "api-requests=500", "X-ZeroClick-Reason": "usage_exhausted"}

CHUNKS = [b"chunk-0\n", b"chunk-1\n", b"chunk-2\n"]


# -- many hosts: a route whose cost varies per request ---------------------------------------------
#: ``GET /vary?units=k``: ``@metered("compute-seconds", estimate=VARY_ESTIMATE)``; records ``k``, kept
#: within 1..estimate, so the ledger's total is the sum of the usage headers of the successes
VARY_ESTIMATE = 10


def vary_work(units: str | None) -> None:
    record_usage("compute-seconds", max(1, min(VARY_ESTIMATE, int(units or 1))))
