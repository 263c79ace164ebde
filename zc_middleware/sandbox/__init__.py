"""A local stand-in for ZeroClick, for offline development: ``zc-middleware sandbox``.

It serves ZeroClick's batch endpoint (``POST /v1/usage/batch``: bearer auth,
strict validation, the 1,000-event limit, dedupe on ``idempotencyKey``) and a
reverse proxy in front of the seller's app that adds the buyer identity header
and reads and strips ``X-ZeroClick-Usage``, as ZeroClick's proxy does. Usage
from both channels is kept per buyer and meter: ``GET /__sandbox/usage.txt``.

Not a library API: nothing here is used by the middleware itself.
"""

from __future__ import annotations

try:
    import starlette  # noqa: F401
except ImportError:  # pragma: no cover - exercised only without the extra
    raise ImportError("zc_middleware.sandbox needs Starlette: pip install 'zc-middleware[starlette]'") from None

from .app import create_app
from .command import add_parser, run

__all__ = ["add_parser", "create_app", "run"]
