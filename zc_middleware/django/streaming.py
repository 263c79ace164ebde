"""Streaming responses: keep ``record_usage()`` working while the body is iterated, settle at close.

Django iterates a ``StreamingHttpResponse`` after the middleware has returned:
the WSGI server does it (maybe on another thread), and under ASGI Django's
``send_response`` does it after ``get_response`` is done. So the counter is
bound again around each step of the body, and the hold is settled from
``response.close()`` (the ``_resource_closers`` hook Django uses for the
body's own ``close``), which every server calls once the body is done or the
client went away.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from ..meters import UsageCounter, bind_counter, unbind_counter

__all__ = ["settle_at_close"]


def _bound(iterator: Iterator[bytes], counter: UsageCounter) -> Iterator[bytes]:
    while True:
        token = bind_counter(counter)  # bound only around next(): never across a yield to the server
        try:
            chunk = next(iterator)
        except StopIteration:
            return
        finally:
            unbind_counter(token)
        yield chunk


async def _abound(iterator: AsyncIterator[bytes], counter: UsageCounter) -> AsyncIterator[bytes]:
    while True:
        token = bind_counter(counter)
        try:
            chunk = await iterator.__anext__()
        except StopAsyncIteration:
            return
        finally:
            unbind_counter(token)
        yield chunk


def settle_at_close(response: Any, counter: UsageCounter, settle: Callable[[], None]) -> None:
    """Re-bind ``counter`` while ``response`` streams, and call ``settle`` when Django closes it."""
    # A FileResponse read straight from a file runs no user code, and re-setting its
    # content would lose the server's sendfile path (``file_to_stream``).
    if getattr(response, "file_to_stream", None) is None:
        content = response.streaming_content
        if response.is_async:
            response.streaming_content = _abound(content, counter)
        else:
            response.streaming_content = _bound(iter(content), counter)
    response._resource_closers.append(settle)
