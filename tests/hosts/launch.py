"""App servers for the many-hosts tests: several server processes, each with several workers, their
output kept in a file the test reads, sharing one store by URL.

Each "host" is a separate server process on loopback (its own port, its own worker processes);
network namespaces would add nothing these tests can observe and need root to set up.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path

from tests.servers import serve

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
    command = [part.replace("{workers}", str(workers)) for part in COMMANDS[kind]]
    with serve(command, env={"ZEROCLICK_LEDGER": ledger, **(env or {})}, output=log) as base:
        yield Host(base, log)
