"""``zc-middleware routes --app module:attr`` on small Starlette, FastAPI and Flask apps in a project directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli.conftest import Run, write

pytest.importorskip("starlette")
pytest.importorskip("flask")

# Its ledger is a file no command may create: pricing routes never opens the app's store.
STARLETTE_APP = """
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from zc_middleware import ZeroClickSettings, metered
from zc_middleware.starlette import ZeroClickMiddleware

settings = ZeroClickSettings(
    meters={"api-requests": {}, "compute-seconds": {}},
    routes={"configured": {"api-requests": 2}},
    ledger="sqlite:///never.db",
)

@metered("api-requests")
async def search(request):
    return PlainTextResponse("ok")

@metered("compute-seconds", estimate=30)
def render(request):
    return PlainTextResponse("ok")

async def plain(request):
    return PlainTextResponse("free")

routes = [
    Route("/search", search),
    Route("/render", render, methods=["POST"]),
    Route("/configured", plain, name="configured"),
    Route("/free", plain),
]
app = Starlette(routes=routes)
app.add_middleware(ZeroClickMiddleware, settings=settings)
bare = Starlette(routes=routes)
"""

FASTAPI_APP = """
from fastapi import FastAPI
from zc_middleware import metered
from zc_middleware.starlette import ZeroClickMiddleware
from starlette_app import settings

app = FastAPI()

@app.get("/items/{item_id}")
@metered("api-requests")
async def item(item_id: int):
    return {"id": item_id}

@app.get("/health")
async def health():
    return {}

@app.get("/configured", name="configured")
async def configured():
    return {}

app.add_middleware(ZeroClickMiddleware, settings=settings)
"""

FLASK_APP = """
from flask import Flask
from zc_middleware import metered
from zc_middleware.flask import ZeroClick

app = Flask(__name__)
app.config["ZEROCLICK"] = {"meters": {"api-requests": {}}, "ledger": "memory://"}

@app.route("/search", methods=["GET", "POST"])
@metered("api-requests", 3)
def search():
    return "ok"

@app.get("/free")
def free():
    return "free"

ZeroClick(app)
unset = Flask("unset")
unset.add_url_rule("/search", "search", search)
"""


@pytest.fixture
def apps(project: Path) -> Path:
    write(project, "starlette_app.py", STARLETTE_APP)
    write(project, "fastapi_app.py", FASTAPI_APP)
    write(project, "flask_app.py", FLASK_APP)
    return project


def test_starlette_routes_with_the_settings_the_app_was_set_up_with(run: Run, apps: Path) -> None:
    result = run("routes", "--app", "starlette_app:app")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "route        methods  name        meters",
        "-----------  -------  ----------  -----------------------------",
        "/configured  GET      configured  api-requests=2",
        "/render      POST     render      compute-seconds (estimate 30)",
        "/search      GET      search      api-requests=1",
    ]
    assert not (apps / "never.db").exists()


def test_fastapi_routes_through_python_m(run: Run, apps: Path) -> None:
    result = run("routes", "--app", "fastapi_app:app", module=True)
    assert result.returncode == 0, result.stderr
    rows = [line.split() for line in result.stdout.splitlines()[2:]]
    assert [(row[0], row[1], row[-1]) for row in rows if row[0] == "/items/{item_id}"] == [
        ("/items/{item_id}", "GET", "api-requests=1")
    ]


def test_fastapi_route_names(run: Run, apps: Path) -> None:
    result = run("routes", "--app", "fastapi_app:app")
    assert result.stdout.splitlines()[2:] == [
        "/configured       GET      configured  api-requests=2",
        "/items/{item_id}  GET      item        api-requests=1",
    ]


def test_flask_routes(run: Run, apps: Path) -> None:
    result = run("routes", "--app", "flask_app:app")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "route    methods   endpoint  meters",
        "-------  --------  --------  --------------",
        "/search  GET,POST  search    api-requests=3",
    ]


def test_settings_given_win_and_name_the_meters(run: Run, apps: Path) -> None:
    # conf:settings declares no route "configured": only the decorated views are paid
    result = run("--settings", "conf:settings", "routes", "--app", "starlette_app:bare")
    assert result.returncode == 0, result.stderr
    assert [line.split()[0] for line in result.stdout.splitlines()[2:]] == ["/render", "/search"]
    flask = run("routes", "--app", "flask_app:unset", "--settings", "conf:as_dict")
    assert flask.returncode == 0, flask.stderr
    assert flask.stdout.splitlines()[2:] == ["/search  GET      search    api-requests=3"]


def test_no_metered_routes(run: Run, apps: Path) -> None:
    write(apps, "free_app.py", "from starlette.applications import Starlette\napp = Starlette()\n")
    result = run("--settings", "conf:settings", "routes", "--app", "free_app:app")
    assert (result.returncode, result.stdout) == (0, "No metered routes.\n")


@pytest.mark.parametrize(
    "app, message",
    [
        ("starlette_app:bare", "no ZeroClickMiddleware in app.user_middleware; add it, or give --settings MODULE:ATTR"),
        ("flask_app:unset", "ZeroClick is not set up on this app; call ZeroClick(app), or give --settings"),
    ],
)
def test_an_app_not_set_up_needs_settings(run: Run, apps: Path, app: str, message: str) -> None:
    result = run("routes", "--app", app)
    # the module's other app warns as it starts (no default plan); the command's own error is last
    assert (result.returncode, result.stderr.splitlines()[-1]) == (2, f"zc-middleware: --app {app}: {message}")
