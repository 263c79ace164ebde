"""What the ``postgresql://`` stores add to the contract: one transaction with the outbox, async
callers, crowds, and a server that goes away, is unreachable at start-up, or refuses to create tables."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.ledger.test_contract import PLANS
from tests.postgres_db import ADMIN, postgres_server, postgres_url  # noqa: F401  (fixtures)
from zc_middleware import ConfigError, open_ledger
from zc_middleware.ledger import Hold, Ledger, Refusal
from zc_middleware.outbox import Event, Outbox, make_event, open_outbox

psycopg = pytest.importorskip("psycopg", reason="psycopg not installed: pip install -e '.[postgres]'")
#: crowds check that exactly the limit is granted, not how fast: a shared test machine may queue them for long
CROWD_TIMEOUT = 10.0
CROWD = {"crowd": {"default": True, "includes": {"api-requests": {"limit": 50, "reset": "month"}}}}


def events(*keys: str, quantity: int = 3) -> list[Event]:
    return [
        make_event(user_id="b", meter="compute-seconds", quantity=quantity, idempotency_key=key, clock=lambda: 0.0)
        for key in keys
    ]


@pytest.fixture
def ledger(postgres_url: str) -> Iterator[Ledger]:  # noqa: F811
    led = open_ledger(postgres_url, plans=PLANS)
    yield led
    led.close()


@pytest.fixture
def outbox(postgres_url: str) -> Iterator[Outbox]:  # noqa: F811
    box = open_outbox(postgres_url)
    yield box
    box.close()


def admin(sql: str, *params: object) -> None:
    with psycopg.connect(ADMIN, autocommit=True) as conn:
        conn.execute(sql, params)


def database(url: str) -> str:
    return url.rsplit("/", 1)[1]


def terminate(url: str) -> None:
    """End every connection to the tests' database, as a server restart or a failover would."""
    admin(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
        database(url),
    )


def used(ledger: Ledger, meter: str = "compute-seconds") -> int:
    return ledger.balance("b").meter(meter).used


def test_one_database_joins_and_commits_both(ledger: Ledger, outbox: Outbox, postgres_url: str) -> None:  # noqa: F811
    assert ledger.joins(outbox)
    other = open_ledger(postgres_url.replace("postgresql://", "postgres://"), plans=PLANS)
    assert other.joins(outbox)  # the same database under libpq's other scheme name
    other.close()
    hold = ledger.reserve("b", {"compute-seconds": 30})
    assert isinstance(hold, Hold)
    assert ledger.adjust_with_events(hold, {"compute-seconds": 4}, outbox, events("a", "b")) == 2
    assert used(ledger) == 4
    assert [r.key for r in outbox.lease("me", 10, 30)] == ["a", "b"]


def test_a_failing_insert_rolls_the_settle_back_too(ledger: Ledger, outbox: Outbox, postgres_url: str) -> None:  # noqa: F811
    hold = ledger.reserve("b", {"compute-seconds": 30})
    assert isinstance(hold, Hold)
    with psycopg.connect(postgres_url, autocommit=True) as conn:  # another process made the outbox refuse rows
        conn.execute("ALTER TABLE zeroclick_outbox ADD CONSTRAINT refuse CHECK (false) NOT VALID")
        with pytest.raises(psycopg.errors.CheckViolation):
            ledger.adjust_with_events(hold, {"compute-seconds": 4}, outbox, events("a"))
        assert used(ledger) == 30  # the debit was not moved either
        conn.execute("ALTER TABLE zeroclick_outbox DROP CONSTRAINT refuse")
    assert outbox.status().pending == 0
    ledger.settle(hold, {"compute-seconds": 4})
    assert used(ledger) == 4


def test_the_async_pool_commits_both_or_neither(ledger: Ledger, outbox: Outbox, postgres_url: str) -> None:  # noqa: F811
    async def settle(hold: Hold, key: str) -> int:
        return await ledger.aadjust_with_events(hold, {"compute-seconds": 4}, outbox, events(key))

    hold, other = ledger.reserve("b", {"compute-seconds": 30}), ledger.reserve("b", {"compute-seconds": 30})
    assert isinstance(hold, Hold) and isinstance(other, Hold)
    assert asyncio.run(settle(hold, "a")) == 1
    assert used(ledger) == 34  # 4 settled, 30 still held
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("ALTER TABLE zeroclick_outbox ADD CONSTRAINT refuse CHECK (false) NOT VALID")
        with pytest.raises(psycopg.errors.CheckViolation):
            asyncio.run(settle(other, "b"))
        conn.execute("ALTER TABLE zeroclick_outbox DROP CONSTRAINT refuse")
    assert used(ledger) == 34  # the debit rolled back with the insert
    assert [r.key for r in outbox.lease("me", 10, 30)] == ["a"]


