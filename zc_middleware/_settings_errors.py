"""Settings problems said for people: each at its key, with the closest valid name.

:mod:`zc_middleware.settings` validates; this module only words what it finds.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, get_args

from pydantic import BaseModel, ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError

from ._text import did_you_mean

__all__ = ["problem", "with_hints"]


def problem(kind: str, loc: tuple[str, ...], message: str, value: object = None) -> InitErrorDetails:
    """One located error for :meth:`ValidationError.from_exception_data`: raised from a validator,
    pydantic keeps each one's location under the validator's own, where a ``ValueError`` has none."""
    # the message is context, not the template, so braces in a route name are never formatted
    return {"type": PydanticCustomError(kind, "{message}", {"message": message}), "loc": loc, "input": value}


def _unknown(keys: Sequence[object], fields: Sequence[str]) -> list[str]:
    """One note per unknown key, each with its closest field; the valid keys listed once, on the last."""
    notes = [f"unknown key{did_you_mean(key, fields)}" for key in keys]
    if notes:
        notes[-1] += f"; valid keys: {', '.join(fields)}"
    return notes


def with_hints(exc: ValidationError, model: type[BaseModel]) -> ValidationError:
    """``exc`` with a "did you mean" for each key ``model`` does not know, the valid keys listed once
    per mapping; pydantic's own "Extra inputs are not permitted" names neither."""
    errors = exc.errors()
    unknown: dict[tuple[str, ...], list[int]] = {}
    for i, error in enumerate(errors):
        if error["type"] == "extra_forbidden":
            unknown.setdefault(tuple(map(str, error["loc"][:-1])), []).append(i)
    if not unknown:
        return exc
    messages = {i: error["msg"] for i, error in enumerate(errors)}
    for parent, indexes in unknown.items():
        notes = _unknown([errors[i]["loc"][-1] for i in indexes], _keys_at(model, parent))
        messages.update(zip(indexes, notes, strict=True))
    details = [
        problem(error["type"], tuple(map(str, error["loc"])), messages[i], error["input"])
        for i, error in enumerate(errors)
    ]
    return ValidationError.from_exception_data(exc.title, details)


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
