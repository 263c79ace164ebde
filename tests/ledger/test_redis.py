"""What the ``redis://`` ledger adds to the contract: URLs, key layout, leases, crowds, outages."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.ledger.test_contract import PLANS, Clock
from zc_middleware import ConfigError, Gate, Usage, ZeroClickSettings, metered
from zc_middleware.decision import Deny
from zc_middleware.ledger import Hold, Refusal, open_ledger

from .redis_servers import SERVER, RedisServer, free_port

redis = pytest.importorskip("redis", reason="redis-py is not installed (pip install 'zc-middleware[redis]')")

ONE = {"solo": {"default": True, "includes": {"api-requests": {"limit": 50, "reset": "month"}}}}


@pytest.fixture
def own_server(redis_server: RedisServer, tmp_path: Path) -> Iterator[RedisServer]:
    """A server of this test's own, which it may stop, pause and restart."""
    server = RedisServer(tmp_path).start()
    yield server
    if server.process is not None:
        server.process.send_signal(signal.SIGCONT)
    server.stop()


def raw(url: str) -> redis.Redis:
    port = int(url.split(":")[2].split("/")[0])
    return redis.Redis(port=port, decode_responses=True)


def test_keys_start_with_the_prefix_and_share_one_hash_slot(redis_url: str) -> None:
    ledger = open_ledger(redis_url, plans=PLANS)
    prefix = redis_url.split("prefix=")[1]
    client = raw(redis_url)
    try:
        for buyer in ("agent-1", "odd}{buyer", "{x}"):
            assert isinstance(ledger.reserve(buyer, {"api-requests": 1, "compute-seconds": 2}), Hold)
            keys = client.keys(f"{prefix}*")
            mine = [k for k in keys if k in ledger.keys(buyer)]  # type: ignore[attr-defined]
            assert len(mine) == 3
            slots = {redis.cluster.key_slot(k.encode()) for k in ledger.keys(buyer)}  # type: ignore[attr-defined]
            assert len(slots) == 1
        assert all(k.startswith(prefix) for k in client.keys(f"{prefix}*"))
    finally:
        ledger.close()
        client.close()


def test_limits_come_from_the_settings_of_each_call(redis_url: str) -> None:
    small = open_ledger(redis_url, plans=ONE)
    big_plans = {"solo": {"default": True, "includes": {"api-requests": {"limit": 80, "reset": "month"}}}}
    big = open_ledger(redis_url, plans=big_plans)
    try:
        assert isinstance(small.reserve("b", {"api-requests": 50}), Hold)
        assert isinstance(small.reserve("b", {"api-requests": 1}), Refusal)
        assert isinstance(big.reserve("b", {"api-requests": 30}), Hold)  # same account, the new limit
        assert big.balance("b").meter("api-requests").used == 80
    finally:
        small.close()
        big.close()


def test_a_hold_never_settled_stops_counting_when_its_lease_ends(redis_url: str) -> None:
    ledger = open_ledger(redis_url, plans=ONE, hold_timeout=0.3)
    try:
        assert isinstance(ledger.reserve("b", {"api-requests": 50}), Hold)  # its process "dies" here
        late = ledger.reserve("b", {"api-requests": 10})
        assert isinstance(late, Refusal)
        time.sleep(0.4)
        assert ledger.balance("b").meter("api-requests").used == 0
        settled_late = ledger.reserve("b", {"api-requests": 10})
        assert isinstance(settled_late, Hold)
        time.sleep(0.4)  # this one's lease ends too before it is settled: it bills what was used
        ledger.settle(settled_late, {"api-requests": 7})
        assert ledger.balance("b").meter("api-requests").used == 7
        ledger.settle(hold := ledger.reserve("b", {"api-requests": 5}), {"api-requests": 5})  # type: ignore[arg-type]
        time.sleep(0.4)  # a settled hold holds nothing: its lease ending changes nothing
        assert isinstance(hold, Hold) and ledger.balance("b").meter("api-requests").used == 12
    finally:
        ledger.close()


@pytest.mark.parametrize("which", ["redis_url", "redis_cluster_url"])
def test_many_tasks_against_fifty_units_get_exactly_fifty(which: str, request: pytest.FixtureRequest) -> None:
    ledger = open_ledger(request.getfixturevalue(which), plans=PLANS, clock=Clock())

    async def crowd() -> list[Hold | Refusal]:
        try:
            return await asyncio.gather(*(ledger.areserve("crowd", {"api-requests": 1}) for _ in range(300)))
        finally:
            await ledger.aclose()  # type: ignore[attr-defined]

    results = asyncio.run(crowd())
    assert sum(isinstance(r, Hold) for r in results) == 50
    assert ledger.balance("crowd").meter("api-requests").used == 50
    ledger.close()


