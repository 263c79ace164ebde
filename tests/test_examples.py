"""The examples run as a stranger would run them."""

from __future__ import annotations

import subprocess
import sys

import httpx

from tests.servers import ROOT, serve, uvicorn


def test_demo_shows_usage_headers_the_402_and_the_balance() -> None:
    result = subprocess.run(
        [sys.executable, "examples/demo.py"], cwd=ROOT, capture_output=True, text=True, timeout=120, check=True
    )
    out = result.stdout
    assert "GET /search #1               -> 200  X-ZeroClick-Usage: api-requests=1" in out
    assert "-> 402  X-ZeroClick-Reason: usage_exhausted" in out
    assert '"extendUrl":"https://acme-search.pay.zeroclick.io/extend"' in out
    assert "api-requests     3      3     0          100" in out
    # through the sandbox: header usage read by the proxy, the job delivered by the batch API
    assert "agent-sandbox  api-requests          1      0      1" in out
    assert "agent-sandbox  compute-seconds       1     42     43" in out
    assert "events: 1 accepted, 0 duplicates" in out
    # the loop: 402, extend through the sandbox, the same request retried; then the spend cap
    assert "GET /search #4               -> 402  usage_exhausted" in out
    assert "GET /search #4, retried      -> 200" in out
    assert "GET /search #5               -> 402  spend_cap_reached" in out
    assert "GET /search #5, retried      -> 200" in out


def test_fastapi_example_under_uvicorn(tmp_path) -> None:  # type: ignore[no-untyped-def]
    env = {"ZEROCLICK_LEDGER": f"sqlite:///{tmp_path / 'z.db'}"}
    with serve(uvicorn("examples.fastapi_app:app"), env=env, ready_path="/health") as base:
        agent = {"zc-agent-id": "agent-1"}
        rendered = httpx.post(base + "/render?pages=3", headers=agent)
        assert rendered.headers["x-zeroclick-usage"] == "compute-seconds=6"
        refused = httpx.post(base + "/render?pages=100000", headers=agent)  # never recorded past the 30 checked
        assert refused.status_code == 422 and "x-zeroclick-usage" not in refused.headers
        statuses = [httpx.get(base + "/search?q=x", headers=agent).status_code for _ in range(4)]
        assert statuses == [200, 200, 200, 402]
        assert "q" in httpx.get(base + "/openapi.json").text
