"""Real processes on one SQLite outbox: SIGKILL mid-load and restart; two senders sharing a file."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

from tests.reporter.helpers import BatchAPI, assert_payloads_unchanged, deduped_totals
from tests.reporter.producer import event
from tests.servers import ROOT

N = 3000


def producer(outbox: str, api: BatchAPI, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.reporter.producer", outbox, api.base, str(N), *extra],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )


def expected_totals(n: int) -> Counter[tuple[str, str]]:
    totals: Counter[tuple[str, str]] = Counter()
    for i in range(n):
        e = event(i)
        totals[str(e["user_id"]), "compute-seconds"] += int(e["quantity"])  # type: ignore[call-overload]
    return totals


def test_sigkill_mid_load_then_restart_loses_nothing_and_bills_nothing_twice(api: BatchAPI, tmp_path: Path) -> None:
    api.configure(fail=0.3, modes=["hang", "503"], hang=0.6, seed=3)  # in-flight batches at the kill
    outbox = f"sqlite:///{tmp_path / 'outbox.db'}"
    first = producer(outbox, api)
    accepted: set[int] = set()
    assert first.stdout is not None
    for line in first.stdout:
        accepted.add(int(line))
        if len(accepted) >= N // 2 and api.state()["calls"] > 0:
            break
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    first.stdout.close()
    assert len(accepted) >= N // 2

    second = producer(outbox, api)  # re-reports every event: the stored ones are no-ops
    out, _ = second.communicate(timeout=60)
    assert out.split()[-1] == "done"

    keys = api.keys()
    assert {f"job-{i}" for i in accepted} <= set(keys)  # nothing accepted was lost
    assert set(keys) == {f"job-{i}" for i in range(N)}
    assert_payloads_unchanged(keys)  # every resend carried the stored bytes
    assert deduped_totals(keys) == expected_totals(N)  # exact per buyer and meter


def test_two_senders_on_one_outbox_never_send_the_same_event_twice(api: BatchAPI, tmp_path: Path) -> None:
    outbox = f"sqlite:///{tmp_path / 'outbox.db'}"
    writer = producer(outbox, api)  # fills the outbox and sends
    assert writer.stdout is not None
    for line in writer.stdout:
        if int(line) >= 200:
            break
    helper = producer(outbox, api, "flush-only")  # a second process draining the same file
    rest, _ = writer.communicate(timeout=60)
    helper.communicate(timeout=60)
    # "pending" is fine when the helper still held a lease at the writer's exit: it delivered those
    assert rest.split()[-1] in ("done", "pending")
    keys = api.wait_for(N, timeout=10)
    assert len(keys) == N
    assert [k for k, deliveries in keys.items() if len(deliveries) != 1] == []  # no failures injected: once each
    assert deduped_totals(keys) == expected_totals(N)
