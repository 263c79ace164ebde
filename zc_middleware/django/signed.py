"""What Django gives the signature step and the access path: the raw target and the body, read once
through ``request.body``."""

from __future__ import annotations

from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, UnreadablePostError
from django.http.request import RawPostDataException

from ..decision import Deny
from ..environ import header_getter
from ..gate import Gate
from ..identity import HeaderGetter
from ..signing import asgi_target, wsgi_target

__all__ = ["access", "verify"]


def verify(gate: Gate, request: HttpRequest) -> Deny | None:
    """:meth:`Gate.verify` for a Django request (WSGI or ASGI)."""
    assert gate.signatures is not None
    body = _body(request, gate.signatures.max_body)
    return gate.verify(request.META["REQUEST_METHOD"], _target(request), body, header_getter(request.META))


def access(gate: Gate, request: HttpRequest) -> tuple[str, str, bytes | None, HeaderGetter]:
    """What :meth:`Access.handle <zc_middleware.access.Access.handle>` takes of a request at the access
    path (``gate.access`` set): its method, raw target, body (read only for a ``POST``) and headers."""
    assert gate.access is not None
    method = request.META["REQUEST_METHOD"]
    body = _body(request, gate.access.max_body) if method == "POST" else b""
    return method, _target(request), body, header_getter(request.META)


def _target(request: HttpRequest) -> str:
    """The raw path and query the proxy signed: from the ASGI scope (``raw_path``), else from ``META``
    as the WSGI server keeps it (``RAW_URI``, ``REQUEST_URI``)."""
    scope = getattr(request, "scope", None)
    return asgi_target(scope) if isinstance(scope, dict) else wsgi_target(request.META)


def _body(request: HttpRequest, limit: int) -> bytes | None:
    """The body through ``request.body``, which keeps it (``request.body``, ``request.POST`` and
    ``request.read()`` in the view read it as sent); ``None`` past ``limit``. A middleware before ours
    that parsed a multipart body leaves no raw bytes: verified as empty, the request fails its
    signature, so keep ``ZeroClickMiddleware`` before any that reads ``request.POST``."""
    try:
        if int(request.META.get("CONTENT_LENGTH") or 0) > limit:
            return None
    except ValueError:
        pass
    try:
        body = request.body
    except RequestDataTooBig:  # past DATA_UPLOAD_MAX_MEMORY_SIZE
        return None
    except RawPostDataException:  # the stream was parsed already (see above)
        return b""
    except UnreadablePostError:  # the client left mid-body: refused (401), with no one left to read it
        return b""
    return body if len(body) <= limit else None
