"""The guard ``@metered`` puts around a function: what it lets run, what it refuses, and what it keeps."""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
from collections.abc import AsyncIterator, Iterator

import pytest

from zc_middleware import Gate, ZcError, ZeroClickSettings, metered, record_usage
from zc_middleware.meters import metered_specs
from zc_middleware.pricing import Pricing
from zc_middleware.testing import unchecked_calls
from zc_middleware.usage import Usage, bind_counter, unbind_counter

METERS = {"api-requests": {}, "compute-seconds": {}, "tokens": {}}
PLANS = {"p": {"default": True, "includes": {m: {"limit": 1000} for m in METERS}}}


@metered("api-requests")
def search(query: str, limit: int = 10) -> str:
    record_usage("api-requests", 1)
    return f"{query}:{limit}"


@metered("tokens", estimate=50)
def shared_helper() -> str:
    record_usage("tokens", 7)
    return "helped"


@pytest.fixture
def gate() -> Iterator[Gate]:
    gate = Gate(ZeroClickSettings(meters=METERS, plans=PLANS, ledger="memory://"))  # type: ignore[arg-type]
    yield gate
    gate.close()


def granted(gate: Gate, view: object) -> Usage:
    """A counter the Gate granted for ``view``'s charge, as an adapter gets one."""
    charge = Pricing(gate.settings).charge_for(view)
    assert charge is not None
    usage = Usage()
    assert gate.check_buyer("agent-1", lambda name: None, charge, usage).__class__.__name__ == "Allow"
    return usage


def run_in(usage: Usage | None, fn: object, *args: object) -> object:
    token = bind_counter(usage)
    try:
        return fn(*args)  # type: ignore[operator]
    finally:
        unbind_counter(token)


def test_outside_a_request_it_refuses_before_its_body_runs_and_logs_the_fix(caplog: pytest.LogCaptureFixture) -> None:
    ran: list[int] = []

    @metered("api-requests")
    def handler() -> None:
        ran.append(1)

    with caplog.at_level(logging.ERROR, logger="zc_middleware"), pytest.raises(ZcError) as raised:
        handler()
    assert raised.value.code == "unchecked"
    assert ran == []
    (logged,) = caplog.messages
    assert "handler is metered on api-requests" in logged
    for fix in ("add_middleware(ZeroClickMiddleware", "ZeroClick(app)", "MIDDLEWARE", ".app", "matches()"):
        assert fix in logged
    with pytest.raises(ZcError):
        handler()
    assert len(caplog.messages) == 1  # logged once per function


def test_a_test_opts_in_with_unchecked_calls_and_sees_what_was_recorded() -> None:
    with unchecked_calls() as usage:
        assert search("q") == "q:10"
        assert shared_helper() == "helped"
        record_usage("Compute Seconds", 3)
    assert usage.recorded == {"api-requests": 1, "tokens": 7, "compute-seconds": 3}
    with pytest.raises(ZcError, match="unchecked"):  # the opt-in ends with the block
        search("q")


def test_unchecked_calls_covers_async_code_awaited_in_it() -> None:
    @metered("api-requests")
    async def handler() -> str:
        await asyncio.sleep(0)
        return "ok"

    with unchecked_calls():
        assert asyncio.run(handler()) == "ok"  # asyncio.run copies the context
    with pytest.raises(ZcError, match="unchecked"):
        asyncio.run(handler())


def test_a_granted_request_covering_its_meters_runs_it(gate: Gate) -> None:
    usage = granted(gate, search)
    assert run_in(usage, search, "q", 3) == "q:3"
    assert usage.values["api-requests"] == 2  # 1 billed for the route, 1 recorded


def test_a_shared_helper_runs_in_a_request_checked_for_its_meters(gate: Gate) -> None:
    @metered("api-requests")
    @metered("tokens", estimate=50)
    def handler() -> str:
        return shared_helper()

    usage = granted(gate, handler)
    assert run_in(usage, handler) == "helped"
    assert usage.values["tokens"] == 7


def test_a_helper_metered_on_a_meter_its_request_was_not_checked_for_is_refused(gate: Gate) -> None:
    usage = granted(gate, search)
    with pytest.raises(ZcError, match="checked for api-requests, not tokens"):
        run_in(usage, shared_helper)


def test_a_counter_bound_but_not_granted_is_refused() -> None:
    """Django binds a counter before routing; a free view calling a metered function is refused."""
    with pytest.raises(ZcError, match="route is free"):
        run_in(Usage(), search, "q")


def test_the_signature_annotations_and_attributes_are_kept() -> None:
    def view(request: object, item: int = 3, *, flag: bool = False) -> str:
        return "x"

    view.view_class = object  # type: ignore[attr-defined]  # as Django's and Flask's as_view() set it
    guard = metered("api-requests")(view)
    assert inspect.signature(guard) == inspect.signature(view)
    assert guard.__name__ == "view" and guard.__annotations__ == view.__annotations__
    assert guard.view_class is object  # type: ignore[attr-defined]
    assert guard.__globals__ is view.__globals__  # string annotations resolve in the function's module


def test_sync_and_async_nature_is_kept() -> None:
    async def coro() -> int:
        return 1

    def gen() -> Iterator[int]:
        sent = yield 1
        yield sent

    async def agen() -> AsyncIterator[int]:
        yield 1
        yield 2

    def plain() -> int:
        return 1

    g_coro, g_gen, g_agen, g_plain = (metered("api-requests")(f) for f in (coro, gen, agen, plain))
    assert inspect.iscoroutinefunction(g_coro)
    assert inspect.isgeneratorfunction(g_gen)
    assert inspect.isasyncgenfunction(g_agen)
    assert not any(inspect.iscoroutinefunction(f) or inspect.isgeneratorfunction(f) for f in (g_plain,))

    async def collect() -> list[int]:
        return [item async for item in g_agen()]

    with unchecked_calls():
        iterator = g_gen()
        assert next(iterator) == 1
        assert iterator.send(5) == 5  # send() reaches the generator
        assert asyncio.run(collect()) == [1, 2]
    with pytest.raises(ZcError, match="unchecked"):
        next(g_gen())  # a generator is checked when first iterated, before its body runs
    with pytest.raises(ZcError, match="unchecked"):
        asyncio.run(collect())


def test_stacked_decorators_make_one_guard_for_every_meter() -> None:
    def view() -> None: ...

    guard = metered("tokens", estimate=5)(metered("api-requests")(view))
    assert guard.__wrapped__ is view
    assert [s.meter for s in metered_specs(guard)] == ["api-requests", "tokens"]

    @functools.wraps(guard)
    def users(*args: object) -> None:  # a user's own decorator copies the guard's attributes
        return guard(*args)

    outer = metered("compute-seconds", estimate=5)(users)
    assert outer.__wrapped__ is users  # the user's decorator is kept, not skipped
    with pytest.raises(ZcError, match="unchecked"):
        outer()


def test_a_metered_class_guards_each_handler_method() -> None:
    @metered("api-requests")
    class Items:
        def get(self) -> str:
            return "got"

        @metered("tokens", estimate=5)
        async def post(self) -> str:
            return "posted"

    assert [s.meter for s in metered_specs(Items)] == ["api-requests"]
    assert [s.meter for s in metered_specs(Items.post)] == ["tokens"]  # its own marks only, for pricing
    assert inspect.iscoroutinefunction(Items.post)
    with pytest.raises(ZcError, match="metered on api-requests but"):
        Items().get()
    with pytest.raises(ZcError, match="metered on api-requests, tokens but"):
        asyncio.run(Items().post())
    with unchecked_calls():
        assert Items().get() == "got"
