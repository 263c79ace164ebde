"""Streaming responses: keep ``record_usage()`` working while the body is iterated, settle at close.

Django iterates a ``StreamingHttpResponse`` after the middleware has returned:
the WSGI server does it (maybe on another thread), and under ASGI Django's
``send_response`` does it after ``get_response`` is done. So the counter is
bound again around each step of the body (a sync body runs exactly as a WSGI
body does, :class:`~zc_middleware.wsgi.WSGIBody`), and the hold is settled
from ``response.close()`` (the ``_resource_closers`` hook Django uses for the
body's own ``close``), which every server calls once the body is done or the
client went away.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

from ..meters import UsageCounter, bind_counter, unbind_counter
from ..wsgi import WSGIBody

__all__ = ["settle_at_close"]


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


def settle_at_close(response: Any, body: WSGIBody, settle: Callable[[], None], *, headers_first: bool) -> None:
    """Re-bind ``body`` (the request's counter) while ``response`` streams, and call ``settle`` when
    Django closes it. ``headers_first``: the handler sends the headers before the body (ASGI), so
    they went out even if the body fails at once; a WSGI server sends them with the first chunk."""
    if headers_first:
        body.started = True
    # A FileResponse read straight from a file runs no user code, and re-setting its
    # content would lose the server's sendfile path (``file_to_stream``).
    if getattr(response, "file_to_stream", None) is None:
        content = response.streaming_content
        if response.is_async:
            response.streaming_content = _abound(content, body)
        else:
            response.streaming_content = body.run(iter(content))
    response._resource_closers.append(settle)
