"""Streaming responses: keep ``record_usage()`` working while the body is iterated, settle at close.

Django iterates a ``StreamingHttpResponse`` after the middleware has returned:
the WSGI server does it (maybe on another thread), and under ASGI Django's
``send_response`` does it after ``get_response`` is done. So the counter is
bound again around each step of the body (:mod:`zc_middleware.bodies`), and
the hold is settled from ``response.close()`` (the ``_resource_closers`` hook
Django uses for the body's own ``close``), which every server calls once the
body is done or the client went away.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..bodies import BoundBody, abound
from ..usage import Usage

__all__ = ["settle_at_close"]


def settle_at_close(response: Any, usage: Usage, settle: Callable[[BoundBody], None], *, headers_first: bool) -> None:
    """Re-bind ``usage`` while ``response`` streams, and call ``settle(body)`` when Django closes it
    (``body.failed`` says whether it failed before its first chunk). ``headers_first``: the handler
    sends the headers before the body (ASGI), so they went out even if the body fails at once; a
    WSGI server sends them with the first chunk."""
    body = BoundBody()
    body.usage = usage
    if headers_first:
        body.started = True
    # A FileResponse read straight from a file runs no user code, and re-setting its
    # content would lose the server's sendfile path (``file_to_stream``).
    if getattr(response, "file_to_stream", None) is None:
        content = response.streaming_content
        if response.is_async:
            response.streaming_content = abound(content, usage)
        else:
            response.streaming_content = body.run(iter(content))
    response._resource_closers.append(lambda: settle(body))
