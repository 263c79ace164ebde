"""``benchmarks/bench_postgres.py`` runs at smoke size, so that it cannot rot; no timing is asserted."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.postgres_db import ADMIN, admin

ROOT = Path(__file__).resolve().parents[2]


def test_the_postgres_benchmark_runs_at_smoke_size() -> None:
    admin().close()  # type: ignore[attr-defined]  # skips, saying why, when no server answers
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_postgres.py"), "--smoke", "--server", ADMIN],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "paid postgresql://" in result.stdout
    assert "raw debit" in result.stdout