def test_async_settle_and_release(redis_url: str) -> None:
    ledger = open_ledger(redis_url, plans=PLANS, clock=Clock())

    async def flow() -> None:
        try:
            first = await ledger.areserve("b", {"compute-seconds": 30})
            assert isinstance(first, Hold)
            await ledger.aadjust(first, {"compute-seconds": 4})
            second = await ledger.areserve("b", {"compute-seconds": 30})
            assert isinstance(second, Hold)
            await ledger.aadjust(second, {})
        finally:
            await ledger.aclose()  # type: ignore[attr-defined]

    asyncio.run(flow())
    assert ledger.balance("b").meter("compute-seconds").used == 4


def test_a_server_that_lost_its_scripts_gets_them_again(redis_url: str) -> None:
    ledger = open_ledger(redis_url, plans=PLANS)
    client = raw(redis_url)
    try:
        client.script_flush()
        assert isinstance(ledger.reserve("b", {"api-requests": 1}), Hold)
    finally:
        ledger.close()
        client.close()


def test_a_stopped_server_fails_fast_and_the_same_ledger_recovers(own_server: RedisServer) -> None:
    url = f"redis://{own_server.address}/0"
    ledger = open_ledger(url, plans=PLANS, timeout=0.3)
    try:
        assert isinstance(ledger.reserve("b", {"api-requests": 1}), Hold)
        assert own_server.process is not None
        own_server.process.send_signal(signal.SIGSTOP)  # up but silent: only the timeout ends the wait
        started = time.monotonic()
        with pytest.raises(redis.RedisError):
            ledger.reserve("b", {"api-requests": 1})
        with pytest.raises(redis.RedisError):
            asyncio.run(ledger.areserve("b", {"api-requests": 1}))
        assert time.monotonic() - started < 1.5  # two calls of at most 0.3 s each, and their set-up
        own_server.process.send_signal(signal.SIGCONT)
        own_server.stop()  # gone: refused at once
        started = time.monotonic()
        with pytest.raises(redis.RedisError):
            ledger.reserve("b", {"api-requests": 1})
        with pytest.raises(redis.RedisError):
            asyncio.run(ledger.areserve("b", {"api-requests": 1}))
        assert time.monotonic() - started < 1.0
        own_server.start()  # same port, empty, no scripts loaded
        assert isinstance(ledger.reserve("b", {"api-requests": 1}), Hold)
        assert ledger.balance("b").meter("api-requests").used == 1
    finally:
        ledger.close()


def test_the_gate_answers_503_while_the_store_is_down(own_server: RedisServer) -> None:
    settings = ZeroClickSettings(
        meters={"api-requests": {}}, plans=ONE, ledger=f"redis://{own_server.address}/0", ledger_timeout=0.3
    )
    gate = Gate(settings)

    @metered("api-requests")
    def view() -> None: ...

    charge = gate.charge_for(view)
    try:
        assert not gate.inline  # awaited by ASGI adapters, never run on the event loop's thread
        own_server.stop()
        for answer in (
            gate.check_buyer("b", lambda name: None, charge, Usage()),
            asyncio.run(gate.acheck_buyer("b", lambda name: None, charge, Usage())),
        ):
            assert isinstance(answer, Deny) and answer.status == 503
    finally:
        gate.close()


def test_a_password_works_and_is_never_shown(tmp_path: Path) -> None:
    server = RedisServer(tmp_path, extra=("--requirepass", "s3cret")).start()
    try:
        ledger = open_ledger(f"redis://:s3cret@{server.address}/0", plans=PLANS)
        assert isinstance(ledger.reserve("b", {"api-requests": 1}), Hold)
        ledger.close()
        with pytest.raises(ConfigError) as info:
            open_ledger(f"redis://:wrong-s3cret@{server.address}/0", plans=PLANS)
        assert info.value.code == "cannot_open_ledger"
        assert "s3cret" not in info.value.message and f"redis://:***@{server.address}/0" in info.value.message
    finally:
        server.stop()


def test_a_hold_timeout_must_be_positive(redis_url: str) -> None:
    with pytest.raises(ConfigError, match="hold_timeout must be seconds above 0"):
        open_ledger(redis_url, plans=PLANS, hold_timeout=0)


def test_an_unreachable_store_at_start_up_is_a_config_error(tmp_path: Path) -> None:
    port = RedisServer(tmp_path).port  # free, nothing started on it
    for url in (f"redis://:pw@127.0.0.1:{port}/0", f"redis+cluster://:pw@127.0.0.1:{port}"):
        with pytest.raises(ConfigError) as info:
            open_ledger(url, plans=PLANS, timeout=0.3)
        assert info.value.code == "cannot_open_ledger"
        assert f":***@127.0.0.1:{port}" in info.value.message and ":pw@" not in info.value.message


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("redis://127.0.0.1:port/0", "the port is not a number"),
        ("redis:///0", "no host"),
        ("redis://127.0.0.1:6380/zero", "the database 'zero' is not a number"),
        ("redis+cluster://127.0.0.1:7000/1", "database 0 only"),
        ("redis://127.0.0.1:6380/0?prefix={app}:", "without { or }"),
        ("redis://:topsecret@127.0.0.1:99999/0", "redis://:***@127.0.0.1:99999/0"),
    ],
)
def test_a_malformed_url_says_what_is_wrong(url: str, says: str) -> None:
    with pytest.raises(ConfigError) as info:
        open_ledger(url, plans=PLANS)
    assert info.value.code == "invalid_ledger"
    assert says in info.value.message and "topsecret" not in info.value.message
    with pytest.raises(ValueError, match=r"settings\.ledger"):
        ZeroClickSettings(meters={"api-requests": {}}, ledger=url)


