"""Request headers as PEP 3333 keeps them in ``environ`` (and Django in ``request.META``)."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any

from .identity import HeaderGetter
from .signing import wsgi_target

if TYPE_CHECKING:
    from .decision import Deny
    from .gate import Gate

__all__ = [
    "Environ",
    "access",
    "buyer_key",
    "buyer_of",
    "environ_key",
    "header_getter",
    "path_key",
    "read_body",
    "verify_signed",
]

Environ = dict[str, Any]
_SPECIAL = {"content-type": "CONTENT_TYPE", "content-length": "CONTENT_LENGTH"}


def environ_key(name: str) -> str:
    """Where header ``name`` is kept: ``zc-agent-id`` is ``HTTP_ZC_AGENT_ID``."""
    name = name.lower()
    return _SPECIAL.get(name) or "HTTP_" + name.upper().replace("-", "_")


def header_getter(environ: Environ) -> HeaderGetter:
    """Look request headers up in ``environ`` by lower-case name."""

    def get_header(name: str) -> str | None:
        value = environ.get(environ_key(name))
        return value if isinstance(value, str) else None

    return get_header


def buyer_key(gate: Gate) -> str | None:
    """The ``environ`` key of the Gate's identity header; ``None`` when a custom ``identify`` decides."""
    return environ_key(gate.identity_header) if gate.identity_header else None


def buyer_of(gate: Gate, environ: Environ, key: str | None) -> str | None:
    """The buyer id of a request: ``environ[key]`` for the default identity, else ``gate.identify``.
    (The Gate refuses a value that is not a valid id, a non-string included.)"""
    return environ.get(key) if key is not None else gate.identify(header_getter(environ))


def path_key(environ: Environ) -> tuple[object, object, object]:
    """What a router that decides by method and path alone sees: method, script name and path."""
    return environ.get("REQUEST_METHOD"), environ.get("SCRIPT_NAME"), environ.get("PATH_INFO")


def read_body(environ: Environ, limit: int) -> bytes | None:
    """A paid request's body, read once from ``wsgi.input`` to verify its signature and put back as a
    fresh ``wsgi.input`` (``CONTENT_LENGTH`` matching), so the app reads it as sent. ``None`` when it
    is larger than ``limit`` (a ``CONTENT_LENGTH`` past it: nothing is read). A body without
    ``CONTENT_LENGTH`` is read only when the server says the stream ends with it
    (``wsgi.input_terminated``, chunked requests), and then at most ``limit + 1`` bytes of it."""
    try:
        length: int | None = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    stream = environ.get("wsgi.input")
    if not length and environ.get("wsgi.input_terminated"):
        length = None
    elif length is not None and length > limit:
        return None
    if stream is None or length == 0:
        return b""
    chunks: list[bytes] = []
    size = 0
    want = limit + 1 if length is None else length
    while size < want:  # read() may return less than asked
        chunk = stream.read(want - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    if size > limit:
        return None
    body = b"".join(chunks)
    environ["wsgi.input"] = io.BytesIO(body)
    environ["CONTENT_LENGTH"] = str(len(body))
    return body


def verify_signed(gate: Gate, environ: Environ, get_header: HeaderGetter) -> Deny | None:
    """The signature step of a paid WSGI request (``gate.signatures`` set): its body read once
    (:func:`read_body`) and its raw target, verified; ``None`` when the proxy signed it, else the refusal."""
    assert gate.signatures is not None
    body = read_body(environ, gate.signatures.max_body)
    return gate.verify(environ["REQUEST_METHOD"], wsgi_target(environ), body, get_header)


def access(gate: Gate, environ: Environ) -> Deny:
    """The answer to a WSGI request at the Gate's access path (``gate.access`` set): its body read
    once (:func:`read_body`), handed to :class:`~zc_middleware.access.Access` with its raw target."""
    assert gate.access is not None
    method = environ["REQUEST_METHOD"]
    body = read_body(environ, gate.access.max_body) if method == "POST" else b""
    return gate.access.handle(method, wsgi_target(environ), body, header_getter(environ))
