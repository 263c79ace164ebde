"""What a buyer sees: paid calls with their usage headers, the 402, then the balance.

Runs ``examples/starlette_app.py`` under a real uvicorn server on the embedded
SQLite ledger (a fresh file in a temporary directory) and talks to it over HTTP.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from zc_middleware import open_ledger

ROOT = Path(__file__).resolve().parent.parent
BUYER = "agent-8f3kz1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def show(label: str, response: httpx.Response) -> None:
    usage = response.headers.get("x-zeroclick-usage", "-")
    reason = response.headers.get("x-zeroclick-reason")
    line = f"{label:<28} -> {response.status_code}  X-ZeroClick-Usage: {usage}"
    if reason:
        line = f"{label:<28} -> {response.status_code}  X-ZeroClick-Reason: {reason}\n{'':<32}{response.text}"
    print(line, flush=True)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        ledger_url = f"sqlite:///{Path(tmp) / 'zeroclick.db'}"
        port = free_port()
        env = {**os.environ, "ZEROCLICK_LEDGER": ledger_url, "PYTHONPATH": str(ROOT)}
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "examples.starlette_app:app",
                "--port",
                str(port),
                "--log-level",
                "warning",
            ],
            cwd=ROOT,
            env=env,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            for _ in range(200):
                try:
                    httpx.get(base + "/health", timeout=1)
                    break
                except httpx.TransportError:
                    time.sleep(0.05)
            print(f"examples/starlette_app.py under uvicorn at {base}, ledger {ledger_url}\n", flush=True)
            agent = {"zc-agent-id": BUYER}
            with httpx.Client(base_url=base, timeout=10) as client:
                show("GET /search (no identity)", client.get("/search?q=owls"))
                show("POST /render", client.post("/render", headers=agent))
                for i in range(1, 4):
                    show(f"GET /search #{i}", client.get("/search", params={"q": "owls"}, headers=agent))
                show("GET /search #4", client.get("/search", params={"q": "owls"}, headers=agent))
        finally:
            server.terminate()
            server.wait(10)
        from examples.starlette_app import settings

        ledger = open_ledger(ledger_url, plans=settings.plans)
        print("\n" + ledger.balance(BUYER).as_table(), flush=True)
        ledger.close()


if __name__ == "__main__":
    main()
