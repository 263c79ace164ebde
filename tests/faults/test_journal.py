"""Nothing accepted is lost: a settle, release or batch event whose write failed is journaled and applies
once the fault clears, in the server that kept it or, after ``kill -9``, in the next one to start.

Every scenario checks what a seller and ZeroClick would see: the ledger's ``used`` equals the sum of
the usage headers of the successes plus the batch events delivered, and no event arrives twice.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.faults.journal_support import (
    ESTIMATE,
    PLANS,
    Held,
    Server,
    children,
    journal_files,
    server,
    used,
    wait_until,
    write_lock,
)
from tests.ledger.conftest import redis_cluster, redis_cluster_url, redis_server, redis_url  # noqa: F401 (fixtures)
from tests.postgres_db import admin, postgres_server, postgres_url  # noqa: F401  (fixtures)
from tests.reporter.helpers import KEY, BatchAPI, batch_api
from zc_middleware import ConfigError, ZeroClickSettings, open_ledger
from zc_middleware.decision import Allow
from zc_middleware.gate import Gate
from zc_middleware.journal import Write, line, parse
from zc_middleware.ledger import Hold
from zc_middleware.meters import Charge, MeterSpec
from zc_middleware.usage import Usage

SERVERS = ["uvicorn", "gunicorn"]
_ids = itertools.count()


@pytest.fixture(scope="module")
def api_server() -> Iterator[BatchAPI]:
    with batch_api() as api:
        yield api


def fault_env(tmp: Path, **extra: str) -> dict[str, str]:
    """A server on its own ledger file, with a short busy timeout and quick retries."""
    return {
        "ZEROCLICK_LEDGER": f"sqlite:///{tmp / 'ledger.db'}",
        "ZEROCLICK_SQLITE_BUSY_TIMEOUT": "0.3",
        "ZEROCLICK_RETRY_BACKOFF": "0.1",
        "ZEROCLICK_RETRY_BACKOFF_MAX": "0.5",
        "ZC_TEST_HOLD": str(tmp / "hold"),
        **extra,
    }


def entries(directory: Path) -> list[dict[str, object]]:
    """The journal entries not yet marked done, over every journal file in ``directory``."""
    found: list[dict[str, object]] = []
    for path in journal_files(directory):
        written, done = parse(path.read_bytes())
        found += [entry for entry in written if entry["id"] not in done]
    return found


def billed(response: httpx.Response) -> int:
    """The ``compute-seconds`` a response's usage header bills (0 without one)."""
    header = response.headers.get("x-zeroclick-usage", "")
    pairs = dict(part.strip().split("=") for part in header.split(",") if part.strip())
    return int(pairs.get("compute-seconds", 0))


def start(pool: ThreadPoolExecutor, base: str, path: str, buyer: str, request_id: str) -> Future[httpx.Response]:
    headers = {"zc-agent-id": buyer, "zc-request-id": request_id}
    return pool.submit(httpx.get, base + path, headers=headers, timeout=30)


@contextlib.contextmanager
def failing_writes(srv: Server, tmp: Path, buyer: str, run: int) -> Iterator[list[httpx.Response]]:
    """A 200 that bills 1 and a 502, whose handlers finish while another process holds the ledger's
    write lock; the block runs with the lock still held, after both writes were journaled."""
    db, held = tmp / "ledger.db", Held(tmp / "hold")
    with ThreadPoolExecutor(2) as pool:
        ok = start(pool, srv.base, "/work?units=1", buyer, f"ok-{run}")
        bad = start(pool, srv.base, "/broken", buyer, f"bad-{run}")
        assert wait_until(lambda: used(db, buyer) == 2 * ESTIMATE), "both requests hold their estimate"
        with write_lock(db):
            held.release()
            responses = [ok.result(), bad.result()]
            assert [r.status_code for r in responses] == [200, 502], srv.said()
            assert wait_until(lambda: len(entries(tmp)) == 2), srv.said()  # fsynced before the response completed
            assert used(db, buyer) == 2 * ESTIMATE  # nothing applied while the lock is held
            yield responses


