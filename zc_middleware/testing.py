"""Helpers for sellers' own tests: calling ``@metered`` functions outside a request."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from .meters import check_quantity, normalize_meter_name
from .usage import Usage, bind_counter, unbind_counter

__all__ = ["RecordedUsage", "unchecked_calls"]


# -- calling metered functions outside a request ------------------------------------------------
# A function decorated with @metered refuses to run unless the middleware checked the request it
# runs in (see zc_middleware.guard). A unit test that calls a handler or a metered helper directly
# opts in explicitly, and sees what the call recorded.


class RecordedUsage(Usage):
    """The counter :func:`unchecked_calls` binds: metered functions run under it with no check, and
    ``record_usage()`` adds to :attr:`recorded` whatever meter it names (no settings to check against)."""

    unchecked_ok = True

    def __init__(self) -> None:
        #: ``{meter: units}`` recorded with ``record_usage()`` inside the block, meter names normalised
        self.recorded: dict[str, int] = {}

    def add(self, meter: str, quantity: object) -> None:
        name = normalize_meter_name(meter)
        self.recorded[name] = self.recorded.get(name, 0) + check_quantity(quantity)


@contextlib.contextmanager
def unchecked_calls() -> Iterator[RecordedUsage]:
    """Let ``@metered`` functions run outside a request, in this block, for unit tests::

        from zc_middleware.testing import unchecked_calls

        def test_render() -> None:
            with unchecked_calls() as usage:
                assert render(request).status_code == 200
            assert usage.recorded == {"compute-seconds": 4}

    The opt-in is a context variable: it covers code in the block, async code awaited in it and
    threads started with a copy of its context, never another test or a request served meanwhile
    by a server in another thread. A request the middleware checks inside the block is checked as
    usual (the middleware binds its own counter).
    """
    usage = RecordedUsage()
    token = bind_counter(usage)
    try:
        yield usage
    finally:
        unbind_counter(token)