def test_a_sqlite_outbox_does_not_join(ledger: Ledger, tmp_path: object) -> None:
    box = open_outbox(f"sqlite:///{tmp_path}/outbox.db")
    assert not ledger.joins(box)
    box.close()


def test_async_tasks_hammering_one_buyer_get_exactly_the_limit(postgres_url: str) -> None:  # noqa: F811
    led = open_ledger(postgres_url, plans=CROWD, timeout=CROWD_TIMEOUT)

    async def crowd() -> list[Hold | Refusal]:
        return await asyncio.gather(*(led.areserve("crowd", {"api-requests": 1}) for _ in range(200)))

    try:
        results = asyncio.run(crowd())
        holds = [r for r in results if isinstance(r, Hold)]
        assert len(holds) == 50
        asyncio.run(led.aadjust(holds[0], {}))  # a release, on another event loop
        assert led.balance("crowd").meter("api-requests").used == 49
    finally:
        led.close()


def test_threads_hammering_one_buyer_get_exactly_the_limit(postgres_url: str) -> None:  # noqa: F811
    led = open_ledger(postgres_url, plans=CROWD, timeout=CROWD_TIMEOUT)
    results: list[Hold | Refusal] = []
    barrier = threading.Barrier(64)

    def worker() -> None:
        barrier.wait()
        for _ in range(4):
            results.append(led.reserve("crowd", {"api-requests": 1}))

    threads = [threading.Thread(target=worker) for _ in range(64)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sum(isinstance(r, Hold) for r in results) == 50
        assert led.balance("crowd").meter("api-requests").used == 50
    finally:
        led.close()


def test_connections_ended_by_the_server_fail_fast_and_come_back(ledger: Ledger, postgres_url: str) -> None:  # noqa: F811
    assert isinstance(ledger.reserve("b", {"api-requests": 1}), Hold)
    terminate(postgres_url)
    outcomes = []
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        start = time.monotonic()
        try:
            outcomes.append(ledger.reserve("b", {"api-requests": 1}))
        except Exception as exc:
            outcomes.append(exc)
            assert time.monotonic() - start < 1.5  # within the 0.5 s timeout, give or take a busy machine
        if isinstance(outcomes[-1], Hold):
            break
    assert isinstance(outcomes[-1], Hold), outcomes  # the pool replaced its connections by itself


def test_after_connections_are_ended_one_call_fails_and_then_none(postgres_url: str) -> None:  # noqa: F811
    """A restart or failover ends every connection, the idle ones too: only the call that finds out
    fails, not one more call per connection that was idle in the pool."""
    led = open_ledger(postgres_url, plans=CROWD, timeout=CROWD_TIMEOUT)
    gate = threading.Barrier(4)

    def reserve(_: object = None) -> str:
        try:
            return type(led.reserve("b", {"api-requests": 1})).__name__
        except psycopg.OperationalError as exc:
            return type(exc).__name__

    def together(_: object) -> str:
        gate.wait()
        return reserve()

    async def areserve() -> str:
        try:
            return type(await led.areserve("b", {"api-requests": 1})).__name__
        except psycopg.OperationalError as exc:
            return type(exc).__name__

    async def crowd_after_an_end() -> list[str]:
        await asyncio.gather(*(areserve() for _ in range(4)))  # four connections in the async pool
        terminate(postgres_url)
        return [await areserve(), *await asyncio.gather(*(areserve() for _ in range(4)))]

    try:
        with ThreadPoolExecutor(4) as threads:
            list(threads.map(together, range(4)))  # four connections in the sync pool
            terminate(postgres_url)
            sync = [reserve(), *threads.map(together, range(4))]
        answers = asyncio.run(crowd_after_an_end())
    finally:
        led.close()
    assert sync[0] == answers[0] == "AdminShutdown"
    assert sync[1:] == answers[1:] == ["Hold"] * 4


def test_an_unreachable_server_fails_within_the_timeout_then_recovers(postgres_url: str) -> None:  # noqa: F811
    led = open_ledger(postgres_url, plans=PLANS, timeout=0.5)
    name = database(postgres_url)
    try:
        assert isinstance(led.reserve("b", {"api-requests": 1}), Hold)
        admin(f"ALTER DATABASE {name} ALLOW_CONNECTIONS false")
        terminate(postgres_url)
        for _ in range(3):
            start = time.monotonic()
            with pytest.raises(Exception):  # noqa: B017  (the Gate answers 503 to any ledger error)
                led.reserve("b", {"api-requests": 1})
            assert time.monotonic() - start < 1.5
    finally:
        admin(f"ALTER DATABASE {name} ALLOW_CONNECTIONS true")
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                assert isinstance(led.reserve("b", {"api-requests": 1}), Hold)
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
    finally:
        led.close()


def test_an_unreachable_server_at_start_up_names_the_url_without_its_password() -> None:
    with pytest.raises(ConfigError) as info:
        open_ledger("postgresql://zc:s3cret@127.0.0.1:1/zc", plans=PLANS)
    assert info.value.code == "cannot_open_ledger"
    assert "postgresql://zc:***@127.0.0.1:1/zc" in str(info.value)
    assert "s3cret" not in str(info.value)


def test_a_user_who_may_not_create_tables_is_told_at_start_up(postgres_url: str) -> None:  # noqa: F811
    role = f"zc_test_{uuid.uuid4().hex[:8]}"
    admin(f"CREATE ROLE {role} LOGIN")
    try:
        url = postgres_url.replace("postgres@", f"{role}@")
        with pytest.raises(ConfigError, match=f"{role} may not create the zeroclick_ tables"):
            open_ledger(url, plans=PLANS)
        with pytest.raises(ConfigError, match="may not create"):
            open_outbox(url)
    finally:
        admin(f"DROP ROLE {role}")


def test_admin_commands_never_start_an_empty_store(postgres_url: str) -> None:  # noqa: F811
    with pytest.raises(ConfigError, match="no ledger"):
        open_ledger(postgres_url, plans=PLANS, create=False)
    open_ledger(postgres_url, plans=PLANS).close()
    open_ledger(postgres_url, plans=PLANS, create=False).close()
    with pytest.raises(ConfigError, match="no outbox"):
        open_outbox(postgres_url, create=False)
    open_outbox(postgres_url).close()
    open_outbox(postgres_url, create=False).close()


def test_a_bad_url_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="is not a PostgreSQL URL"):
        open_ledger("postgresql://u@host/db?colour=blue", plans=PLANS)


