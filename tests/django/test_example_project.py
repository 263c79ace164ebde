"""``examples/django_project`` runs as a stranger would run it: under gunicorn (WSGI) and uvicorn (ASGI)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest.importorskip("django")
httpx = pytest.importorskip("httpx")

from tests.servers import ROOT, serve, uvicorn  # noqa: E402
from zc_middleware import open_ledger  # noqa: E402

PROJECT = ROOT / "examples" / "django_project"
SERVERS = {
    "gunicorn": (
        "gunicorn",
        [sys.executable, "-m", "gunicorn", "--chdir", str(PROJECT), "paidapi.wsgi", "--bind", "127.0.0.1:{port}"],
    ),
    "uvicorn": ("uvicorn", [*uvicorn("paidapi.asgi:application"), "--app-dir", str(PROJECT)]),
}


@pytest.mark.parametrize("server", sorted(SERVERS))
def test_example_project_paid_calls_then_402(server: str, tmp_path: Path) -> None:
    module, argv = SERVERS[server]
    pytest.importorskip(module)
    url = f"sqlite:///{tmp_path / 'zeroclick.db'}"
    with serve(argv, env={"ZEROCLICK_LEDGER": url}, ready_path="/health") as base:
        agent = {"zc-agent-id": "agent-1"}
        rendered = httpx.post(base + "/render?pages=3", headers=agent)
        assert rendered.status_code == 200, rendered.text
        assert rendered.headers["x-zeroclick-usage"] == "compute-seconds=6"
        assert httpx.post(base + "/render?pages=lots", headers=agent).status_code == 400
        assert httpx.get(base + "/render", headers=agent).status_code == 405  # POST only: free
        searches = [httpx.get(base + "/search?q=owls", headers=agent) for _ in range(4)]
        assert [r.status_code for r in searches] == [200, 200, 200, 402]
        assert searches[0].headers["x-zeroclick-usage"] == "api-requests=1"
        denied = searches[-1]
        assert denied.headers["x-zeroclick-reason"] == "usage_exhausted"
        assert denied.json()["extendUrl"] == "https://acme-search.pay.zeroclick.io/extend"
        assert httpx.get(base + "/search").status_code == 401
    ledger = open_ledger(url, plans={"starter": {"default": True, "includes": {"api-requests": {"limit": 3}}}})
    try:
        assert ledger.balance("agent-1").meter("api-requests").used == 3
    finally:
        ledger.close()
