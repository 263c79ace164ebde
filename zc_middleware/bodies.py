"""Response bodies run with the request's usage bound, so ``record_usage()`` works while they stream.

A body may be iterated after the handler returned, and on another thread (a
WSGI server's, or Django's ``send_response`` under ASGI): the counter is bound
around each step of the body and never across a yield to the server, so the
server's own context is never left holding a request's counter.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

from .usage import Usage, bind_counter, unbind_counter

__all__ = ["BoundBody", "abound"]


class BoundBody:
    """A sync body's runner: iterating it iterates ``_iterator`` with :attr:`usage` bound around each
    ``next()``, and notes whether the server has started sending and whether the body failed first."""

    #: the body produced a non-empty chunk: the server has sent (or is sending) the headers
    started = False
    #: the body raised before producing anything: the server answers 500 instead
    failed = False
    #: the request's usage, once the Gate granted it (``None`` binds "no paid request")
    usage: Usage | None = None
    _iterator: Iterator[bytes]

    def run(self, iterator: Iterator[bytes]) -> Iterator[bytes]:
        """``iterator``'s chunks, run as this body."""
        self._iterator = iterator
        return iter(self)

    def __iter__(self) -> Iterator[bytes]:
        iterator = self._iterator
        while True:
            token = bind_counter(self.usage)  # read each time: a lazy app may be granted mid-body
            try:
                chunk = next(iterator)
            except StopIteration:
                return
            except BaseException:
                if not self.started:
                    self.failed = True
                raise
            finally:
                unbind_counter(token)
            if chunk:
                self.started = True  # servers send the headers with the first non-empty chunk
            yield chunk


async def abound(iterator: AsyncIterator[bytes], usage: Usage) -> AsyncIterator[bytes]:
    """An async body's chunks with ``usage`` bound around each step."""
    while True:
        token = bind_counter(usage)
        try:
            chunk = await iterator.__anext__()
        except StopAsyncIteration:
            return
        finally:
            unbind_counter(token)
        yield chunk
