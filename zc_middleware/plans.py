"""The plan models: what a plan includes of each meter, validated alike for settings and ledgers.

Settings and every ledger read plans, so the models live here rather than in
either: a ledger never imports the settings object, only what a plan is.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from .errors import ConfigError
from .meters import MAX_QUANTITY, normalize_meter_name
from .periods import Reset

__all__ = ["Count", "MeterAllowance", "MeterName", "PlanConfig", "no_bool", "whole"]


def no_bool(value: object) -> object:
    """Refuse ``True``/``False`` where a count is meant: pydantic would read them as 1 and 0."""
    if isinstance(value, bool):
        raise ValueError("must be an integer, not a boolean")
    return value


def whole(value: object) -> object:
    """Refuse anything but an ``int`` where a limit or quantity is meant: pydantic would read
    ``"10"``, ``10.0`` and ``b"9"`` as 10 and 9, and ``True`` as 1."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"must be an integer, got {type(value).__name__} {value!r}")
    return value


def _label(value: object) -> str:
    try:
        return normalize_meter_name(value)
    except ConfigError as exc:
        raise ValueError(exc.message) from None  # pydantic then shows the message without the code


Count = Annotated[int, BeforeValidator(whole), Field(ge=0, le=MAX_QUANTITY)]
MeterName = Annotated[str, BeforeValidator(_label)]


class MeterAllowance(BaseModel):
    """What a plan includes of one meter: ``limit`` units (``None``: unlimited) per ``reset``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    limit: Count | None
    reset: Reset = "month"


class PlanConfig(BaseModel):
    """One plan: whether new buyers get it, and its allowance of each meter it includes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    default: bool = False
    includes: dict[MeterName, MeterAllowance] = Field(default_factory=dict)