@pytest.mark.parametrize("name", SERVERS)
def test_settles_a_lock_held_up_apply_once_it_clears(name: str, tmp_path: Path) -> None:
    buyer, run = f"lock-{name}", next(_ids)
    with server(name, fault_env(tmp_path), tmp_path / "server.log") as srv:
        with failing_writes(srv, tmp_path, buyer, run) as responses:
            assert [billed(r) for r in responses] == [1, 0]
        assert wait_until(lambda: used(tmp_path / "ledger.db", buyer) == 1), srv.said()
        assert wait_until(lambda: not entries(tmp_path)), "the journal is compacted once all applied"
    assert used(tmp_path / "ledger.db", buyer) == sum(billed(r) for r in responses)


@pytest.mark.parametrize("name", SERVERS)
def test_batch_events_of_a_locked_outbox_reach_the_api_once(name: str, tmp_path: Path, api_server: BatchAPI) -> None:
    api_server.configure()
    buyer, run = f"outbox-{name}", next(_ids)
    env = fault_env(tmp_path, ZC_TEST_BATCH_API=api_server.base, ZC_TEST_API_KEY=KEY)
    with server(name, env, tmp_path / "server.log") as srv:
        with failing_writes(srv, tmp_path, buyer, run) as responses:
            assert [billed(r) for r in responses] == [0, 0]  # compute-seconds leaves by the batch channel
            assert api_server.keys() == {}
        keys = api_server.wait_for(1)
        assert wait_until(lambda: used(tmp_path / "ledger.db", buyer) == 1), srv.said()
    assert set(keys) == {f"{buyer}:ok-{run}:compute-seconds"}
    assert [len(deliveries) for deliveries in api_server.keys().values()] == [1]
    assert used(tmp_path / "ledger.db", buyer) == sum(d[0]["quantity"] for d in keys.values())


@pytest.mark.parametrize("name", SERVERS)
def test_a_server_killed_during_the_fault_is_replayed_by_the_next_start(
    name: str, tmp_path: Path, api_server: BatchAPI
) -> None:
    api_server.configure()
    buyer, run = f"killed-{name}", next(_ids)
    db = tmp_path / "ledger.db"
    env = fault_env(tmp_path, ZC_TEST_BATCH_API=api_server.base, ZC_TEST_API_KEY=KEY)
    srv = Server(name, env, tmp_path / "server.log")
    try:
        with failing_writes(srv, tmp_path, buyer, run):
            srv.kill()  # kill -9, master and workers, while the writes are only in the journal
    finally:
        if srv.proc.poll() is None:
            srv.kill()
    assert used(db, buyer) == 2 * ESTIMATE and len(entries(tmp_path)) == 2
    with server(name, env, tmp_path / "restart.log") as again:
        assert wait_until(lambda: used(db, buyer) == 1), again.said()
        keys = api_server.wait_for(1)
        assert wait_until(lambda: not journal_files(tmp_path)), "the dead server's journal is removed once replayed"
    assert set(keys) == {f"{buyer}:ok-{run}:compute-seconds"}
    assert [len(deliveries) for deliveries in api_server.keys().values()] == [1]
    assert used(db, buyer) == sum(d[0]["quantity"] for d in keys.values())


@contextlib.contextmanager
def unwritable(path: Path, how: str) -> Iterator[None]:
    """``path``, a directory, on a tmpfs that is read-only or full (skipped where ``mount`` is refused)."""
    path.mkdir()
    options = "ro,size=64k" if how == "read-only" else "size=64k"
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        if how == "full":
            with contextlib.suppress(OSError), (path / "filler").open("wb") as filler:
                while True:
                    filler.write(b"\0" * 4096)
                    filler.flush()
        yield
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.mark.parametrize("how", ["read-only", "full"])
def test_a_journal_that_cannot_be_written_keeps_the_writes_in_memory(how: str, tmp_path: Path) -> None:
    buyer, run = f"nojournal-{how}", next(_ids)
    journal = tmp_path / "journal"
    with unwritable(journal, how):
        env = fault_env(tmp_path, ZEROCLICK_JOURNAL_DIR=str(journal))
        db, held = tmp_path / "ledger.db", Held(tmp_path / "hold")
        with server("uvicorn", env, tmp_path / "server.log") as srv, ThreadPoolExecutor(2) as pool:
            ok = start(pool, srv.base, "/work?units=1", buyer, f"ok-{run}")
            bad = start(pool, srv.base, "/broken", buyer, f"bad-{run}")
            assert wait_until(lambda: used(db, buyer) == 2 * ESTIMATE)
            with write_lock(db):
                held.release()
                assert [ok.result().status_code, bad.result().status_code] == [200, 502]
                # the amounts are in the log, which is not the only place they live
                assert wait_until(lambda: srv.said().count("could not write the journal") == 2), srv.said()
                assert "used {'compute-seconds': 1}" in srv.said()
            assert wait_until(lambda: used(db, buyer) == 1), srv.said()
        assert used(db, buyer) == billed(ok.result())


