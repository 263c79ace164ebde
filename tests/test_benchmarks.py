"""Every benchmark runs at smoke size, so that none rots unseen.

Each script runs as its own process with ``--smoke`` (every variant and peer, a few requests each)
and must exit 0 with a report that lists every variant. No timing is asserted: these machines are
shared, and a smoke run's numbers mean nothing. A peer that is not installed drops its row, so a
missing ``test`` extra fails here instead of passing quietly.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.servers import ROOT

#: the rows every in-process table has, whatever the framework
IN_PROCESS = [
    "bare",
    "bare-2",
    "no-op middleware",
    "no-op wrapper",
    "free route + zc",
    "paid memory://",
    "paid memory://, signed",
    "paid sqlite://",
    "bare + raw debit",
    "raw SQLite debit",
]


def run(script: str, *args: str) -> str:
    argv = [sys.executable, str(ROOT / "benchmarks" / script), "--smoke", *args]
    env = {**os.environ, "ZC_TEST_QUIET": "1"}
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=100)
    assert done.returncode == 0, f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def tables(report: str) -> dict[str, str]:
    """The in-process tables of a report, by title (``Flask``, ``Django (WSGI)``, ...)."""
    parts = re.split(r"^(.+), in process: .*$", report, flags=re.MULTILINE)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def missing_rows(table: str, names: list[str]) -> list[str]:
    """The names that no row of ``table`` starts with (a row: the name, then its numbers)."""
    return [name for name in names if not re.search(rf"^{re.escape(name)}\s+-?\d", table, flags=re.MULTILINE)]


@pytest.mark.slow
def test_bench_requests_reports_every_variant_in_process_and_end_to_end() -> None:
    report = run("bench_requests.py", "--e2e")
    found = tables(report)
    assert list(found) == ["Starlette"], report
    in_process, _, e2e = found["Starlette"].partition("End to end under uvicorn")
    starlette_only = ["paid memory://, signed (vendor SDK)", "slowapi @limit"]
    assert missing_rows(in_process, [*IN_PROCESS, *starlette_only]) == [], report
    assert missing_rows(e2e, ["bare", "paid sqlite://"]) == [], report
    assert "p99 difference" in e2e


def test_bench_wsgi_reports_every_variant_for_flask_and_django() -> None:
    report = run("bench_wsgi.py")
    found = tables(report)
    assert list(found) == ["Flask", "Django (WSGI)"], report
    assert missing_rows(found["Flask"], [*IN_PROCESS, "Flask-Limiter"]) == [], report
    assert missing_rows(found["Django (WSGI)"], [*IN_PROCESS, "django-ratelimit"]) == [], report


@pytest.mark.slow
def test_bench_outbox_reports_every_measure() -> None:
    report = run("bench_outbox.py")
    rows = [
        "enqueue 1,000 per commit",
        "delivered end to end (1,000/batch)",
        "request path, header meter (check+settle)",
        "request path, batch meter (check+settle+event)",
        "request path, batch meter, sender idle",
        "report_usage (durable before return)",
    ]
    missing = [row for row in rows if not re.search(rf"^  {re.escape(row)}\s+[\d,.]+ ", report, flags=re.MULTILINE)]
    assert missing == [], report


@pytest.mark.slow
def test_bench_load_reports_every_variant_and_the_scaling_table() -> None:
    report = run("bench_load.py")
    compared, _, scaled = report.partition("Paid requests/s by uvicorn worker processes")
    assert missing_rows(compared, ["bare", "slowapi", "paid sqlite://"]) == [], report
    assert missing_rows(scaled, ["bare", "sqlite"]) == [], report
    assert "load generator: " in report
