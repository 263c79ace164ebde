"""``settings.ZEROCLICK`` to one validated :class:`ZeroClickSettings`, and the one Gate of this process.

Keys are the upper-case names of the :class:`ZeroClickSettings` fields
(``METERS``, ``PLANS``, ``LEDGER``, ``ROUTES``, ...); anything else is an error.
Keys left out fall back to ``ZEROCLICK_*`` environment variables, then to the
defaults; nothing is ever written back into Django's settings.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from pydantic import ValidationError

from ..errors import ConfigError
from ..gate import Gate
from ..ledger import open_ledger
from ..settings import ZeroClickSettings

__all__ = ["FIELDS", "build_settings", "checking_gate", "get_gate", "reset_gate", "zeroclick_settings"]

#: ``ZEROCLICK`` key -> ``ZeroClickSettings`` field
FIELDS: dict[str, str] = {name.upper(): name for name in ZeroClickSettings.model_fields}

_lock = threading.Lock()
_gate: Gate | None = None


def _where(loc: tuple[int | str, ...]) -> str:
    if not loc:
        return "ZEROCLICK"
    head, *rest = loc
    return ".".join([str(head).upper(), *map(str, rest)])


def build_settings(raw: object) -> tuple[ZeroClickSettings | None, list[str]]:
    """Validate a ``ZEROCLICK`` value: ``(settings, [])`` or ``(None, problems)``, each naming its key."""
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        return None, [f"ZEROCLICK must be a dict, got {type(raw).__name__}"]
    problems: list[str] = []
    fields: dict[str, Any] = {}
    for key, value in raw.items():
        field = FIELDS.get(key) if isinstance(key, str) else None
        if field is None:
            hint = f" (write {key.upper()!r})" if isinstance(key, str) and key.upper() in FIELDS else ""
            problems.append(f"unknown key {key!r}{hint}; expected one of {', '.join(FIELDS)}")
        else:
            fields[field] = value
    if problems:
        return None, problems
    try:
        return ZeroClickSettings(**fields), []
    except ValidationError as exc:
        return None, [f"{_where(err['loc'])}: {err['msg']}" for err in exc.errors()]
    except ConfigError as exc:  # a ZEROCLICK_* environment variable that cannot be read
        return None, [exc.message]


def zeroclick_settings() -> ZeroClickSettings:
    """This project's settings, or :class:`ImproperlyConfigured` listing every problem."""
    built, problems = build_settings(getattr(settings, "ZEROCLICK", None))
    if built is None:
        raise ImproperlyConfigured("ZEROCLICK setting is malformed: " + "; ".join(problems))
    return built


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
    """A Gate that only prices views: a throwaway ``memory://`` ledger, no batch sender.

    ``manage.py check`` and ``zeroclick_routes`` use it, so they never open the real
    store nor start delivering a previous run's queued usage.
    """
    if "api_key" in type(config).model_fields:
        config = config.model_copy(update={"api_key": None})
    return Gate(config, ledger=open_ledger("memory://", plans=config.plans))


def _on_setting_changed(*, setting: str, **kwargs: object) -> None:
    if setting == "ZEROCLICK":
        reset_gate()


setting_changed.connect(_on_setting_changed, dispatch_uid="zc_middleware.django.conf")
