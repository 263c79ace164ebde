"""Flask calls a guarded async view through its own sync bridge: the request's counter still reaches it."""

from __future__ import annotations

import pytest

pytest.importorskip("flask")
pytest.importorskip("asgiref")  # Flask's async views (flask[async])

from flask import Flask

from zc_middleware import metered, record_usage
from zc_middleware.flask import ZeroClick

PLANS = {"p": {"default": True, "includes": {"compute-seconds": {"limit": 99}}}}


def make_app(*, with_middleware: bool) -> Flask:
    app = Flask("guarded")

    @app.get("/render")
    @metered("compute-seconds", estimate=10)
    async def render() -> str:
        record_usage("compute-seconds", 3)
        return "rendered"

    if with_middleware:
        app.config["ZEROCLICK"] = {"meters": {"compute-seconds": {}}, "plans": PLANS, "ledger": "memory://"}
        ZeroClick(app)
    return app


def test_an_async_view_runs_checked_and_records() -> None:
    response = make_app(with_middleware=True).test_client().get("/render", headers={"zc-agent-id": "a"})
    assert response.status_code == 200
    assert response.headers["X-ZeroClick-Usage"] == "compute-seconds=3"


def test_an_async_view_without_the_extension_refuses_to_run() -> None:
    app = make_app(with_middleware=False)
    response = app.test_client().get("/render", headers={"zc-agent-id": "a"})
    assert response.status_code == 500
