"""What a buyer sees: paid calls with their usage headers, the 402, the loop that extends a plan, the balance.

Runs ``examples/starlette_app.py`` under a real uvicorn server on the embedded
SQLite ledger (a fresh file in a temporary directory) and talks to it over HTTP,
signed as ZeroClick's proxy signs (the app has ``ZEROCLICK_SIGNING_SECRETS``;
``zc_middleware.testing.sign`` makes the signature). Then it runs
``zc-middleware sandbox`` (a local stand-in for ZeroClick, signing with the same
secret) in front of it: calls through the proxy are billed from their usage
header, and a finished job is reported through the batch API with ``report_usage``.
Last, the contract's loop: an agent runs out (``402 usage_exhausted``), extends
its plan at the 402's ``extendUrl`` (the sandbox's ``/extend``, which sends the
app a signed entitlement write, as ZeroClick does) and retries; then a spend cap
(``402 spend_cap_reached``), another extension, and the retry served.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from zc_middleware import ZeroClickSettings, open_ledger, report_usage
from zc_middleware.reporter import get_reporter
from zc_middleware.testing import sign

ROOT = Path(__file__).resolve().parent.parent
BUYER = "agent-8f3kz1"
#: the secret the app and the sandbox share (kid "demo"); in production ZeroClick gives it to you
KID, SECRET = "demo", "demo-signing-secret"


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
    elif response.status_code == 401:  # not signed by the proxy, or no buyer: the error and its reason
        refusal = response.json()
        line = f"{label:<28} -> 401  {refusal['error']} {refusal.get('reason', '')}".rstrip()
    print(line, flush=True)


def wait_for(url: str) -> None:
    for _ in range(400):
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.05)
    raise SystemExit(f"{url} did not come up")


def through_sandbox(base: str, tmp: str) -> None:
    """Calls through the sandbox proxy, a job reported in a batch, and what ZeroClick recorded."""
    port = free_port()
    sandbox = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "zc_middleware.sandbox",
            "--port",
            str(port),
            "--upstream",
            base,
            "--buyer",
            "agent-sandbox",
            "--signing-secret",
            SECRET,
            "--signing-kid",
            KID,
            "--api-key",
            "sk_sandbox",
            "--plan",
            "starter",
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
    )
    try:
        wait_for(sandbox + "/__sandbox/usage")
        print(f"\nzc-middleware sandbox at {sandbox}, proxying to the app as buyer agent-sandbox, signed\n", flush=True)
        with httpx.Client(base_url=sandbox, timeout=10) as client:
            for label, response in (
                ("GET /search via proxy", client.get("/search", params={"q": "owls"})),
                ("POST /render via proxy", client.post("/render")),
            ):
                print(f"{label:<28} -> {response.status_code}  (usage header read and stripped by the proxy)")
        settings = ZeroClickSettings(
            meters={"api-requests": {}, "compute-seconds": {"channel": "batch"}},
            api_key="sk_sandbox",
            api_base_url=sandbox,
            ledger="memory://",
            outbox=f"sqlite:///{Path(tmp) / 'outbox.db'}",
        )
        report_usage(
            user_id="agent-sandbox",
            meter="compute-seconds",
            quantity=42,
            idempotency_key="job-7841-completed",
            settings=settings,
        )
        reporter = get_reporter(settings)
        reporter.flush(timeout=10)
        reporter.close(timeout=5)
        reporter.outbox.close()  # the SQLite file in the temporary directory, closed before it goes
        print("report_usage(job-7841-completed, compute-seconds=42) -> delivered through the batch API", flush=True)
        print("\nWhat ZeroClick recorded (the proxy reads and strips X-ZeroClick-Usage):", flush=True)
        print(httpx.get(sandbox + "/__sandbox/usage.txt", timeout=10).text, flush=True)
        the_loop(sandbox)
    finally:
        proc.terminate()
        proc.wait(10)


def the_loop(sandbox: str) -> None:
    """402 -> extend -> the same request retried -> 200; then a spend cap -> extend -> 200."""
    print("The loop, through the sandbox, as agent-loop (the plan: 3 api-requests a month):\n", flush=True)
    with httpx.Client(base_url=sandbox, headers={"zc-agent-id": "agent-loop"}, timeout=10) as agent:

        def call(label: str) -> str | None:
            response = agent.get("/search?q=owls")
            if response.status_code != 402:
                print(f"{label:<28} -> {response.status_code}", flush=True)
                return None
            refusal = response.json()
            print(f"{label:<28} -> 402  {refusal['reason']}, extendUrl {refusal['extendUrl']}", flush=True)
            return str(refusal["extendUrl"])

        def plan_write(label: str, url: str) -> None:
            answer = agent.post(url)
            said = answer.json()
            if answer.status_code == 200:
                print(
                    f"{label:<28} -> 200  plan {said['plan']} v{said['stateVersion']} {said['status']}, period from "
                    f"{said['period']['start']}; the app answered {json.dumps(said['seller'])}",
                    flush=True,
                )
            else:
                print(f"{label:<28} -> {answer.status_code}  {json.dumps(said)}", flush=True)

        for i in range(1, 4):
            call(f"GET /search #{i}")
        extend_url = call("GET /search #4") or sandbox + "/extend"
        plan_write("POST <extendUrl>", extend_url)
        call("GET /search #4, retried")
        plan_write("POST /suspend (spend cap)", "/suspend")
        extend_url = call("GET /search #5") or sandbox + "/extend"
        plan_write("POST <extendUrl>", extend_url)
        call("GET /search #5, retried")


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        ledger_url = f"sqlite:///{Path(tmp) / 'zeroclick.db'}"
        port = free_port()
        env = {
            **os.environ,
            "ZEROCLICK_LEDGER": ledger_url,
            "ZEROCLICK_SIGNING_SECRETS": f'{{"{KID}": "{SECRET}"}}',
            "PYTHONPATH": str(ROOT),
        }
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
            wait_for(base + "/health")
            print(f"examples/starlette_app.py under uvicorn at {base}, ledger {ledger_url}\n", flush=True)
            agent = {"zc-agent-id": BUYER}

            def signed(method: str, target: str, headers: dict[str, str] | None = None) -> dict[str, str]:
                return sign(method, target, b"", headers, secret=SECRET, kid=KID)

            with httpx.Client(base_url=base, timeout=10) as client:
                show("GET /search (unsigned)", client.get("/search?q=owls", headers=agent))
                show("GET /search (no identity)", client.get("/search?q=owls", headers=signed("GET", "/search?q=owls")))
                show("POST /render", client.post("/render", headers=signed("POST", "/render", agent)))
                for i in range(1, 5):
                    headers = signed("GET", "/search?q=owls", agent)
                    show(f"GET /search #{i}", client.get("/search?q=owls", headers=headers))
            through_sandbox(base, tmp)
        finally:
            server.terminate()
            server.wait(10)
        sys.path.insert(0, str(ROOT))  # examples/ is not part of the installed package
        from examples.starlette_app import settings

        ledger = open_ledger(ledger_url, plans=settings.plans)
        print("\n" + ledger.balance(BUYER).as_table(), flush=True)
        ledger.close()


if __name__ == "__main__":
    main()
