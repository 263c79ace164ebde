"""The batch sender in this process against a real local batch API (uvicorn subprocess)."""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from tests.reporter.helpers import KEY, BatchAPI, assert_payloads_unchanged, deduped_totals, poll
from tests.servers import free_port
from zc_middleware import ZcError, ZeroClickSettings, report_usage
from zc_middleware.errors import ConfigError
from zc_middleware.outbox import make_event, open_outbox
from zc_middleware.reporter import Reporter, retry_after

T0 = datetime(2026, 6, 12, 9, 30, tzinfo=timezone.utc)
BUYERS = ["user-a", "user-b", "user-c"]
METERS = ["compute-seconds", "tokens"]


@pytest.fixture
def outbox_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'outbox.db'}"


@pytest.fixture
def make_reporter(outbox_url: str, api: BatchAPI) -> Iterator[object]:
    made: list[Reporter] = []

    def make(**kw: object) -> Reporter:
        options: dict[str, object] = {
            "api_key": KEY,
            "base_url": api.base,
            "flush_interval": 0.05,
            "timeout": 0.5,
            "backoff": 0.02,
            "backoff_max": 0.3,
            "shutdown_timeout": 5.0,
            **kw,
        }
        outbox = open_outbox(str(options.pop("url", outbox_url)))
        try:
            reporter = Reporter(outbox, **options)  # type: ignore[arg-type]
        except Exception:
            outbox.close()  # a refused configuration: the reporter never owned it
            raise
        made.append(reporter)
        return reporter

    yield make
    for reporter in made:
        reporter.close(timeout=2)
        reporter.outbox.close()


def load(reporter: Reporter, n: int, prefix: str = "job") -> Counter[tuple[str, str]]:
    expected: Counter[tuple[str, str]] = Counter()
    for i in range(n):
        buyer, meter, qty = BUYERS[i % 3], METERS[i % 2], i % 11 + 1
        reporter.report(
            user_id=buyer, meter=meter, quantity=qty, idempotency_key=f"{prefix}-{i}", timestamp=T0 + timedelta(i)
        )
        expected[buyer, meter] += qty
    return expected


def test_delivers_the_contract_body(api: BatchAPI, make_reporter) -> None:
    reporter = make_reporter()
    assert reporter.report(user_id="user_8f3kz1", meter="compute-seconds", quantity=42,
                           idempotency_key="job-7841-completed", timestamp=T0)  # fmt: skip
    keys = api.wait_for(1)
    assert keys == {
        "job-7841-completed": [
            {
                "userId": "user_8f3kz1",
                "meter": "compute-seconds",
                "quantity": 42,
                "timestamp": "2026-06-12T09:30:00Z",
                "idempotencyKey": "job-7841-completed",
            }
        ]
    }
    poll(lambda: reporter.counters["sent"], lambda sent: sent == 1, 5)
    assert (reporter.counters["queued"], reporter.counters["sent"], reporter.counters["dead"]) == (1, 1, 0)


def test_thirty_percent_failures_lose_nothing_and_change_nothing(api: BatchAPI, make_reporter) -> None:
    api.configure(fail=0.3, modes=["503", "429", "hang"], retry_after="1", hang=0.8, seed=7)
    reporter = make_reporter(batch_size=100)
    expected = load(reporter, 2000)
    keys = api.wait_for(2000, timeout=18)
    assert len(keys) == 2000
    assert_payloads_unchanged(keys)
    assert deduped_totals(keys) == expected
    state = api.state()
    assert state["statuses"].get("503", 0) and state["statuses"].get("429", 0) and state["statuses"].get("hang", 0)
    assert reporter.counters["retried"] > 0
    assert poll(lambda: reporter.outbox.status().pending, lambda pending: pending == 0, 5) == 0


def test_no_batch_exceeds_1000(api: BatchAPI, make_reporter) -> None:
    with pytest.raises(ConfigError):
        make_reporter(batch_size=1001)
    reporter = make_reporter(flush_interval=30)  # only full batches wake it; close() sends the rest
    load(reporter, 2500)
    keys = api.wait_for(2000)
    assert len(keys) >= 2000
    assert reporter.close(timeout=10)
    sizes = api.state()["sizes"]
    assert max(sizes) == 1000
    assert sum(sizes) == 2500


def test_an_invalid_event_does_not_block_the_ones_behind_it(api: BatchAPI, make_reporter) -> None:
    reporter = make_reporter(flush_interval=30)
    good = load(reporter, 300, "a")
    reporter.report(user_id="reject-me", meter="tokens", quantity=1, idempotency_key="poison", timestamp=T0)
    good += load(reporter, 300, "b")
    assert reporter.close(timeout=10)
    keys = api.keys()
    assert len(keys) == 600 and "poison" not in keys
    assert deduped_totals(keys) == good
    status = reporter.outbox.status()
    assert (status.pending, status.dead) == (0, 1)
    assert status.dead_letters[0].key == "poison"
    assert "422" in status.dead_letters[0].reason and "unknown user reject-me" in status.dead_letters[0].reason
    assert reporter.counters["dead"] == 1
    assert max(api.state()["sizes"]) <= 601


