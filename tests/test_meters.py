from __future__ import annotations

import inspect
import math

import pytest

from zc_middleware import ConfigError, ZcError, metered, record_usage
from zc_middleware.meters import Charge, metered_specs
from zc_middleware.usage import Usage, bind_counter, unbind_counter


def test_metered_keeps_the_signature_and_stacks_in_one_guard() -> None:
    def view(request: object, item: int = 3) -> None: ...

    signature = inspect.signature(view)
    marked = metered("compute-seconds", estimate=30)(metered("API Requests")(view))
    assert marked.__wrapped__ is view  # one guard, however many meters
    assert inspect.signature(marked) == signature
    for marks in (marked, view):  # the function itself too: a router may have registered it first
        assert [(s.meter, s.hold, s.base) for s in metered_specs(marks)] == [
            ("api-requests", 1, 1),
            ("compute-seconds", 30, 0),
        ]


def test_metering_one_view_twice_on_a_meter_is_an_error() -> None:
    def view() -> None: ...

    metered("api-requests")(view)
    with pytest.raises(ConfigError, match="already metered"):
        metered("api-requests", 2)(view)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"quantity": 0},
        {"quantity": -1},
        {"quantity": 1.5},
        {"quantity": True},
        {"estimate": 0},
        {"estimate": 3, "quantity": 2},
    ],
)
def test_bad_metered_arguments_fail_when_decorating(kwargs: dict) -> None:
    with pytest.raises(ZcError):
        metered("api-requests", **kwargs)


def test_record_usage_outside_a_request_is_an_error() -> None:
    with pytest.raises(ZcError, match="outside_request"):
        record_usage("api-requests", 1)


@pytest.fixture
def counter():  # type: ignore[no-untyped-def]
    specs = metered_specs(metered("compute-seconds", estimate=30)(lambda: None))
    counter = Usage()
    counter.arm(Charge.build(specs, known=frozenset({"compute-seconds", "api-requests"})))
    token = bind_counter(counter)
    yield counter
    unbind_counter(token)


@pytest.mark.parametrize("quantity", [-1, math.nan, 1.5, 2.0, True, "3", None, 2**60])
def test_bad_quantities_are_refused(counter: Usage, quantity: object) -> None:
    with pytest.raises(ZcError, match="invalid_quantity"):
        record_usage("compute-seconds", quantity)  # type: ignore[arg-type]
    assert counter.values["compute-seconds"] == 0


def test_record_usage_adds_and_normalises(counter: Usage) -> None:
    record_usage("compute-seconds", 4)
    record_usage("Compute Seconds", 0)
    record_usage("compute_seconds", 3)
    assert counter.values == {"compute-seconds": 7}


def test_unknown_and_unchecked_meters_are_refused(counter: Usage) -> None:
    with pytest.raises(ZcError, match="unknown_meter"):
        record_usage("gigabytes", 1)
    with pytest.raises(ZcError, match="meter_not_metered"):
        record_usage("api-requests", 1)


def test_usage_after_settlement_is_refused(counter: Usage) -> None:
    counter.closed = True
    with pytest.raises(ZcError, match="request_finished"):
        record_usage("compute-seconds", 1)
