"""The Redis benchmark runs, at smoke size, so that it cannot rot; no timing is asserted."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from .redis_servers import SERVER

ROOT = Path(__file__).resolve().parents[2]


def test_bench_redis_runs_at_smoke_size() -> None:
    pytest.importorskip("redis", reason="redis-py is not installed (pip install 'zc-middleware[redis]')")
    pytest.importorskip("starlette", reason="starlette is not installed")
    if not os.access(SERVER, os.X_OK):
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    done = subprocess.run(
        [sys.executable, "-W", "error", str(ROOT / "benchmarks" / "bench_redis.py"), "--smoke"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "paid redis://" in done.stdout and "raw EVALSHA" in done.stdout
