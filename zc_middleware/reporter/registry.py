"""The process's reporter for given settings: one per outbox URL, API key and base URL."""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING

from ..errors import ConfigError
from ..outbox import open_outbox
from .sender import Reporter

if TYPE_CHECKING:
    from ..settings import ZeroClickSettings

__all__ = ["get_reporter", "reporter_for"]

_registry: dict[tuple[str, str, str], Reporter] = {}
_registry_lock = threading.Lock()
_default: Reporter | None = None


def _after_fork() -> None:
    # A lock held by another thread at fork time would stay held forever in the child.
    global _registry_lock
    _registry_lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork)


def reporter_for(settings: ZeroClickSettings) -> Reporter:
    """The process's reporter for ``settings``' outbox and key (one per outbox URL, key and base URL)."""
    global _default
    if settings.api_key is None:
        raise ConfigError("missing_api_key", "usage reporting needs the service API key: set api_key")
    key = settings.api_key.get_secret_value()
    assert settings.outbox is not None  # resolved by the settings validator
    ident = (settings.outbox, settings.api_base_url, key)
    with _registry_lock:
        reporter = _registry.get(ident)
        if reporter is None:
            reporter = _registry[ident] = Reporter(
                open_outbox(settings.outbox),
                api_key=key,
                base_url=settings.api_base_url,
                known_meters=settings.meters,
                batch_size=settings.batch_size,
                flush_interval=settings.flush_interval,
                timeout=settings.request_timeout,
                backoff=settings.retry_backoff,
                backoff_max=settings.retry_backoff_max,
                shutdown_timeout=settings.shutdown_timeout,
            )
        _default = reporter
        return reporter


def get_reporter(settings: ZeroClickSettings | None = None) -> Reporter:
    """The reporter ``report_usage`` uses: the one the middleware set up, else one from ``settings``
    (default: ``ZeroClickSettings()`` read from ``ZEROCLICK_*`` environment variables)."""
    if settings is not None:
        return reporter_for(settings)
    if _default is not None:
        return _default
    from ..settings import ZeroClickSettings

    return reporter_for(ZeroClickSettings())  # type: ignore[call-arg]  # from ZEROCLICK_*
