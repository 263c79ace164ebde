"""A paid search API on Flask: ``gunicorn examples.flask_app:app`` (or ``flask --app examples.flask_app run``).

The ledger is the embedded SQLite file ``zeroclick.db`` unless ``ZEROCLICK_LEDGER`` says otherwise.
Operators get ``flask --app examples.flask_app zeroclick routes | balance BUYER | assign BUYER PLAN``.
"""

from __future__ import annotations

import time

from flask import Flask, request

from zc_middleware import metered, record_usage
from zc_middleware.flask import ZeroClick

app = Flask(__name__)
app.config["ZEROCLICK"] = {  # the same keys as ZeroClickSettings
    "service_slug": "acme-search",
    "meters": {"api-requests": {}, "compute-seconds": {}},
    "plans": {
        "starter": {
            "default": True,
            "includes": {
                "api-requests": {"limit": 3, "reset": "month"},
                "compute-seconds": {"limit": 3600, "reset": "day"},
            },
        }
    },
}


@app.get("/search")
@metered("api-requests")  # 1 unit, billed only on success
def search() -> dict[str, list[str]]:
    return {"results": [f"result for {request.args.get('q', '')!r}"]}


@app.post("/render")
@metered("compute-seconds", estimate=30)  # 30 must be covered; what is recorded is billed
def render() -> tuple[dict[str, object], int]:
    raw = request.args.get("pages", "1")
    if not (raw.isascii() and raw.isdigit() and 1 <= int(raw) <= 10):
        return {"error": "pages must be 1 to 10"}, 400  # >= 400: the hold is released
    pages = int(raw)
    started = time.monotonic()
    time.sleep(0.01)  # the expensive part
    record_usage("compute-seconds", max(1, round(time.monotonic() - started)) * 2 * pages)
    return {"rendered": pages}, 200


@app.get("/health")
def health() -> dict[str, bool]:
    return {"ok": True}


zc = ZeroClick(app)
