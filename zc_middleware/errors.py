"""The one exception type: a caller's misuse or a broken environment, with a stable code.

"This buyer is out of units" is never an exception: it is a :class:`~zc_middleware.decision.Deny`.
"""

from __future__ import annotations

__all__ = ["ConfigError", "ZcError"]


class ZcError(Exception):
    """A misuse of the package, carrying a stable machine-readable ``code``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"[{code}] {message}")
        self.code = code
        self.message = message


class ConfigError(ZcError, ValueError):
    """Configuration that cannot work; raised at start-up wherever possible."""