# -- in one process: replays, torn lines, compaction -----------------------------------------------------
def _gate(tmp: Path) -> Gate:
    return Gate(ZeroClickSettings(meters={"compute-seconds": {}}, plans=PLANS, ledger=f"sqlite:///{tmp / 'l.db'}"))


def _used(gate: Gate, buyer: str) -> int:
    return next(m.used for m in gate.ledger.balance(buyer).meters if m.meter == "compute-seconds")


def _entry(entry_id: str, hold: Hold, used: int) -> bytes:
    return line(
        {"id": entry_id, "hold": {"buyer": hold.buyer, "debits": hold.debits}, "used": {"compute-seconds": used}}
    )


def _held(gate: Gate, buyer: str) -> Hold:
    hold = gate.ledger.reserve(buyer, {"compute-seconds": ESTIMATE})
    assert isinstance(hold, Hold)
    return hold


def test_a_replay_after_a_crash_between_applied_and_marked_done_applies_nothing(tmp_path: Path) -> None:
    gate = _gate(tmp_path)
    hold = _held(gate, "b")
    # a dead process's journal: its entry applied, but the process died before marking it done
    (tmp_path / f"{gate.journal.prefix}dead-1.jsonl").write_bytes(_entry("applied-1", hold, 4))
    assert gate.ledger.adjust_once("applied-1", hold, {"compute-seconds": 4}) is True
    assert _used(gate, "b") == 4
    replaying = _gate(tmp_path)
    assert replaying.journal.pending == 1
    assert replaying.journal.retry() == (0, True)
    assert _used(replaying, "b") == 4  # not 4 - 26 again
    assert not journal_files(tmp_path)  # replayed: removed
    gate.close()
    replaying.close()


def test_a_torn_last_line_is_skipped_and_a_live_process_file_is_left_alone(tmp_path: Path) -> None:
    gate = _gate(tmp_path)
    dead, mine = _held(gate, "t"), _held(gate, "t")
    torn = _entry("two", dead, 2)[:-9]
    (tmp_path / f"{gate.journal.prefix}dead-2.jsonl").write_bytes(_entry("one", dead, 1) + torn)
    (tmp_path / "zc-journal-0123456789-other-ledger.jsonl").write_bytes(_entry("three", dead, 3))
    with write_lock(tmp_path / "l.db"):  # this process's own write fails: its file is created and locked
        gate.journal.keep(Write(mine, {"compute-seconds": 9}), RuntimeError("database is locked"))
    own = [p for p in journal_files(tmp_path) if "dead" not in p.name]
    other = _gate(tmp_path)  # starts while the first lives: takes over the dead file only
    assert other.journal.pending == 1  # "one"; "two" was torn
    assert own[0].exists()
    other.journal.retry()
    assert wait_until(lambda: _used(gate, "t") == 1 + 9)
    gate.close()
    other.close()
    # another ledger's journal is left for that ledger
    assert [p.name for p in journal_files(tmp_path)] == ["zc-journal-0123456789-other-ledger.jsonl"]


def test_writes_that_apply_leave_no_journal_behind(tmp_path: Path) -> None:
    gate = _gate(tmp_path)
    hold = _held(gate, "c")
    with write_lock(tmp_path / "l.db"):
        gate.journal.keep(Write(hold, {"compute-seconds": 2}), RuntimeError("database is locked"))
        assert len(entries(tmp_path)) == 1
        assert gate.journal.pending == 1
    assert wait_until(lambda: _used(gate, "c") == 2)
    assert wait_until(lambda: not entries(tmp_path))
    assert [p.stat().st_size for p in journal_files(tmp_path)] == [0]  # compacted
    gate.close()
    assert not journal_files(tmp_path)


