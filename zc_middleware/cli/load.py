"""What ``--settings`` and ``--app`` name: a ``module:attr`` imported from the current directory, and
settings validated from it or from ``ZEROCLICK_*`` variables, every failure one line for people."""

from __future__ import annotations

import functools
import importlib
import os
import sys
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from .._text import did_you_mean
from ..errors import ConfigError, ZcError
from ..settings import ZeroClickSettings

__all__ = ["load_object", "load_settings"]


def load_object(spec: str, option: str) -> object:
    """The object ``module:attr`` names (``attr`` may be dotted), importing ``module`` as ``flask --app``
    and uvicorn do: with the current directory on ``sys.path``. Raises :class:`ConfigError`."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ConfigError("invalid_target", f"{option} {spec!r}: write module:attr, e.g. myproject.app:app")
    where = f"{option} {spec}"
    _current_directory_on_path()
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError("cannot_import", f"{where}: cannot import {module_name!r}: {exc}") from None
    except ValidationError as exc:  # e.g. a ZeroClickSettings(...) at module level
        raise ConfigError("invalid_settings", f"{where}: invalid {exc.title}: {_problems(exc)}") from None
    except ZcError as exc:  # e.g. ZeroClick(app) refusing the app's configuration
        raise ConfigError(exc.code, f"{where}: {exc.message}") from None
    try:
        return functools.reduce(getattr, attr.split("."), module)
    except AttributeError:
        names = [name for name in vars(module) if not name.startswith("_")]
        hint = did_you_mean(attr, names)
        raise ConfigError("no_attribute", f"{where}: module {module_name!r} has no attribute {attr!r}{hint}") from None


def load_settings(spec: str | None) -> ZeroClickSettings:
    """The settings ``--settings module:attr`` names (a :class:`ZeroClickSettings`, or a mapping of its
    fields), else those ``ZEROCLICK_*`` variables give. Raises :class:`ConfigError` naming what is wrong."""
    if spec is None:
        return _validated({}, "ZEROCLICK_* variables (no --settings given)", env=True)
    value = load_object(spec, "--settings")
    if isinstance(value, ZeroClickSettings):
        return value
    if isinstance(value, Mapping):
        if all(isinstance(key, str) for key in value):
            return _validated(value, f"--settings {spec}")
        kind = "mapping whose keys are not all strings"
    else:
        kind = type(value).__name__
    raise ConfigError("invalid_settings", f"--settings {spec}: a {kind}, not ZeroClickSettings or a mapping")


def _validated(fields: Mapping[str, Any], where: str, *, env: bool = False) -> ZeroClickSettings:
    """``ZeroClickSettings(**fields)``, the ``ZEROCLICK_*`` variables filling what ``fields`` leave out;
    with ``env``, errors name the variable rather than the field."""
    try:
        return ZeroClickSettings(**fields)
    except ValidationError as exc:
        raise ConfigError("invalid_settings", f"invalid settings from {where}: {_problems(exc, env=env)}") from None
    except ConfigError as exc:  # a ZEROCLICK_* variable that cannot be read
        raise ConfigError(exc.code, f"invalid settings from {where}: {exc.message}") from None


def _problems(exc: ValidationError, *, env: bool = False) -> str:
    """pydantic's errors on one line, each naming its key (``plans.starter.includes.api-requests.limit``),
    or its ``ZEROCLICK_*`` variable when ``env``."""
    found = []
    for error in exc.errors():
        loc = [str(part) for part in error["loc"]]
        if env and loc:
            loc[0] = f"ZEROCLICK_{loc[0].upper()}"
        found.append(f"{'.'.join(loc)}: {error['msg']}" if loc else error["msg"])
    return "; ".join(found)


def _current_directory_on_path() -> None:
    # An installed script starts with its own bin directory first on sys.path, not the current
    # one ("" or its path, as `python -m` and `python -c` put there), so the project would not import.
    cwd = os.getcwd()
    if "" not in sys.path and cwd not in sys.path:
        sys.path.insert(0, cwd)
