"""The sandbox signs what it forwards (``--signing-secret``): apps with that secret serve it, and
refuse whoever reaches them directly."""

from __future__ import annotations

import hashlib
import importlib.util
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


@pytest.fixture(scope="module", params=["starlette", "flask"])
def through(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """``(sandbox URL, app URL)``: an app whose settings trust kid ``sandbox``, behind a signing sandbox."""
    modules, argv = ADAPTERS[request.param]
    if any(importlib.util.find_spec(m) is None for m in modules):
        pytest.skip(f"{request.param} not installed")
    db: Path = tmp_path_factory.mktemp("signed-sandbox") / "x.db"
    env = {"ZEROCLICK_LEDGER": f"sqlite:///{db}", "ZEROCLICK_SIGNING_SECRETS": json.dumps({"sandbox": SECRET})}
    with serve(argv, env=env) as app:
        sandbox = [sys.executable, "-m", "zc_middleware.sandbox", "--port", "{port}", "--log-level", "warning"]
        sandbox += ["--upstream", app, "--signing-secret", SECRET, "--buyer", "agent-signed"]
        with serve(sandbox, ready_path="/__sandbox/usage") as base:
            yield base, app


def test_signed_requests_through_the_sandbox_are_served(through: tuple[str, str]) -> None:
    base, _ = through
    assert httpx.get(base + "/search?q=a%20b", timeout=10).status_code == 200
    body = b'{"q": "shoes", "n": 3}'
    echoed = httpx.post(base + "/echo", content=body, timeout=10)
    assert echoed.status_code == 200, echoed.text
    assert echoed.json() == {"sha256": hashlib.sha256(body).hexdigest(), "length": len(body)}
    assert httpx.get(base + "/a%2Fb", timeout=10).status_code == 200  # the raw path is what is signed


def test_the_app_refuses_a_request_that_skipped_the_proxy(through: tuple[str, str]) -> None:
    _, app = through
    response = httpx.get(app + "/search", headers={"zc-agent-id": "agent-signed"}, timeout=10)
    assert response.status_code == 401
    assert response.json()["reason"] == "missing_signature"