# -- every backend applies a journaled write at most once -------------------------------------------------
@pytest.fixture(params=["memory", "sqlite", "redis", "redis-cluster", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param.startswith("redis"):
        return str(request.getfixturevalue(request.param.replace("-", "_") + "_url"))
    if request.param == "postgresql":
        return str(request.getfixturevalue("postgres_url"))
    return "memory://" if request.param == "memory" else f"sqlite:///{tmp_path / 'ledger.db'}"


def test_adjust_once_applies_an_entry_once_even_from_another_process(store_url: str) -> None:
    ledger = open_ledger(store_url, plans=PLANS)
    try:
        first, second = (ledger.reserve("once", {"compute-seconds": ESTIMATE}) for _ in range(2))
        assert isinstance(first, Hold) and isinstance(second, Hold)
        assert ledger.adjust_once("entry-1", first, {"compute-seconds": 4}) is True
        assert ledger.adjust_once("entry-1", first, {"compute-seconds": 4}) is False
        assert ledger.adjust_once("entry-2", second, {}) is True  # a release
        assert ledger.balance("once").meter("compute-seconds").used == 4
        if not store_url.startswith("memory"):  # the id is in the store: a restarted process sees it
            again = open_ledger(store_url, plans=PLANS)
            try:
                assert again.adjust_once("entry-1", first, {"compute-seconds": 4}) is False
                assert again.balance("once").meter("compute-seconds").used == 4
            finally:
                again.close()
    finally:
        ledger.close()


def test_shutdown_tries_once_more_and_leaves_the_rest_for_the_next_start(tmp_path: Path) -> None:
    gate = _gate(tmp_path)
    hold = _held(gate, "s")
    with write_lock(tmp_path / "l.db"):
        gate.journal.keep(Write(hold, {"compute-seconds": 3}), RuntimeError("database is locked"))
        assert gate.journal.close() == 1  # still locked: kept
    gate.ledger.close()
    assert len(entries(tmp_path)) == 1
    assert _used(_gate(tmp_path), "s") == ESTIMATE
    assert wait_until(lambda: not entries(tmp_path))  # the next start replayed it
    assert _used(_gate(tmp_path), "s") == 3


def test_a_line_the_full_disk_cut_short_is_cut_off_so_the_next_one_reads(tmp_path: Path) -> None:
    settings = ZeroClickSettings(
        meters={"compute-seconds": {}}, plans=PLANS, ledger=f"sqlite:///{tmp_path / 'l.db'}", sqlite_busy_timeout=0.05
    )
    gate = Gate(settings)
    hold = _held(gate, "f")
    journal = tmp_path / "journal"
    with unwritable(journal, "full"), write_lock(tmp_path / "l.db"):
        (journal / "filler").unlink()
        gate.journal.directory = str(journal)
        kept = 0
        gate.journal.keep(Write(hold, {"compute-seconds": 1}), RuntimeError("database is locked"))
        with (journal / "filler").open("wb", buffering=0) as filler, contextlib.suppress(OSError):
            while True:  # full again: only the rest of the journal's last page is left
                filler.write(b"\0" * 512)
                filler.flush()
        while not gate.stats["journal_errors"]:  # the line that crosses into a page the disk has not
            gate.journal.keep(Write(hold, {"compute-seconds": 1}), RuntimeError("database is locked"))
            kept += 1
        (journal / "filler").unlink()
        gate.journal.keep(Write(hold, {"compute-seconds": 1}), RuntimeError("database is locked"))
        assert len(entries(journal)) == 1 + kept - 1 + 1  # every whole line reads; the cut one is gone
        gate.journal.close()
    gate.ledger.close()


def test_a_settle_whose_postgresql_connections_ended_applies_on_retry(
    postgres_url: str,  # noqa: F811  (the fixture)
    tmp_path: Path,
) -> None:
    """A networked store out of reach for a moment (every connection ended, as by a server restart)."""
    settings = ZeroClickSettings(
        meters={"compute-seconds": {}}, plans=PLANS, ledger=postgres_url, journal_dir=str(tmp_path)
    )
    gate = Gate(settings)
    try:
        charge = Charge.build([MeterSpec.make("compute-seconds", None, ESTIMATE)], known=frozenset({"compute-seconds"}))
        usage = Usage()
        assert isinstance(gate.check_buyer("pg", lambda name: None, charge, usage), Allow)
        usage.add("compute-seconds", 4)
        conn = admin()
        conn.execute(  # type: ignore[attr-defined]
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (postgres_url.rsplit("/", 1)[1],),
        )
        conn.close()  # type: ignore[attr-defined]
        gate.finish(usage, success=True)
        assert gate.stats["journaled"] == 1 and len(entries(tmp_path)) == 1
        assert wait_until(lambda: gate.ledger.balance("pg").meter("compute-seconds").used == 4)
        assert wait_until(lambda: not entries(tmp_path))
    finally:
        gate.close()


_REPLAYER = """
import sys, time
from collections import Counter
from zc_middleware import open_ledger
from zc_middleware.journal import Journal
from tests.faults.journal_support import PLANS
ledger = open_ledger(sys.argv[1], plans=PLANS)
journal = Journal(sys.argv[2], ledger=ledger, reporter=None, tally=Counter())
while time.time() < float(sys.argv[3]):  # start together
    time.sleep(0.001)
print(journal.start(), flush=True)
time.sleep(1)  # the other process starts meanwhile
journal.retry()
journal.close()
ledger.close()
"""


def test_two_processes_starting_at_once_replay_a_dead_file_once(tmp_path: Path) -> None:
    gate = _gate(tmp_path)
    holds = [_held(gate, "twice") for _ in range(5)]
    dead = b"".join(_entry(f"dead-{i}", hold, 1) for i, hold in enumerate(holds))
    (tmp_path / f"{gate.journal.prefix}dead-3.jsonl").write_bytes(dead)
    at = str(time.time() + 1.5)
    url = f"sqlite:///{tmp_path / 'l.db'}"
    procs = [
        subprocess.Popen([sys.executable, "-c", _REPLAYER, url, str(tmp_path), at], stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    adopted = sorted(int(proc.communicate(timeout=60)[0].strip()) for proc in procs)
    assert adopted == [0, 5], adopted
    assert _used(gate, "twice") == 5
    assert not journal_files(tmp_path)
    gate.close()


def test_a_gunicorn_worker_killed_during_the_fault_is_replayed_by_the_worker_that_replaces_it(
    tmp_path: Path, api_server: BatchAPI
) -> None:
    api_server.configure()
    buyer, run = "worker", next(_ids)
    db = tmp_path / "ledger.db"
    env = fault_env(tmp_path, ZC_TEST_BATCH_API=api_server.base, ZC_TEST_API_KEY=KEY)
    with server("gunicorn", env, tmp_path / "server.log") as srv:
        [worker] = children(srv.proc.pid)
        with failing_writes(srv, tmp_path, buyer, run):
            os.kill(worker, signal.SIGKILL)  # the master lives on and starts another worker
        assert wait_until(lambda: children(srv.proc.pid) not in ([], [worker])), srv.said()
        assert wait_until(lambda: used(db, buyer) == 1), srv.said()
        keys = api_server.wait_for(1)
        assert wait_until(lambda: not journal_files(tmp_path)), "the dead worker's journal is removed once replayed"
    assert set(keys) == {f"{buyer}:ok-{run}:compute-seconds"}
    assert [len(deliveries) for deliveries in api_server.keys().values()] == [1]
    assert used(db, buyer) == sum(d[0]["quantity"] for d in keys.values())


def test_a_journal_dir_that_does_not_exist_is_a_configuration_error(tmp_path: Path) -> None:
    settings = ZeroClickSettings(
        meters={"compute-seconds": {}},
        plans=PLANS,
        ledger=f"sqlite:///{tmp_path / 'l.db'}",
        journal_dir=str(tmp_path / "nowhere"),
    )
    with pytest.raises(ConfigError) as caught:
        Gate(settings)
    assert caught.value.code == "invalid_journal_dir"
    assert str(tmp_path / "nowhere") in str(caught.value)
