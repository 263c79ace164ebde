"""What the journal's fault tests share: apps whose handlers can be held mid-request, servers that can
be killed with ``SIGKILL``, and another process that holds an SQLite file's write lock.

The apps (Starlette under uvicorn, Flask under gunicorn) serve

=================  ==============================================================================
``GET /free``      free; the readiness probe
``GET /work``      ``@metered("compute-seconds", estimate=30)``; waits while the file named by
                   ``ZC_TEST_HOLD`` exists, records ``?units=`` (default 1), answers 200
``GET /broken``    ``@metered("compute-seconds", estimate=30)``; waits likewise, answers 502
=================  ==============================================================================

so a test can let the check pass, take the ledger's lock, then let the response finish. With
``ZC_TEST_BATCH_API`` (and ``ZC_TEST_API_KEY``) ``compute-seconds`` is on the batch channel. The
ledger and every other setting come from ``ZEROCLICK_*`` variables.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from tests.servers import ROOT, free_port, gunicorn, uvicorn
from zc_middleware import ZeroClickSettings, metered, record_usage

PLANS = {"starter": {"default": True, "includes": {"compute-seconds": {"limit": 1000, "reset": "month"}}}}
HOLD = os.environ.get("ZC_TEST_HOLD")
BATCH_API = os.environ.get("ZC_TEST_BATCH_API")
ESTIMATE = 30


def settings() -> ZeroClickSettings:
    batch: dict[str, Any] = {}
    if BATCH_API:
        batch = {"api_key": os.environ["ZC_TEST_API_KEY"], "api_base_url": BATCH_API, "flush_interval": 0.05}
    meters = {"compute-seconds": {"channel": "batch"} if BATCH_API else {}}
    return ZeroClickSettings(meters=meters, plans=PLANS, **batch)


def wait_for_release() -> None:
    """Wait while the hold file exists (at most 60 s): the test takes its lock meanwhile."""
    deadline = time.monotonic() + 60
    while HOLD and os.path.exists(HOLD) and time.monotonic() < deadline:
        time.sleep(0.02)


def work(units: str | None) -> None:
    wait_for_release()
    record_usage("compute-seconds", max(1, min(ESTIMATE, int(units or 1))))


# -- Starlette, under uvicorn ----------------------------------------------------------------
def _starlette_app() -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse, Response
    from starlette.routing import Route

    from zc_middleware.starlette import ZeroClickMiddleware

    async def free(request: Request) -> Response:
        return PlainTextResponse("free")

    @metered("compute-seconds", estimate=ESTIMATE)
    def do_work(request: Request) -> Response:  # sync: runs in the thread pool, so it may wait
        work(request.query_params.get("units"))
        return PlainTextResponse("done")

    @metered("compute-seconds", estimate=ESTIMATE)
    def broken(request: Request) -> Response:
        wait_for_release()
        return PlainTextResponse("upstream failed", status_code=502)

    app = Starlette(routes=[Route("/free", free), Route("/work", do_work), Route("/broken", broken)])
    app.add_middleware(ZeroClickMiddleware, settings=settings())
    return app


# -- Flask, under gunicorn ------------------------------------------------------------------
def _flask_app() -> Any:
    from flask import Flask, request

    from zc_middleware.flask import ZeroClick

    app = Flask(__name__)

    @app.get("/free")
    def free() -> str:
        return "free"

    @app.get("/work")
    @metered("compute-seconds", estimate=ESTIMATE)
    def do_work() -> str:
        work(request.args.get("units"))
        return "done"

    @app.get("/broken")
    @metered("compute-seconds", estimate=ESTIMATE)
    def broken() -> tuple[str, int]:
        wait_for_release()
        return "upstream failed", 502

    ZeroClick(app, settings=settings())
    return app


def __getattr__(name: str) -> Any:  # the apps are built only in the server that imports them
    if name == "asgi_app":
        return _starlette_app()
    if name == "wsgi_app":
        return _flask_app()
    raise AttributeError(name)


#: server name -> command serving this module's app on ``{port}``
SERVERS: dict[str, list[str]] = {
    "uvicorn": uvicorn("tests.faults.journal_support:asgi_app"),
    "gunicorn": gunicorn("tests.faults.journal_support:wsgi_app"),
}


class Server:
    """A server process group on a free port; :meth:`kill` ends it with ``SIGKILL``, master and workers."""

    def __init__(self, name: str, env: dict[str, str], output: Path) -> None:
        port = free_port()
        self.base = f"http://127.0.0.1:{port}"
        self.output = output
        cmd = [part.replace("{port}", str(port)) for part in SERVERS[name]]
        self._log = output.open("ab")
        self.proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT), **env},
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {self.proc.returncode}:\n{self.said()}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(self.base + "/free", timeout=1).status_code == 200:
                    break
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"{name} did not start:\n{self.said()}")
            time.sleep(0.05)

    def said(self) -> str:
        return self.output.read_text(errors="replace")

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self._log.close()

    def stop(self) -> None:
        """A graceful stop (``SIGTERM``): the app's shutdown runs."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.kill()
        self._log.close()


@contextlib.contextmanager
def server(name: str, env: dict[str, str], output: Path) -> Iterator[Server]:
    running = Server(name, env, output)
    try:
        yield running
    finally:
        if running.proc.poll() is None:
            running.stop()


_LOCKER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], timeout=30, isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.read()
conn.execute("ROLLBACK")
"""


@contextlib.contextmanager
def write_lock(db: Path) -> Iterator[None]:
    """Another process holds ``db``'s write lock (``BEGIN IMMEDIATE``) until the block ends."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _LOCKER, str(db)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdin is not None
    try:
        assert proc.stdout.readline().strip() == "locked"
        yield
    finally:
        proc.stdin.close()
        proc.wait(30)
        proc.stdout.close()


class Held:
    """Requests started now whose handlers wait until :meth:`release` (the hold file is removed)."""

    def __init__(self, hold: Path) -> None:
        self.hold = hold
        hold.touch()

    def release(self) -> None:
        self.hold.unlink(missing_ok=True)


def used(db: Path, buyer: str) -> int:
    """``compute-seconds`` used by ``buyer``, read straight from the ledger file."""
    conn = sqlite3.connect(db, timeout=30)
    try:
        row = conn.execute(
            "SELECT used FROM zc_balances WHERE buyer = ? AND meter = 'compute-seconds'", (buyer,)
        ).fetchone()
    finally:
        conn.close()
    return 0 if row is None else int(row[0])


def journal_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("zc-journal-*.jsonl"))


def wait_until(check: Any, timeout: float = 20.0) -> Any:
    """Poll ``check()`` until it is truthy or ``timeout`` passes; its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (a gunicorn master's workers)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                # the fields after the command's closing parenthesis: state, then the parent's pid
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
    return found