def test_threads_and_a_cluster_share_one_limit(redis_cluster_url: str) -> None:
    ledgers = [open_ledger(redis_cluster_url, plans=PLANS, clock=Clock()) for _ in range(2)]
    granted: list[bool] = []
    lock = threading.Lock()

    def worker(index: int) -> None:
        result = ledgers[index % 2].reserve("crowd", {"api-requests": 1, "compute-seconds": 1})
        with lock:
            granted.append(isinstance(result, Hold))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(120)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(granted) == 50  # two processes' worth of clients, one account
    for ledger in ledgers:
        ledger.close()


def test_an_exact_charge_stays_billed_after_its_lease_ends(redis_url: str) -> None:
    settings = ZeroClickSettings(meters={"api-requests": {}}, plans=ONE, ledger=redis_url)
    gate = Gate(settings, ledger=open_ledger(redis_url, plans=ONE, hold_timeout=0.2))

    @metered("api-requests")
    def view() -> None: ...

    usage = Usage()
    try:
        gate.check_buyer("b", lambda name: None, gate.charge_for(view), usage)
        gate.finish(usage, success=True)
        time.sleep(0.3)
        assert gate.ledger.balance("b").meter("api-requests").used == 1
    finally:
        gate.close()


def _certificates(where: Path) -> bool:
    """A throwaway CA and a server certificate for 127.0.0.1, made with ``openssl``."""

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=where, capture_output=True, check=True, timeout=60)

    try:
        openssl(
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-subj", "/CN=ca"
        )
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=x")
    except (OSError, subprocess.CalledProcessError):
        return False
    (where / "ext").write_text("subjectAltName=IP:127.0.0.1\n")
    openssl(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-out",
        "server.pem",
        "-extfile",
        "ext",
    )
    return True


def test_rediss_speaks_tls(tmp_path: Path) -> None:
    if not os.access(SERVER, os.X_OK):
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    if not _certificates(tmp_path):
        pytest.skip("openssl is not available to make a test certificate")
    tls_port = free_port()
    server = RedisServer(
        tmp_path,
        extra=(
            *("--tls-port", str(tls_port), "--tls-auth-clients", "no"),
            *("--tls-cert-file", str(tmp_path / "server.pem"), "--tls-key-file", str(tmp_path / "server.key")),
            *("--tls-ca-cert-file", str(tmp_path / "ca.pem")),
        ),
    ).start()
    try:
        url = f"rediss://127.0.0.1:{tls_port}/0?ssl_ca_certs={tmp_path / 'ca.pem'}"
        ledger = open_ledger(url, plans=PLANS)
        assert isinstance(ledger.reserve("b", {"api-requests": 1}), Hold)
        ledger.close()
        with pytest.raises(ConfigError, match="cannot use Redis"):
            open_ledger(f"rediss://127.0.0.1:{tls_port}/0", plans=PLANS, timeout=2)  # not our CA: refused
    finally:
        server.stop()


def test_buyers_with_braces_stay_in_one_slot_on_a_cluster(redis_cluster_url: str) -> None:
    ledger = open_ledger(redis_cluster_url, plans=PLANS)
    try:
        for buyer in ("}x{", "{a}b", "a{b}c", "}"):
            hold = ledger.reserve(buyer, {"api-requests": 2, "compute-seconds": 3})
            assert isinstance(hold, Hold)
            ledger.settle(hold, {"api-requests": 1, "compute-seconds": 3})
            assert ledger.balance(buyer).meter("api-requests").used == 1
    finally:
        ledger.close()


def test_a_silent_server_fails_an_awaited_call_within_the_timeout(own_server: RedisServer) -> None:
    ledger = open_ledger(f"redis://{own_server.address}/0", plans=PLANS, timeout=0.3)
    assert own_server.process is not None
    process = own_server.process

    async def flow() -> float:
        try:
            assert isinstance(await ledger.areserve("b", {"api-requests": 1}), Hold)  # connected
            process.send_signal(signal.SIGSTOP)
            started = time.monotonic()
            with pytest.raises(redis.RedisError):
                await ledger.areserve("b", {"api-requests": 1})
            took = time.monotonic() - started
            process.send_signal(signal.SIGCONT)
            assert isinstance(await ledger.areserve("b", {"api-requests": 1}), Hold)  # reconnected
            return took
        finally:
            await ledger.aclose()  # type: ignore[attr-defined]

    assert asyncio.run(flow()) < 0.8
