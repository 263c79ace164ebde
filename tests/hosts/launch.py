"""App servers for the many-hosts tests: several server processes, each with several workers, their
output kept in a file the test reads, sharing one store by URL.

Each "host" is a separate server process on loopback (its own port, its own worker processes);
network namespaces would add nothing these tests can observe and need root to set up.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from tests.servers import ROOT, free_port

__all__ = ["Host", "host"]

#: server kind -> its command; ``{port}`` and ``{workers}`` are filled in
COMMANDS = {
    "uvicorn": [
        *(sys.executable, "-m", "uvicorn", "tests.apps.starlette_app:app", "--host", "127.0.0.1"),
        *("--port", "{port}", "--workers", "{workers}", "--log-level", "warning"),
    ],
    "gunicorn": [
        *(sys.executable, "-m", "gunicorn", "-b", "127.0.0.1:{port}", "-w", "{workers}", "--threads", "4"),
        *("--log-level", "warning", "tests.apps.flask_app:app"),
    ],
}


class Host:
    """A running app server: its base URL and what it wrote to stderr so far."""

    def __init__(self, base: str, log: Path) -> None:
        self.base = base
        self.log = log

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@contextlib.contextmanager
def host(kind: str, ledger: str, log: Path, *, workers: int = 2, env: dict[str, str] | None = None) -> Iterator[Host]:
    """Serve the scenario app with ``kind`` (``uvicorn`` or ``gunicorn``) on ``ledger`` until the block ends."""
    port = free_port()
    command = [part.format(port=port, workers=workers) for part in COMMANDS[kind]]
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), "ZEROCLICK_LEDGER": ledger, **(env or {})}
    with log.open("wb") as out:
        proc = subprocess.Popen(command, cwd=ROOT, env=full_env, stdout=out, stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 30
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"{kind} exited with {proc.returncode}: {log.read_text(errors='replace')}")
                with contextlib.suppress(httpx.TransportError):
                    if httpx.get(base + "/free", timeout=1).status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{kind} did not start: {log.read_text(errors='replace')}")
                time.sleep(0.05)
            yield Host(base, log)
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
