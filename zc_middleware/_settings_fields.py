"""The value types inside settings: a meter's channel, a route's cost, header names and paths.

Each validates itself where it is declared, so that :class:`~zc_middleware.settings.ZeroClickSettings`
holds only the checks that span several fields.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from .meters import MAX_QUANTITY
from .plans import whole

Positive = Annotated[int, BeforeValidator(whole), Field(ge=1, le=MAX_QUANTITY)]
# matched with ``fullmatch``: ``$`` would accept a trailing newline ("zc-agent-id\n")
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_PATH = re.compile(r"/[A-Za-z0-9._~/-]*")


def header_name(value: str) -> str:
    """An HTTP header name (a token), lower-cased."""
    if not _TOKEN.fullmatch(value):
        raise ValueError(f"{value!r} is not a valid HTTP header name")
    return value.lower()


def optional_path(value: object) -> object:
    """A path as the app sees it, or ``None`` for none (also an empty string, as from the environment)."""
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not _PATH.fullmatch(value):
        raise ValueError(f"{value!r} is not a path: '/' then letters, digits and '-._~/', e.g. '/zeroclick/access'")
    return value


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MeterConfig(_Frozen):
    """A meter the service bills on."""

    #: ``header``: reported in ``X-ZeroClick-Usage``; ``batch``: queued for the batch API.
    channel: Literal["header", "batch"] = "header"
    description: str = ""


class RouteCost(_Frozen):
    """A route's cost of one meter: a fixed ``quantity``, or an ``estimate`` billed as recorded."""

    quantity: Positive | None = None
    estimate: Positive | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_int(cls, value: Any) -> Any:
        return {"quantity": value} if isinstance(value, int) and not isinstance(value, bool) else value

    @model_validator(mode="after")
    def _one_of(self) -> RouteCost:
        if (self.quantity is None) == (self.estimate is None):
            raise ValueError("give exactly one of an integer quantity or {'estimate': n}")
        return self
