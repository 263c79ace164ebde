"""One contract every outbox backend passes, parametrised over ``memory://`` and ``sqlite:///``."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from tests.postgres_db import postgres_server, postgres_url  # noqa: F401  (fixtures)
from zc_middleware.errors import ConfigError, ZcError
from zc_middleware.outbox import Event, Outbox, make_event, open_outbox

T0 = datetime(2026, 6, 12, 9, 30, tzinfo=timezone.utc)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["memory", "sqlite", "postgresql"])
def clock_outbox(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Clock, Outbox]]:
    clock = Clock()
    url = "memory://" if request.param == "memory" else f"sqlite:///{tmp_path / 'outbox.db'}"
    if request.param == "postgresql":
        url = request.getfixturevalue("postgres_url")
    outbox = open_outbox(url, clock=clock)
    try:
        yield clock, outbox
    finally:
        outbox.close()


@pytest.fixture
def outbox(clock_outbox: tuple[Clock, Outbox]) -> Outbox:
    return clock_outbox[1]


def ev(key: str, quantity: int = 1, user: str = "user-1", meter: str = "compute-seconds", **kw: object) -> Event:
    return make_event(user_id=user, meter=meter, quantity=quantity, idempotency_key=key, timestamp=T0, **kw)  # type: ignore[arg-type]


def test_event_body_is_the_contract_shape() -> None:
    event = ev("job-1", 42)
    assert json.loads(event.body) == {
        "userId": "user-1",
        "meter": "compute-seconds",
        "quantity": 42,
        "timestamp": "2026-06-12T09:30:00Z",
        "idempotencyKey": "job-1",
    }
    other_zone = datetime(2026, 6, 12, 11, 30, tzinfo=timezone(timedelta(hours=2)))
    event = make_event(user_id="u", meter="Compute Seconds", quantity=1, idempotency_key="k", timestamp=other_zone)
    assert event.timestamp == "2026-06-12T09:30:00Z"
    assert event.meter == "compute-seconds"


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        ({"quantity": -1}, "invalid_quantity"),
        ({"quantity": math.nan}, "invalid_quantity"),
        ({"quantity": True}, "invalid_quantity"),
        ({"quantity": 1.5}, "invalid_quantity"),
        ({"quantity": "3"}, "invalid_quantity"),
        ({"quantity": 2**60}, "invalid_quantity"),
        ({"idempotency_key": ""}, "invalid_idempotency_key"),
        ({"idempotency_key": "k" * 256}, "invalid_idempotency_key"),
        ({"idempotency_key": "a\nb"}, "invalid_idempotency_key"),
        ({"idempotency_key": 7}, "invalid_idempotency_key"),
        ({"meter": "nope"}, "unknown_meter"),
        ({"meter": "bad meter!"}, "invalid_meter"),
        ({"timestamp": datetime(2026, 6, 12, 9, 30)}, "naive_datetime"),
        ({"timestamp": "2026-06-12T09:30:00Z"}, "invalid_timestamp"),
        ({"user_id": ""}, "invalid_user_id"),
        ({"user_id": "a b"}, "invalid_user_id"),
    ],
)
def test_bad_input_is_a_clear_error(kwargs: dict[str, object], code: str) -> None:
    args: dict[str, object] = {
        "user_id": "u",
        "meter": "compute-seconds",
        "quantity": 1,
        "idempotency_key": "k",
        "timestamp": T0,
        "known_meters": {"compute-seconds"},
    }
    with pytest.raises(ZcError) as info:
        make_event(**{**args, **kwargs})  # type: ignore[arg-type]
    assert info.value.code == code


def test_unknown_scheme_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="memory://, sqlite://"):
        open_outbox("redis://localhost/0")
    with pytest.raises(ConfigError):
        open_outbox("sqlite:///:memory:")


def test_add_lease_deliver(outbox: Outbox) -> None:
    assert outbox.add([ev("a"), ev("b", 2), ev("c", 3)]) == 3
    status = outbox.status()
    assert (status.pending, status.sent, status.dead) == (3, 0, 0)
    leased = outbox.lease("me", 2, 30)
    assert [r.key for r in leased] == ["a", "b"]
    assert leased[1].body == ev("b", 2).body  # byte for byte what was stored
    assert [r.key for r in outbox.lease("other", 10, 30)] == ["c"]  # never the same row twice
    assert outbox.lease("third", 10, 30) == []
    outbox.delivered("me", [r.id for r in leased])
    status = outbox.status()
    assert (status.pending, status.sent) == (1, 2)


def test_same_payload_is_a_noop_and_another_is_a_conflict(outbox: Outbox) -> None:
    assert outbox.add([ev("a", 5)]) == 1
    assert outbox.add([ev("a", 5)]) == 0
    with pytest.raises(ZcError) as info:
        outbox.add([ev("b"), ev("a", 6)])
    assert info.value.code == "idempotency_conflict"
    assert outbox.status().pending == 1  # nothing of the failed call was stored
    assert outbox.add([ev("a", 6)], strict=False) == 0  # the first report wins
    assert [r.body for r in outbox.lease("me", 10, 30)] == [ev("a", 5).body]


def test_clock_timestamps_match_on_the_rest(outbox: Outbox) -> None:
    first = make_event(user_id="u", meter="m", quantity=1, idempotency_key="k", clock=lambda: 1.0)
    again = make_event(user_id="u", meter="m", quantity=1, idempotency_key="k", clock=lambda: 99.0)
    assert outbox.add([first]) == 1
    assert outbox.add([again]) == 0
    with pytest.raises(ZcError):
        outbox.add([make_event(user_id="u", meter="m", quantity=2, idempotency_key="k")])


def test_delivered_key_stays_a_noop(outbox: Outbox) -> None:
    outbox.add([ev("a")])
    outbox.delivered("me", [r.id for r in outbox.lease("me", 10, 30)])
    assert outbox.add([ev("a")]) == 0
    assert outbox.lease("me", 10, 30) == []


def test_expired_lease_is_taken_over(clock_outbox: tuple[Clock, Outbox]) -> None:
    clock, outbox = clock_outbox
    outbox.add([ev("a")])
    dead_sender = outbox.lease("killed", 10, 30)
    assert outbox.lease("other", 10, 30) == []
    clock.now += 31
    taken = outbox.lease("other", 10, 30)
    assert [r.key for r in taken] == ["a"]
    outbox.delivered("killed", [r.id for r in dead_sender])  # a stale owner cannot settle it
    assert outbox.status().pending == 1
    outbox.delivered("other", [r.id for r in taken])
    assert outbox.status().pending == 0


def test_retry_waits_and_counts(clock_outbox: tuple[Clock, Outbox]) -> None:
    clock, outbox = clock_outbox
    outbox.add([ev("a")])
    leased = outbox.lease("me", 10, 30)
    outbox.retry("me", [r.id for r in leased], 5.0)
    assert outbox.lease("me", 10, 30) == []
    clock.now += 5
    again = outbox.lease("me", 10, 30)
    assert [r.attempts for r in again] == [1]
    outbox.retry("me", [r.id for r in again], 0.0, count=False)
    assert [r.attempts for r in outbox.lease("me", 10, 30)] == [1]


def test_dead_letters_keep_the_reason_and_can_be_retried(clock_outbox: tuple[Clock, Outbox]) -> None:
    _clock, outbox = clock_outbox
    outbox.add([ev("a"), ev("b")])
    leased = outbox.lease("me", 10, 30)
    outbox.dead("me", [(leased[0].id, "422: unknown meter")])
    outbox.delivered("me", [leased[1].id])
    status = outbox.status()
    assert (status.pending, status.sent, status.dead) == (0, 1, 1)
    assert [(d.key, d.reason) for d in status.dead_letters] == [("a", "422: unknown meter")]
    assert outbox.add([ev("a")]) == 0  # a dead key is still known
    assert outbox.retry_dead() == 1
    assert [r.key for r in outbox.lease("me", 10, 30)] == ["a"]
    assert outbox.status().dead == 0


def test_oldest_pending_and_prune(clock_outbox: tuple[Clock, Outbox]) -> None:
    clock, outbox = clock_outbox
    outbox.add([ev("a")])
    clock.now += 10
    outbox.add([ev("b")])
    status = outbox.status()
    assert status.oldest_pending == 1_000_000.0
    assert status.oldest_age(clock.now) == 10
    outbox.delivered("me", [r.id for r in outbox.lease("me", 1, 30)])
    clock.now += 100
    assert outbox.prune(clock.now - 50) == 1
    assert outbox.status().sent == 0
    assert outbox.status().pending == 1
