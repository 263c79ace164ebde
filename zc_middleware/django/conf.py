"""``settings.ZEROCLICK`` to one validated :class:`ZeroClickSettings`, and the one Gate of this process.

Keys are the names of the :class:`ZeroClickSettings` fields in either case
(``METERS`` or ``meters``, as Flask reads ``app.config["ZEROCLICK"]``); one key
given twice, in two cases, and anything else are errors. Keys left out fall back
to ``ZEROCLICK_*`` environment variables, then to the defaults; nothing is ever
written back into Django's settings.
"""

from __future__ import annotations

import threading

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed

from .._settings_errors import InvalidSettings
from ..gate import Gate
from ..settings import ZeroClickSettings, settings_from_mapping

__all__ = ["build_settings", "checking_gate", "get_gate", "reset_gate", "zeroclick_settings"]

_lock = threading.Lock()
_gate: Gate | None = None


def build_settings(raw: object) -> tuple[ZeroClickSettings | None, list[str]]:
    """Validate a ``ZEROCLICK`` value: ``(settings, [])`` or ``(None, problems)``, each naming its key."""
    try:
        return settings_from_mapping(raw, "ZEROCLICK"), []
    except InvalidSettings as exc:
        return None, list(exc.problems)


def zeroclick_settings() -> ZeroClickSettings:
    """This project's settings, or :class:`ImproperlyConfigured` listing every problem."""
    try:
        return settings_from_mapping(getattr(settings, "ZEROCLICK", None), "ZEROCLICK")
    except InvalidSettings as exc:
        raise ImproperlyConfigured(f"ZEROCLICK setting is malformed: {exc.message}") from None


def get_gate() -> Gate:
    """The process's Gate, built on first use from ``settings.ZEROCLICK``."""
    global _gate
    gate = _gate
    if gate is not None:
        return gate
    with _lock:
        if _gate is None:
            _gate = Gate(zeroclick_settings())
        return _gate


def reset_gate() -> None:
    """Forget the Gate (closing its ledger); the next request builds a new one. For tests."""
    global _gate
    with _lock:
        gate, _gate = _gate, None
    if gate is not None:
        gate.close()


def checking_gate(config: ZeroClickSettings) -> Gate:
    """A Gate that only prices views (:meth:`Gate.pricing_only`): ``manage.py check`` and
    ``zeroclick_routes`` never open the real store nor start delivering a previous run's usage."""
    return Gate.pricing_only(config)


def _on_setting_changed(*, setting: str, **kwargs: object) -> None:
    if setting == "ZEROCLICK":
        reset_gate()


setting_changed.connect(_on_setting_changed, dispatch_uid="zc_middleware.django.conf")
