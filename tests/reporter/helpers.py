"""The local batch API as a fixture-friendly object, and checks over what it received."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from tests.servers import serve, uvicorn

KEY = "test-key"


class BatchAPI:
    def __init__(self, base: str) -> None:
        self.base = base

    def configure(self, **config: Any) -> None:
        httpx.post(self.base + "/_config", json={"reset": True, "fail": 0.0, **config}, timeout=10).raise_for_status()

    def state(self) -> dict[str, Any]:
        response = httpx.get(self.base + "/_state", timeout=10)
        response.raise_for_status()
        data: dict[str, Any] = response.json()
        return data

    def keys(self) -> dict[str, list[dict[str, Any]]]:
        keys: dict[str, list[dict[str, Any]]] = self.state()["keys"]
        return keys

    def wait_for(self, count: int, timeout: float = 15.0) -> dict[str, list[dict[str, Any]]]:
        """Poll until ``count`` distinct keys arrived (or the deadline passes); return them."""
        return poll(lambda: self.keys(), lambda keys: len(keys) >= count, timeout)


def poll(get: Callable[[], Any], done: Callable[[Any], bool], timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = get()
        if done(value) or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


@contextmanager
def batch_api() -> Iterator[BatchAPI]:
    with serve(uvicorn("tests.reporter.batch_server:app"), env={"ZC_TEST_API_KEY": KEY}, ready_path="/_state") as base:
        yield BatchAPI(base)


def deduped_totals(keys: dict[str, list[dict[str, Any]]]) -> Counter[tuple[str, str]]:
    """Per (buyer, meter): the sum over keys, each key counted once (as the real API dedupes)."""
    totals: Counter[tuple[str, str]] = Counter()
    for deliveries in keys.values():
        first = deliveries[0]
        totals[first["userId"], first["meter"]] += first["quantity"]
    return totals


def assert_payloads_unchanged(keys: dict[str, list[dict[str, Any]]]) -> None:
    for key, deliveries in keys.items():
        assert all(d == deliveries[0] for d in deliveries), f"{key} changed between deliveries: {deliveries}"
