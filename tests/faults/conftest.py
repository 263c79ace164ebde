"""Faults on the SQLite ledger under real servers: another process holding its write lock, its file
deleted or replaced while the app runs, and the operator's way back (``zc-middleware ledger-restore``).

The scenario apps serve ``/free`` and ``/search`` (``@metered("api-requests")``, plan limit 5).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.apps.common import SCENARIO_PLANS
from tests.servers import ROOT, serve
from zc_middleware import open_ledger

#: the plan limit of ``api-requests``: a buyer's successes before a 402
LIMIT = SCENARIO_PLANS["starter"]["includes"]["api-requests"]["limit"]

UVICORN = [
    *(sys.executable, "-m", "uvicorn", "tests.apps.starlette_app:app", "--host", "127.0.0.1"),
    *("--port", "{port}", "--log-level", "warning"),
]


def gunicorn(pidfile: Path, workers: int = 2) -> list[str]:
    """Flask's scenario app under gunicorn with ``workers`` processes; the master's pid goes to ``pidfile``."""
    return [
        *(sys.executable, "-m", "gunicorn", "-b", "127.0.0.1:{port}", "-w", str(workers), "--threads", "4"),
        *("--pid", str(pidfile), "--log-level", "warning", "tests.apps.flask_app:app"),
    ]


def children(pidfile: Path) -> list[int]:
    """The pids of the worker processes of the gunicorn master whose pid is in ``pidfile``."""
    master = int(pidfile.read_text().strip())
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rpartition(")")[2].split()[1]) == master:
                found.append(int(entry))
    return found


@contextlib.contextmanager
def write_lock(db: Path, seconds: float) -> Iterator[subprocess.Popen[str]]:
    """Another process takes the write lock of ``db`` (``BEGIN IMMEDIATE``) and holds it ``seconds``;
    the block starts once it holds it."""
    code = (
        "import sqlite3, sys, time\n"
        "conn = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)\n"
        "conn.execute('BEGIN IMMEDIATE')\n"
        "print('locked', flush=True)\n"
        "time.sleep(float(sys.argv[2]))\n"
        "conn.execute('COMMIT')\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(db), str(seconds)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "locked"
    try:
        yield proc
    finally:
        proc.wait(30)
        proc.stdout.close()


def billed(response: httpx.Response) -> int:
    """The ``api-requests`` quantity a response's ``X-ZeroClick-Usage`` bills (0 without one)."""
    header = response.headers.get("x-zeroclick-usage", "")
    pairs = dict(pair.strip().split("=") for pair in header.split(",") if pair.strip())
    return int(pairs.get("api-requests", 0))


def used(url: str, buyer: str) -> int:
    """What the ledger file at ``url`` says ``buyer`` used of ``api-requests``."""
    ledger = open_ledger(url, plans=SCENARIO_PLANS, create=False)
    try:
        return ledger.balance(buyer).meter("api-requests").used
    finally:
        ledger.close()


def restore(url: str, *, new: bool = False) -> subprocess.CompletedProcess[str]:
    """``zc-middleware ledger-restore [--new]``, as an operator runs it, with settings from the environment."""
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "ZEROCLICK_LEDGER": url,
        "ZEROCLICK_METERS": json.dumps({"api-requests": {}, "compute-seconds": {}, "cpu-seconds": {}}),
        "ZEROCLICK_PLANS": json.dumps(SCENARIO_PLANS),
    }
    argv = [sys.executable, "-m", "zc_middleware", "ledger-restore", *(["--new"] if new else [])]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, check=False)


class Server:
    """The scenario app on a SQLite ledger under ``kind``: ``uvicorn`` (one process) or ``gunicorn`` (a
    master and two workers). :meth:`respawn` starts new processes the way each server does: uvicorn is
    restarted, gunicorn's workers are killed and the master starts new ones."""

    def __init__(self, kind: str, url: str, tmp: Path, env: dict[str, str] | None = None) -> None:
        self.kind, self.url, self.tmp = kind, url, tmp
        self.env = {"ZEROCLICK_LEDGER": url, **(env or {})}
        self.pidfile = tmp / "gunicorn.pid"
        self._stack = contextlib.ExitStack()
        self._runs = 0
        self.base = ""
        self.logs: list[Path] = []

    def start(self) -> None:
        self._runs += 1
        log = self.tmp / f"{self.kind}-{self._runs}.log"
        self.logs.append(log)
        argv = UVICORN if self.kind == "uvicorn" else gunicorn(self.pidfile)
        self.base = self._stack.enter_context(serve(argv, env=self.env, output=log))

    def output(self) -> str:
        return "".join(log.read_text(errors="replace") for log in self.logs)

    def respawn(self) -> None:
        if self.kind == "uvicorn":
            self._stack.close()
            self.start()
            return
        old = set(children(self.pidfile))
        for pid in old:
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while True:
            now = set(children(self.pidfile))
            if len(now) == len(old) and not now & old:
                try:
                    if httpx.get(self.base + "/free", timeout=2).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
            assert time.monotonic() < deadline, "gunicorn did not start new workers"
            time.sleep(0.1)

    def close(self) -> None:
        self._stack.close()


@contextlib.contextmanager
def server(kind: str, url: str, tmp: Path, env: dict[str, str] | None = None) -> Iterator[Server]:
    pytest.importorskip("uvicorn" if kind == "uvicorn" else "gunicorn")
    pytest.importorskip("starlette" if kind == "uvicorn" else "flask")
    running = Server(kind, url, tmp, env)
    running.start()
    try:
        yield running
    finally:
        running.close()
