"""One paid request through a WSGI app: the usage header at ``start_response``, the hold settled at ``close()``.

A WSGI body may be iterated after the app returned, and on another thread
(gunicorn's gthread worker iterates on the thread that called the app, other
servers do not promise it), so:

* the usage header is written in ``start_response``, the moment the status
  and headers are handed to the server (the WSGI twin of ASGI's
  ``http.response.start``), exactly once, as the response policy says
  (:mod:`zc_middleware.policy`);
* the usage counter is bound around every ``next()`` of the body and around
  its ``close()`` (:class:`~zc_middleware.bodies.BoundBody`), so
  :func:`~zc_middleware.record_usage` works in streaming generators on
  whatever thread iterates them;
* the hold is settled or released in ``close()``, which PEP 3333 servers call
  once the body is done or the client went away.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextvars import Token
from http import HTTPStatus
from types import GeneratorType, TracebackType
from typing import TYPE_CHECKING

from ..bodies import BoundBody
from ..decision import Deny
from ..environ import Environ
from ..policy import free_headers, paid_headers, refused_headers, succeeded
from ..usage import Usage, bind_counter, unbind_counter

if TYPE_CHECKING:
    from ..gate import Gate

__all__ = ["Exchange", "StartResponse", "WSGIApp", "deny_body", "free_start_response"]

ExcInfo = tuple[type[BaseException], BaseException, TracebackType] | tuple[None, None, None]
StartResponse = Callable[..., Callable[[bytes], object]]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]


def deny_body(deny: Deny, start_response: StartResponse) -> list[bytes]:
    """Send the gate's ``Deny`` as it is: status, headers, body."""
    headers = [*deny.headers, ("content-length", str(len(deny.body)))]
    start_response(f"{deny.status} {HTTPStatus(deny.status).phrase}", headers)
    return [deny.body]


def free_start_response(start_response: StartResponse) -> StartResponse:
    """``start_response`` for a free request: ``X-ZeroClick-Usage`` and ``X-ZeroClick-Reason`` the
    app set never go out (:func:`~zc_middleware.policy.free_headers`); all else is passed on."""

    def start(
        status: str, headers: list[tuple[str, str]], exc_info: ExcInfo | None = None
    ) -> Callable[[bytes], object]:
        if exc_info is None:
            return start_response(status, free_headers(headers))
        return start_response(status, free_headers(headers), exc_info)

    return start


class Exchange(BoundBody):
    """One request: ``start_response`` with the policy's headers, and, once granted, the response
    body that settles the hold when it is closed.

    The Flask extension creates one for every request whose method and path it has not yet seen
    routed to a free view (it learns whether the route is paid only in ``before_request``).
    ``ZeroClickWSGI`` routes first and creates one for paid requests only.
    """

    #: the Gate allowed the request: report and settle
    granted = False
    #: the Gate's refusal: its answer leaves without any usage header, with the Gate's reason only
    refused: Deny | None = None
    #: the counter binding made by :meth:`grant`, undone when the app returns
    token: Token[Usage | None] | None = None
    #: the status handed to the server
    status: int | None = None
    _inner: Iterable[bytes] = ()

    def __init__(self, gate: Gate, start_response: StartResponse) -> None:
        # One frame, no super().__init__(): every other field starts at its class default.
        self.gate = gate
        self._start_response = start_response

    def grant(self, usage: Usage) -> None:
        """The Gate allowed it and armed ``usage``: the handler runs with it bound until the app returns."""
        self.usage = usage
        self.granted = True
        self.token = bind_counter(usage)

    def start_response(
        self, status: str, headers: list[tuple[str, str]], exc_info: ExcInfo | None = None
    ) -> Callable[[bytes], object]:
        granted = self.granted
        if granted:
            code = int(status[:3])
            usage = self.usage
            assert usage is not None
            headers = paid_headers(headers, usage.report() if succeeded(code, False) else None)
        elif self.refused:  # a hook or middleware inside ours may have changed the Gate's answer
            headers = refused_headers(headers, self.refused.reason)
        else:  # free
            headers = free_headers(headers)
        # A late error start_response (exc_info, headers already out) raises here: the status that
        # settles the hold stays the one that really went out, as in the ASGI adapter.
        if exc_info is None:
            write = self._start_response(status, headers)
        else:
            write = self._start_response(status, headers, exc_info)
        if granted:
            self.status = code
        return write

    def serve(self, app: WSGIApp, environ: Environ) -> Iterable[bytes]:
        """Call ``app``. Still ungranted when it returns: a free request, its body passed on untouched;
        granted (before or during the call): this exchange is the body, and settles at close."""
        try:
            result = app(environ, self.start_response)
        except BaseException:
            if self.granted:
                self._unbind()
                self.failed = True
                self._finish()
            raise
        if not self.granted:
            if result.__class__ is not GeneratorType:
                return result
            # A generator: middleware wrapping the app that calls it only once its body is iterated
            # (werkzeug's DebuggedApplication). The request may be granted then: run it as our body.
            self._iterator = self._inner = result
            return self
        self._unbind()
        try:
            self._iterator = iter(result)
        except TypeError:
            self.failed = True
            self._finish()
            raise TypeError(
                f"the WSGI application returned {type(result).__name__}, not an iterable of bytes "
                "(a view must return a response)"
            ) from None
        self._inner = result
        return self

    def _unbind(self) -> None:
        token = self.token
        if token is not None:
            self.token = None
            unbind_counter(token)

    def _finish(self) -> None:
        # Once a usage header went out the proxy bills it, so the ledger keeps it even if
        # the body later fails; before that, any failure releases the hold.
        if self.usage is not None:
            self.gate.finish(self.usage, success=succeeded(self.status, self.failed))

    # Being the body means a paid route's ``wsgi.file_wrapper`` body loses the server's sendfile
    # path; free routes' bodies are never wrapped.
    def close(self) -> None:
        close = getattr(self._inner, "close", None)
        if close is None:
            self._finish()
            return
        token = bind_counter(self.usage)  # a generator's ``finally`` may still record usage
        try:
            close()
        finally:
            unbind_counter(token)
            if self.granted:  # not, for a lazy body (see serve) whose request turned out free
                self._finish()
