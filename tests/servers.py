"""Start real servers on free loopback ports for the tests."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def serve(
    argv: list[str], *, env: dict[str, str] | None = None, ready_path: str = "/free", output: Path | None = None
) -> Iterator[str]:
    """Run ``argv`` (``{port}`` is replaced) until the server answers ``ready_path``; yield its base URL.
    ``output``: a file that gets what the server writes (stdout and stderr), for the test to read."""
    port = free_port()
    cmd = [part.replace("{port}", str(port)) for part in argv]
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    if output is not None:
        log = output.open("wb")
    else:
        log = open(os.devnull, "wb") if os.environ.get("ZC_TEST_QUIET") else None
    proc = subprocess.Popen(cmd, cwd=ROOT, env=full_env, stdout=log, stderr=subprocess.STDOUT if log else None)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                said = output.read_text(errors="replace") if output is not None else ""
                raise RuntimeError(f"server exited with {proc.returncode}: {' '.join(cmd)}\n{said}")
            try:
                if httpx.get(base + ready_path, timeout=1).status_code < 500:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"server did not start: {' '.join(cmd)}")
            time.sleep(0.05)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if log:
            log.close()


def uvicorn(target: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "uvicorn",
        target,
        "--host",
        "127.0.0.1",
        "--port",
        "{port}",
        "--log-level",
        "warning",
    ]


def gunicorn(target: str) -> list[str]:
    """One gthread worker with 8 threads: the scenario apps count ``/runs`` in process memory."""
    return [
        sys.executable,
        "-m",
        "gunicorn",
        "-b",
        "127.0.0.1:{port}",
        "-w",
        "1",
        "--threads",
        "8",
        "--log-level",
        "warning",
        target,
    ]


#: adapter name -> (modules it needs, server command)
ADAPTERS: dict[str, tuple[tuple[str, ...], list[str]]] = {
    "starlette": (("starlette", "uvicorn"), uvicorn("tests.apps.starlette_app:app")),
    "fastapi": (("fastapi", "uvicorn"), uvicorn("tests.apps.fastapi_app:app")),
    "flask": (("flask", "gunicorn"), gunicorn("tests.apps.flask_app:app")),
    "wsgi": (("werkzeug", "gunicorn"), gunicorn("tests.apps.wsgi_app:app")),
    "django-wsgi": (("django", "gunicorn"), gunicorn("tests.apps.django_app.wsgi:application")),
    "django-asgi": (("django", "uvicorn"), uvicorn("tests.apps.django_app.asgi:application")),
}
