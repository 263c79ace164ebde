"""``examples/flask_app.py`` runs as a stranger would run it: under gunicorn, and its CLI under ``flask``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("flask")
pytest.importorskip("gunicorn")

import httpx

from tests.servers import ROOT, serve


def test_flask_example_under_gunicorn(tmp_path: Path) -> None:
    env = {"ZEROCLICK_LEDGER": f"sqlite:///{tmp_path / 'z.db'}"}
    argv = [sys.executable, "-m", "gunicorn", "-b", "127.0.0.1:{port}", "-w", "2", "examples.flask_app:app"]
    with serve(argv, env=env, ready_path="/health") as base:
        agent = {"zc-agent-id": "agent-1"}
        rendered = httpx.post(base + "/render?pages=3", headers=agent)
        assert rendered.status_code == 200
        assert rendered.headers["x-zeroclick-usage"] == "compute-seconds=6"
        for pages in ("lots", "100000"):  # never recorded beyond what the plan checked
            refused = httpx.post(base + f"/render?pages={pages}", headers=agent)
            assert refused.status_code == 400 and "x-zeroclick-usage" not in refused.headers
        statuses = [httpx.get(base + "/search?q=x", headers=agent).status_code for _ in range(4)]
        assert statuses == [200, 200, 200, 402]  # two worker processes share the SQLite ledger
        denied = httpx.get(base + "/search?q=x", headers=agent)
        assert denied.headers["x-zeroclick-reason"] == "usage_exhausted"
        assert denied.json()["extendUrl"] == "https://acme-search.pay.zeroclick.io/extend"
        assert "x-zeroclick-usage" not in denied.headers

    balance = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "examples.flask_app", "zeroclick", "balance", "agent-1"],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    lines = balance.stdout.splitlines()
    assert lines[0] == "buyer agent-1: plan starter (active)"
    assert lines[3].split()[:5] == ["api-requests", "3", "3", "0", "100"]
    assert lines[4].split()[:5] == ["compute-seconds", "3600", "6", "3594", "0.17"]
