"""Settings problems said for people: each at its key as the user wrote it, with the closest valid name.

:mod:`zc_middleware.settings` validates; this module only words what it finds, so a mistyped key
reads the same from arguments, ``app.config["ZEROCLICK"]`` and ``settings.ZEROCLICK``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, get_args

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails, InitErrorDetails, PydanticCustomError

from ._text import did_you_mean
from .errors import ConfigError

__all__ = ["InvalidSettings", "InvalidValues", "fold_keys", "located", "problem", "with_hints"]


class InvalidSettings(ConfigError):
    """Settings that cannot work; ``problems`` names each one's key as the user wrote it."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = tuple(problems)
        many = f"{len(self.problems)} problems:\n  " + "\n  ".join(self.problems)
        super().__init__("invalid_settings", many if len(self.problems) > 1 else self.problems[0])


class InvalidValues(ValidationError, ConfigError):
    """What ``ZeroClickSettings(...)`` raises: pydantic's ``ValidationError`` (every problem at its
    location, ``errors()``), and a :class:`ConfigError` (``invalid_settings``), so that callers
    catch every bad setting as one of ours."""

    code = "invalid_settings"

    def __init__(self, *args: object) -> None:  # built by ``from_exception_data``, never called directly
        pass

    @property
    def message(self) -> str:  # type: ignore[override]
        return str(self)


def problem(kind: str, loc: tuple[str, ...], message: str, value: object = None) -> InitErrorDetails:
    """One located error for :meth:`ValidationError.from_exception_data`: raised from a validator,
    pydantic keeps each one's location under the validator's own, where a ``ValueError`` has none."""
    # the message is context, not the template, so braces in a route name are never formatted
    return {"type": PydanticCustomError(kind, "{message}", {"message": message}), "loc": loc, "input": value}


def _unknown(keys: Sequence[object], fields: Sequence[str], *, any_case: bool = False) -> list[str]:
    """One note per unknown key, each with its closest field; the valid keys listed once, on the last.
    With ``any_case`` (keys read in either case), each suggestion is in its key's case, the list in the
    case most keys are written in."""
    upper = [any_case and isinstance(key, str) and key.isupper() for key in keys]

    def cased(up: bool) -> list[str]:
        return [field.upper() if up else field for field in fields]

    notes = [f"unknown key{did_you_mean(key, cased(up))}" for key, up in zip(keys, upper, strict=True)]
    if notes:
        notes[-1] += f"; valid keys: {', '.join(cased(2 * sum(upper) >= len(upper)))}"
    return notes


def fold_keys(
    sources: Iterable[tuple[str, Mapping[Any, Any]]], fields: Iterable[str]
) -> tuple[dict[str, Any], dict[str, str], list[str]]:
    """Case-insensitive keys of ``(name, mapping)`` sources, later ones winning: the values by field,
    each field's key as written (``ZEROCLICK.PLANS``), and the problems (a key given twice, unknown keys)."""
    fields = list(fields)
    values: dict[str, Any] = {}
    paths: dict[str, str] = {}
    problems: list[str] = []
    for where, mapping in sources:
        spellings: dict[str, list[object]] = {}
        for key, value in mapping.items():
            field = key.lower() if isinstance(key, str) else repr(key)
            spellings.setdefault(field, []).append(key)
            values[field], paths[field] = value, f"{where}.{key}"
        for field, keys in spellings.items():
            if len(keys) > 1:
                problems.append(f"{where} gives {field!r} twice, as {' and '.join(map(repr, keys))} (keys ignore case)")
        unknown = [keys[0] for field, keys in spellings.items() if field not in fields]
        notes = _unknown(unknown, fields, any_case=True)
        problems += [f"{where}.{key}: {note}" for key, note in zip(unknown, notes, strict=True)]
    return values, paths, problems


def located(error: ErrorDetails, where: str, paths: Mapping[str, str]) -> str:
    """``error`` as one line naming its key as written: under ``where``, or the variable it came from."""
    message = error["msg"].removeprefix("Value error, ")
    if not error["loc"]:
        return f"{where}: {message}"
    field, *rest = map(str, error["loc"])
    variable = f"ZEROCLICK_{field.upper()}"
    if field in paths:
        head = paths[field]
    elif variable in {name.upper() for name in os.environ}:  # read whatever its case, as pydantic-settings does
        head = variable
    else:
        head = f"{where}.{field.upper()}"
        message = f"{message} (give it here or as {variable})"
    return f"{'.'.join([head, *rest])}: {message}"


def with_hints(exc: ValidationError, model: type[BaseModel]) -> InvalidValues:
    """``exc`` as :class:`InvalidValues`, with a "did you mean" for each key ``model`` does not know,
    the valid keys listed once per mapping; pydantic's own "Extra inputs are not permitted" names neither."""
    errors = exc.errors()
    unknown: dict[tuple[str, ...], list[int]] = {}
    for i, error in enumerate(errors):
        if error["type"] == "extra_forbidden":
            unknown.setdefault(tuple(map(str, error["loc"][:-1])), []).append(i)
    messages = {i: error["msg"] for i, error in enumerate(errors)}
    for parent, indexes in unknown.items():
        notes = _unknown([errors[i]["loc"][-1] for i in indexes], _keys_at(model, parent))
        messages.update(zip(indexes, notes, strict=True))
    details = [
        problem(error["type"], tuple(map(str, error["loc"])), messages[i], error["input"])
        for i, error in enumerate(errors)
    ]
    return InvalidValues.from_exception_data(exc.title, details)


def _keys_at(model: type[BaseModel], loc: Sequence[str]) -> list[str]:
    """The keys the model at ``loc`` accepts: ``("plans", "starter")`` -> ``default``, ``includes``."""
    node: Any = model
    for part in loc:
        if isinstance(node, type) and issubclass(node, BaseModel):
            if part not in node.model_fields:
                return []
            node = node.model_fields[part].annotation
        else:  # a dict[key, value]: ``part`` is one of its keys
            node = get_args(node)[-1]
    return list(node.model_fields) if isinstance(node, type) and issubclass(node, BaseModel) else []
