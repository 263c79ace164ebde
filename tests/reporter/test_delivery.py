"""One batch against a scripted API (``httpx.MockTransport``): what the sender does with each answer."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime, timezone

import httpx
import pytest

from zc_middleware.outbox import Outbox, make_event, open_outbox
from zc_middleware.reporter.delivery import Delivery

T0 = datetime(2026, 6, 12, 9, 30, tzinfo=timezone.utc)
Handler = Callable[[httpx.Request], httpx.Response]


@pytest.fixture
def outbox() -> Iterator[Outbox]:
    box = open_outbox("memory://")
    yield box
    box.close()


def load(outbox: Outbox, *keys: str) -> None:
    outbox.add([make_event(user_id="u", meter="tokens", quantity=1, idempotency_key=k, timestamp=T0) for k in keys])


def deliver(outbox: Outbox, handler: Handler) -> tuple[float | None, Counter[str], list[int]]:
    """Lease everything, deliver it once; the pause, the counters and the size of every call."""
    counters: Counter[str] = Counter()
    sizes: list[int] = []

    def record(request: httpx.Request) -> httpx.Response:
        sizes.append(len(json.loads(request.content)["events"]))
        return handler(request)

    def count(name: str, n: int) -> None:
        counters[name] += n

    delivery = Delivery(
        outbox,
        url="http://api.test/v1/usage/batch",
        api_key="k",
        backoff=0.5,
        backoff_max=60.0,
        count=count,
        transport=httpx.MockTransport(record),
    )
    delivery.reset("test:1:owner")
    try:
        pause = delivery.deliver(outbox.lease("test:1:owner", 100, 60.0), 1.0)
    finally:
        delivery.close()
    return pause, counters, sizes


def test_2xx_marks_the_batch_sent(outbox: Outbox) -> None:
    load(outbox, "a", "b")
    pause, counters, _ = deliver(outbox, lambda request: httpx.Response(200, json={"accepted": 2}))
    assert pause is None and counters == Counter(sent=2)
    assert (outbox.status().pending, outbox.status().sent) == (0, 2)


def test_a_wrong_key_keeps_everything_and_waits_the_longest(outbox: Outbox) -> None:
    load(outbox, "a", "b")
    pause, counters, _ = deliver(outbox, lambda request: httpx.Response(401))
    assert pause == 60.0 and counters == Counter(auth_failures=1)
    assert outbox.status().pending == 2


def test_retry_after_is_honoured_and_the_rows_go_back(outbox: Outbox) -> None:
    load(outbox, "a", "b")
    pause, counters, _ = deliver(outbox, lambda request: httpx.Response(503, headers={"retry-after": "5"}))
    assert pause is not None and pause >= 5.0
    assert counters == Counter(retried=2) and outbox.status().pending == 2


def test_a_connection_error_retries(outbox: Outbox) -> None:
    load(outbox, "a")

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    pause, counters, _ = deliver(outbox, refuse)
    assert pause is not None and counters == Counter(retried=1)


def test_a_rejected_batch_is_bisected_until_the_bad_event_is_alone(outbox: Outbox) -> None:
    keys = [f"k{i}" for i in range(7)]
    keys[4] = "poison"
    load(outbox, *keys)

    def refuse_poison(request: httpx.Request) -> httpx.Response:
        if b'"poison"' in request.content:
            return httpx.Response(422, json={"message": "poisoned"})
        return httpx.Response(200)

    pause, counters, sizes = deliver(outbox, refuse_poison)
    assert pause is None and counters == Counter(sent=6, dead=1)
    assert sizes == [7, 3, 4, 2, 1, 1, 2]
    status = outbox.status()
    assert (status.pending, status.sent, status.dead) == (0, 6, 1)
    assert [(d.key, d.reason) for d in status.dead_letters] == [("poison", "HTTP 422: message: poisoned")]