def test_without_psycopg_the_error_names_the_extra() -> None:
    code = (
        "import sys\nsys.modules['psycopg'] = None\nfrom zc_middleware import open_ledger\n"
        "open_ledger('postgresql://u@h/db', plans={})\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "pip install 'zc-middleware[postgres]'" in result.stderr
    assert "During handling" not in result.stderr


HOST = """
import sys
from zc_middleware import open_ledger
from zc_middleware.ledger import Hold
plans = {"crowd": {"default": True, "includes": {"api-requests": {"limit": 50, "reset": "month"}}}}
led = open_ledger(sys.argv[1], plans=plans, timeout=10.0)
print(sum(isinstance(led.reserve("crowd", {"api-requests": 1}), Hold) for _ in range(40)))
led.close()
"""


def test_hosts_sharing_the_database_grant_exactly_the_limit_between_them(postgres_url: str) -> None:  # noqa: F811
    open_ledger(postgres_url, plans=CROWD).close()  # the tables, before the hosts race to create them
    hosts = [
        subprocess.Popen([sys.executable, "-c", HOST, postgres_url], stdout=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    granted = [int(host.communicate(timeout=60)[0]) for host in hosts]
    assert sum(granted) == 50, granted


def test_workers_starting_together_on_an_empty_database_all_start(postgres_url: str) -> None:  # noqa: F811
    """Every worker of a server creates the tables if they are missing, all at the same moment on the
    first deploy: ``CREATE TABLE IF NOT EXISTS`` run at once in two sessions can fail in one of them."""
    barrier = threading.Barrier(8)

    def start(_: int) -> None:
        barrier.wait()
        open_ledger(postgres_url, plans=PLANS).close()
        open_outbox(postgres_url).close()

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(start, range(8)))  # re-raises the first ConfigError of a worker that failed to start
