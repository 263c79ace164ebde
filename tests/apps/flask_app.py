"""The scenario app on Flask (run with ``gunicorn tests.apps.flask_app:app``)."""

from __future__ import annotations

from collections.abc import Iterator

from flask import Flask, Response, request, stream_with_context

from tests.apps.common import (
    BARE,
    CHUNKS,
    CONTRACT_HEADERS,
    OWN_HEADERS,
    RUNS,
    do_work,
    echo,
    free_work,
    overuse_work,
    ran,
    settings,
)
from zc_middleware import metered
from zc_middleware.flask import ZeroClick

app = Flask(__name__)


def buyer() -> str | None:
    return request.headers.get("zc-agent-id")


@app.get("/free")
def free() -> str:
    free_work(buyer())
    return "free"


@app.get("/search")
@metered("api-requests")
def search() -> tuple[dict[str, bool], dict[str, str]]:
    ran(buyer(), "search")
    return {"ok": True}, OWN_HEADERS


@app.post("/render")
@metered("compute-seconds", estimate=30)
def render() -> dict[str, bool]:
    ran(buyer(), "render")
    do_work()
    return {"rendered": True}


@app.get("/fail")
@metered("api-requests")
def fail() -> str:
    ran(buyer(), "fail")
    raise RuntimeError("boom")


@app.get("/missing")
@metered("api-requests")
def missing() -> tuple[dict[str, str], int, dict[str, str]]:
    ran(buyer(), "missing")
    return {"error": "not here"}, 404, OWN_HEADERS


@app.get("/stream")
@metered("api-requests")
def stream() -> Response:
    ran(buyer(), "stream")

    def body() -> Iterator[bytes]:
        yield from CHUNKS

    return Response(stream_with_context(body()), mimetype="text/plain")


@app.get("/configured")
def configured() -> str:
    ran(buyer(), "configured")
    return "configured"


@app.get("/a/b", endpoint="ab")
def ab() -> str:
    ran(buyer(), "ab")
    return "ab"


@app.get("/overuse")
@metered("cpu-seconds", estimate=5)
def overuse() -> str:
    overuse_work()
    return "overused"


@app.get("/relay")
def relay() -> tuple[str, dict[str, str]]:
    return "relay", CONTRACT_HEADERS


@app.get("/reasoned")
@metered("api-requests")
def reasoned() -> tuple[str, dict[str, str]]:
    return "reasoned", CONTRACT_HEADERS


@app.get("/refused")
@metered("api-requests")
def refused() -> tuple[str, int, dict[str, str]]:
    return "refused", 402, CONTRACT_HEADERS


@app.post("/echo")
@metered("api-requests")
def echo_body() -> dict[str, object]:
    return echo(buyer(), request.get_data())


@app.get("/runs")
def runs() -> dict[str, int]:
    return dict(RUNS)


# -- many hosts: a route whose cost varies per request (see tests.apps.common.vary_work) -------------
from tests.apps.common import VARY_ESTIMATE, vary_work  # noqa: E402


@app.get("/vary")
@metered("compute-seconds", estimate=VARY_ESTIMATE)
def vary() -> str:
    vary_work(request.args.get("units"))
    return "varied"


if not BARE:
    ZeroClick(app, settings=settings())