def test_wrong_key_keeps_every_event_and_says_so(
    api: BatchAPI, make_reporter, outbox_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="zc_middleware")
    wrong = make_reporter(api_key="not-the-key")
    load(wrong, 5)
    poll(lambda: wrong.counters["auth_failures"], bool, 5)
    assert not wrong.close(timeout=0.5)
    assert wrong.outbox.status().pending == 5
    assert any("rejected the service API key" in r.getMessage() and r.levelno == logging.ERROR for r in caplog.records)
    assert all("not-the-key" not in r.getMessage() for r in caplog.records)
    assert "not-the-key" not in repr(wrong)
    fixed = make_reporter()  # the same outbox file, the right key: nothing was lost
    fixed.start()
    assert len(api.wait_for(5)) == 5


def test_close_is_bounded_when_the_api_is_unreachable(make_reporter) -> None:
    reporter = make_reporter(base_url=f"http://127.0.0.1:{free_port()}", backoff=0.01, backoff_max=0.05)
    load(reporter, 10)
    started = time.monotonic()
    assert not reporter.close(timeout=1.0)
    assert time.monotonic() - started < 2.5
    assert reporter.outbox.status().pending == 10
    assert reporter.counters["retried"] > 0


def test_report_usage_public_function(api: BatchAPI, outbox_url: str) -> None:
    settings = ZeroClickSettings(
        meters={"compute-seconds": {"channel": "batch"}},
        ledger="memory://",
        outbox=outbox_url,
        api_key=KEY,
        api_base_url=api.base,
        flush_interval=0.05,
    )
    kwargs = {"user_id": "u1", "meter": "compute-seconds", "idempotency_key": "job-1", "settings": settings}
    assert report_usage(quantity=42, **kwargs) is True  # type: ignore[arg-type]
    assert report_usage(quantity=42, **kwargs) is False  # type: ignore[arg-type]  # same payload: no-op
    with pytest.raises(ZcError) as info:
        report_usage(quantity=43, **kwargs)  # type: ignore[arg-type]
    assert info.value.code == "idempotency_conflict"
    for bad, code in [({"quantity": -1}, "invalid_quantity"), ({"quantity": True}, "invalid_quantity"),
                      ({"quantity": float("nan")}, "invalid_quantity"), ({"quantity": 10**20}, "invalid_quantity"),
                      ({"quantity": 1, "meter": "unknown"}, "unknown_meter"),
                      ({"quantity": 1, "idempotency_key": ""}, "invalid_idempotency_key"),
                      ({"quantity": 1, "timestamp": datetime(2026, 1, 1)}, "naive_datetime")]:  # fmt: skip
        with pytest.raises(ZcError) as info:
            report_usage(**{**kwargs, "idempotency_key": "other", **bad})  # type: ignore[arg-type]
        assert info.value.code == code
    keys = api.wait_for(1)
    assert list(keys) == ["job-1"] and keys["job-1"][0]["quantity"] == 42
    from zc_middleware.reporter import get_reporter

    reporter = get_reporter(settings)
    assert reporter.outbox.status().pending == 0 or reporter.flush(5)
    reporter.close(timeout=2)


def test_retry_after_parsing() -> None:
    assert retry_after("2") == 2
    assert retry_after("0.5") == 0.5
    assert retry_after("garbage") is None
    assert retry_after(None) is None
    assert retry_after("-5") == 0
    assert retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0  # in the past
    assert (
        9
        <= retry_after("Thu, 01 Jan 2026 00:00:10 GMT", now=datetime(2026, 1, 1, tzinfo=timezone.utc).timestamp())
        <= 10
    )  # type: ignore[operator]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_gets_its_own_sender(api: BatchAPI, make_reporter) -> None:
    reporter = make_reporter()
    load(reporter, 3, "parent")
    api.wait_for(3)
    # The parent's sender stops first: both processes lease from one outbox file, and a parent thread
    # still running could deliver the child's event before the child's own sender does.
    assert reporter.close(timeout=5)
    pid = os.fork()
    if pid == 0:  # the child: the parent's thread did not survive the fork; a new one must start
        code = 1
        try:
            child_event = make_event(user_id="kid", meter="tokens", quantity=1, idempotency_key="child", timestamp=T0)
            reporter.enqueue([child_event])
            assert reporter._thread is not None and reporter._thread.is_alive()
            code = 0 if reporter.flush(5) else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert "child" in api.wait_for(4)
