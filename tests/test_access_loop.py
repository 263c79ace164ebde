"""The contract's loop, offline, on all six adapters under their real servers: an agent calls through
the sandbox until ``402 usage_exhausted``, extends at the ``extendUrl`` the 402 names (the sandbox's
``/extend``, which sends the app a signed entitlement write), retries and is served; then a spend
cap (``/suspend``) answers ``402 spend_cap_reached`` until the next extension.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.servers import ADAPTERS, serve

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

SECRET = "sandbox-signing-secret"
_ids = itertools.count()


@pytest.fixture(scope="module", params=sorted(ADAPTERS))
def sandbox(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The sandbox's URL, in front of the adapter's scenario app, which trusts the sandbox's kid."""
    modules, argv = ADAPTERS[request.param]
    if any(importlib.util.find_spec(m) is None for m in modules):
        pytest.skip(f"{request.param} not installed")
    db: Path = tmp_path_factory.mktemp("loop") / "x.db"
    env = {
        "ZEROCLICK_LEDGER": f"sqlite:///{db}",
        "ZEROCLICK_SIGNING_SECRETS": json.dumps({"sandbox": SECRET}),
    }
    with serve(argv, env=env) as app:
        command = [sys.executable, "-m", "zc_middleware.sandbox", "--port", "{port}", "--log-level", "warning"]
        command += ["--upstream", app, "--signing-secret", SECRET, "--plan", "starter"]
        with serve(command, ready_path="/__sandbox/usage") as base:
            yield base


def agent(base: str) -> httpx.Client:
    return httpx.Client(base_url=base, headers={"zc-agent-id": f"loop-agent-{next(_ids)}"}, timeout=10)


def test_402_extend_retry_then_spend_cap_extend_retry(sandbox: str) -> None:
    with agent(sandbox) as client:
        for _ in range(5):  # the scenario plan: 5 api-requests a month
            assert client.get("/search").status_code == 200
        refused = client.get("/search")
        assert (refused.status_code, refused.headers["x-zeroclick-reason"]) == (402, "usage_exhausted")
        assert refused.json()["extendUrl"] == sandbox + "/extend"  # the sandbox's, not ZeroClick's
        extended = client.post(refused.json()["extendUrl"])
        assert extended.status_code == 200, extended.text
        assert extended.json()["seller"] == {"lifecycle": "active"}
        assert (extended.json()["plan"], extended.json()["stateVersion"]) == ("starter", 1)
        assert client.get("/search").status_code == 200  # the same request, retried

        capped = client.post("/suspend")
        assert capped.status_code == 200, capped.text
        assert (capped.json()["status"], capped.json()["stateVersion"]) == ("suspended", 2)
        refused = client.get("/search")
        assert (refused.status_code, refused.headers["x-zeroclick-reason"]) == (402, "spend_cap_reached")
        assert client.post(refused.json()["extendUrl"]).status_code == 200
        assert client.get("/search").status_code == 200


def test_extend_names_a_plan_the_app_does_not_declare(sandbox: str) -> None:
    with agent(sandbox) as client:
        answer = client.post("/extend", json={"plan": "enterprise"})
        assert answer.status_code == 502
        assert answer.json()["seller"] == {"status": 400, "body": {"error": "unknown_plan"}}
        buyer = client.headers["zc-agent-id"]
        assert [p for p in client.get("/__sandbox/plans").json()["plans"] if p["buyer"] == buyer] == []
        assert client.get("/search").status_code == 200  # the default plan still serves
