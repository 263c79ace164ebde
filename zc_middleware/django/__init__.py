"""Django adapter: ``MIDDLEWARE += ["zc_middleware.django.ZeroClickMiddleware"]``.

Add ``"zc_middleware.django"`` to ``INSTALLED_APPS`` for the system checks
(``manage.py check`` reports a malformed ``ZEROCLICK`` setting before any
traffic) and the ``zeroclick_*`` management commands.
"""

from __future__ import annotations

try:
    import django  # noqa: F401
except ImportError:  # pragma: no cover - exercised by tests/django/test_django.py
    raise ImportError("zc_middleware.django needs Django: pip install 'zc-middleware[django]'") from None

from .conf import get_gate, reset_gate, zeroclick_settings
from .middleware import ZeroClickMiddleware

__all__ = ["ZeroClickMiddleware", "get_gate", "reset_gate", "zeroclick_settings"]
