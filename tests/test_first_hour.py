"""What a new user meets first: a ledger that cannot be opened, no default plan, a mistyped meter."""

from __future__ import annotations

import importlib.util
import logging
import os
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.servers import ADAPTERS, ROOT, serve, uvicorn
from zc_middleware import ConfigError, Gate, ZeroClickSettings, metered


def _missing(modules: tuple[str, ...]) -> list[str]:
    return [m for m in modules if importlib.util.find_spec(m) is None]


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(ADAPTERS))
def test_a_ledger_that_cannot_be_opened_stops_start_up(name: str, tmp_path: Path) -> None:
    """Every adapter, under its real server (uvicorn with lifespan on ``auto``, gunicorn): the server
    exits instead of serving, and says which setting and which path."""
    modules, argv = ADAPTERS[name]
    if missing := _missing(modules):
        pytest.skip(f"{name}: {', '.join(missing)} not installed")
    path = tmp_path / "nodir" / "x.db"
    argv = [part.replace("{port}", "0") for part in argv]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "ZEROCLICK_LEDGER": f"sqlite:///{path}"}
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "ledger" in done.stderr and str(path) in done.stderr, done.stderr[-2000:]
    assert not path.parent.exists()  # nothing was created on the way


def test_without_lifespan_a_broken_ledger_refuses_paid_routes_and_serves_free_ones(tmp_path: Path) -> None:
    if missing := _missing(("starlette", "uvicorn")):
        pytest.skip(f"{', '.join(missing)} not installed")
    argv = [*uvicorn("tests.apps.starlette_app:app"), "--lifespan", "off"]
    with serve(argv, env={"ZEROCLICK_LEDGER": f"sqlite:///{tmp_path}/nodir/x.db"}) as base:
        assert httpx.get(base + "/free").text == "free"
        paid = httpx.get(base + "/search", headers={"zc-agent-id": "b"})
        assert paid.status_code == 503
        assert paid.json()["error"] == "ledger_unavailable"
        assert not [run for run in httpx.get(base + "/runs").json() if "search" in run]  # the handler never ran


def test_no_default_plan_warns_at_start_up(caplog: pytest.LogCaptureFixture) -> None:
    settings = ZeroClickSettings(
        meters={"api-requests": {}}, plans={"pro": {"includes": {"api-requests": {"limit": 5}}}}, ledger="memory://"
    )
    with caplog.at_level(logging.WARNING, logger="zc_middleware"):
        Gate(settings).validate_views([])  # what every adapter runs at start-up
    assert "402 plan_expired" in caplog.text and "default" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="zc_middleware"):
        plans = {"pro": settings.plans["pro"].model_copy(update={"default": True})}
        Gate(settings.model_copy(update={"plans": plans})).validate_views([])
    assert "plan_expired" not in caplog.text


def test_a_mistyped_meter_on_a_view_says_which_was_meant() -> None:
    gate = Gate(ZeroClickSettings(meters={"api-requests": {}, "compute-seconds": {}}, ledger="memory://"))

    @metered("api-request")
    def view() -> None: ...

    with pytest.raises(ConfigError, match=r"did you mean 'api-requests'\?"):
        gate.charge_for(view)


def test_settings_from_the_environment_that_do_not_validate_stop_start_up_too(tmp_path: Path) -> None:
    """Under uvicorn's default ``--lifespan auto`` an exception while Starlette builds its middleware
    reads as "no lifespan support" and the server serves on; the middleware fails start-up instead."""
    if missing := _missing(("starlette", "uvicorn")):
        pytest.skip(f"{', '.join(missing)} not installed")
    (tmp_path / "envapp.py").write_text(
        "from starlette.applications import Starlette\n"
        "from zc_middleware.starlette import ZeroClickMiddleware\n"
        "app = Starlette()\n"
        "app.add_middleware(ZeroClickMiddleware)  # settings from ZEROCLICK_* variables\n"
    )
    argv = [part.replace("{port}", "0") for part in uvicorn("envapp:app")] + ["--app-dir", str(tmp_path)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "ZEROCLICK_METERS": "{not json"}
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "ZEROCLICK_METERS" in done.stderr, done.stderr[-2000:]
