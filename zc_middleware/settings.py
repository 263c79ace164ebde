"""One validated settings object, built at start-up from arguments, a framework's mapping or the environment.

Explicit arguments win over environment variables (``ZEROCLICK_*``; mappings
such as ``ZEROCLICK_METERS`` are JSON). Every invalid value fails here, naming
its key (``plans.starter.includes.api-requests.limit``); a mistyped key or meter
name also names the closest valid one.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from ._settings_errors import InvalidSettings, fold_keys, located, problem, with_hints
from ._settings_fields import MeterConfig, RouteCost, header_name, optional_path
from ._text import did_you_mean
from .access import DEFAULT_ACCESS_PATH
from .errors import ConfigError
from .meters import MeterSpec, normalize_meter_name
from .plans import MeterAllowance, MeterName, PlanConfig
from .plans import no_bool as _no_bool
from .reporter.contract import check_http_url
from .signing import DEFAULT_MAX_BODY, DEFAULT_TOLERANCE, check_kids
from .stores import check_url

__all__ = ["MeterAllowance", "MeterConfig", "PlanConfig", "ZeroClickSettings", "settings_from_mapping"]


_SLUG = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")


class ZeroClickSettings(BaseSettings):
    """Everything the middleware needs, validated once."""

    model_config = SettingsConfigDict(env_prefix="ZEROCLICK_", extra="forbid", frozen=True, case_sensitive=False)

    if not TYPE_CHECKING:  # type checkers keep the signature pydantic gives: one keyword per field

        def __init__(self, **values: Any) -> None:
            try:
                super().__init__(**values)
            except SettingsError as exc:
                # pydantic-settings reads every ZEROCLICK_* variable, even one an argument overrides,
                # and names neither the variable nor what is wrong with it
                found = re.search(r'field "(\w+)"', str(exc))
                name = f"ZEROCLICK_{found.group(1).upper()}" if found else "a ZEROCLICK_* setting"
                raise ConfigError(
                    "invalid_settings",
                    f"{name} cannot be read from the environment ({exc.__cause__ or exc}); mappings are "
                    """JSON, e.g. ZEROCLICK_METERS='{"api-requests": {}}'""",
                ) from exc
            except ValidationError as exc:
                raise with_hints(exc, type(self)) from None

    meters: dict[MeterName, MeterConfig]
    plans: dict[str, PlanConfig] = Field(default_factory=dict)
    #: route name -> meter -> cost; decided from the router's match, never the raw path
    routes: dict[str, dict[MeterName, RouteCost]] = Field(default_factory=dict)
    #: ``sqlite:///path.db`` (embedded default), ``memory://``, ``redis://host:port/0``
    ledger: str = "sqlite:///zeroclick.db"
    #: seconds a networked ledger (Redis) may take to answer before the request gets ``on_ledger_error``
    ledger_timeout: Annotated[float, Field(gt=0, le=60)] = 0.5
    #: seconds an SQLite ledger waits for another process's write lock before its write fails
    #: (a failed settle is journaled and retried, see ``journal_dir``)
    sqlite_busy_timeout: Annotated[float, Field(gt=0, le=600)] = 5.0
    #: where settles, releases and batch events whose write failed are journaled until they apply
    #: (docs/durability.md); default: beside a SQLite ledger's file, else ``./zc-journal``
    journal_dir: str | None = None
    identity_header: Annotated[str, AfterValidator(header_name)] = "zc-agent-id"
    service_slug: str | None = None
    #: what a paid request gets when the ledger cannot answer: ``deny`` (503) or ``allow``
    on_ledger_error: Literal["deny", "allow"] = "deny"
    #: usage recorded beyond a route's estimate: ``cap`` bills the estimate; ``bill`` debits the excess
    #: too when the plan still covers it (reported on the batch channel), else bills the estimate
    over_estimate: Literal["cap", "bill"] = "cap"

    # -- the proxy's signature (``zc-signature``) ----------------------------------
    #: kid -> secret; when set, every paid request must be signed by one of them (``401`` if not).
    #: Two kids at once while rotating. Never logged, hidden in ``repr``
    signing_secrets: Annotated[dict[str, SecretStr], AfterValidator(check_kids)] = Field(default_factory=dict)
    #: seconds the signature's timestamp may be from the server's clock, either way
    signature_tolerance: Annotated[int, BeforeValidator(_no_bool), Field(ge=1, le=86_400)] = DEFAULT_TOLERANCE
    #: bytes of a paid request's body read to verify its signature; a larger body is answered ``413``
    max_signed_body: Annotated[int, BeforeValidator(_no_bool), Field(ge=0, le=1 << 30)] = DEFAULT_MAX_BODY
    #: where the middleware itself takes ZeroClick's signed entitlement writes (``POST``), the path as
    #: the app sees it; ``None`` (or an empty ``ZEROCLICK_ACCESS_PATH``) turns it off
    access_path: Annotated[str | None, BeforeValidator(optional_path)] = DEFAULT_ACCESS_PATH

    # -- async reporting (the batch channel) --------------------------------------
    #: the service API key for ``POST /v1/usage/batch``; never logged, hidden in ``repr``
    api_key: SecretStr | None = None
    api_base_url: str = "https://pay.zeroclick.io"
    #: ``sqlite:///path.db`` or ``memory://``; default: the ledger's SQLite file, else ``memory://``
    outbox: str | None = None
    #: the proxy's request id, from which request events' idempotency keys are derived
    request_id_header: Annotated[str, AfterValidator(header_name)] = "zc-request-id"
    #: seconds between sends when fewer than a full batch are waiting
    flush_interval: Annotated[float, Field(gt=0, le=3600)] = 1.0
    #: seconds one batch call may take before it is retried
    request_timeout: Annotated[float, Field(gt=0, le=600)] = 10.0
    #: at most this long is spent delivering what is left at shutdown (ASGI lifespan, ``atexit``)
    shutdown_timeout: Annotated[float, Field(ge=0, le=600)] = 5.0
    batch_size: Annotated[int, BeforeValidator(_no_bool), Field(ge=1, le=1000)] = 1000
    #: full-jitter exponential backoff: ``uniform(0, min(max, base * 2**attempt))``
    retry_backoff: Annotated[float, Field(gt=0, le=600)] = 0.5
    retry_backoff_max: Annotated[float, Field(gt=0, le=3600)] = 60.0

    @field_validator("meters", "plans", "routes", mode="before")
    @classmethod
    def _unique_labels(cls, value: Any) -> Any:
        if isinstance(value, Mapping):
            seen: dict[str, object] = {}
            for key in value:
                try:
                    label = normalize_meter_name(key)
                except ConfigError:
                    continue  # reported by the key validator with its message
                if label in seen and label != key:
                    raise ValueError(f"{key!r} and {seen[label]!r} name the same meter {label!r}")
                seen[label] = key
        return value

    @field_validator("meters")
    @classmethod
    def _some_meter(cls, value: dict[str, MeterConfig]) -> dict[str, MeterConfig]:
        if not value:
            raise ValueError("declare at least one meter, e.g. {'api-requests': {}}")
        return value

    @field_validator("service_slug")
    @classmethod
    def _slug(cls, value: str | None) -> str | None:
        if value is not None and not _SLUG.fullmatch(value):
            raise ValueError(f"{value!r} is not a service slug (lowercase letters, digits, hyphens)")
        return value

    @field_validator("ledger")
    @classmethod
    def _ledger_url(cls, value: str) -> str:
        try:
            check_url("ledger", value)
        except ConfigError as exc:
            raise ValueError(exc.message) from None
        return value

    @field_validator("api_base_url")
    @classmethod
    def _base_url(cls, value: str) -> str:
        try:
            return check_http_url("api_base_url", value).rstrip("/")
        except ConfigError as exc:
            raise ValueError(exc.message) from None

    @field_validator("api_key")
    @classmethod
    def _key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().strip():
            raise ValueError("api_key is empty; set it to the service API key from the ZeroClick dashboard")
        return value

    @field_validator("outbox")
    @classmethod
    def _outbox_url(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                check_url("outbox", value)
            except ConfigError as exc:
                raise ValueError(exc.message) from None
        return value

    @model_validator(mode="after")
    def _references(self) -> ZeroClickSettings:
        if self.outbox is None:  # resolved once here, so everyone reads the same URL
            object.__setattr__(self, "outbox", _default_outbox(self.ledger))
        problems: list[InitErrorDetails] = []
        batch = [name for name, meter in self.meters.items() if meter.channel == "batch"]
        if batch and self.api_key is None:
            message = f"required: meters {batch} use the batch channel, which needs the service API key"
            problems.append(problem("missing_api_key", ("api_key",), message))
        defaults = [name for name, plan in self.plans.items() if plan.default]
        if len(defaults) > 1:
            problems.append(problem("two_defaults", ("plans",), f"only one plan may be the default, got {defaults}"))
        for name, plan in self.plans.items():
            problems += self._unknown_meters(("plans", name, "includes"), plan.includes)
        for route, costs in self.routes.items():
            if not costs:
                problems.append(problem("no_meter", ("routes", route), "give at least one meter"))
            problems += self._unknown_meters(("routes", route), costs)
        if problems:
            # raised as a ValidationError, pydantic keeps each problem's location (a ValueError has none)
            raise ValidationError.from_exception_data(type(self).__name__, problems)
        return self

    def _unknown_meters(self, loc: tuple[str, ...], names: Iterable[str]) -> list[InitErrorDetails]:
        return [
            problem("unknown_meter", loc, f"unknown meter {name!r}{did_you_mean(name, self.meters)}", name)
            for name in names
            if name not in self.meters
        ]

    @property
    def batch_meters(self) -> frozenset[str]:
        return frozenset(name for name, meter in self.meters.items() if meter.channel == "batch")

    @property
    def default_plan(self) -> str | None:
        return next((name for name, plan in self.plans.items() if plan.default), None)

    @property
    def extend_url(self) -> str | None:
        return f"https://{self.service_slug}.pay.zeroclick.io/extend" if self.service_slug else None

    def route_specs(self, route: str) -> tuple[MeterSpec, ...]:
        return tuple(
            MeterSpec.make(meter, cost.quantity, cost.estimate) for meter, cost in self.routes.get(route, {}).items()
        )


def settings_from_mapping(raw: object, where: str, overrides: Mapping[str, Any] | None = None) -> ZeroClickSettings:
    """Settings from a framework's mapping, keys in either case; ``overrides`` (explicit arguments) win over
    it, ``ZEROCLICK_*`` variables fill in. Raises ``InvalidSettings`` (a :class:`ConfigError`) listing every
    problem at its key as written, under ``where`` or ``settings``: ``ZEROCLICK.PLANS.starter.includes``."""
    if not isinstance(raw, Mapping | None):
        raise InvalidSettings([f"{where} must be a dict, got {type(raw).__name__}"])
    sources = [(where, raw or {}), ("settings", overrides or {})]
    values, paths, problems = fold_keys(sources, ZeroClickSettings.model_fields)
    if problems:
        raise InvalidSettings(problems)
    try:
        return ZeroClickSettings(**values)
    except ValidationError as exc:
        raise InvalidSettings([located(error, where, paths) for error in exc.errors()]) from None
    except ConfigError as exc:  # a ZEROCLICK_* variable that cannot be read
        raise InvalidSettings([exc.message]) from None


def limit_of(settings: ZeroClickSettings, plan: str, meter: str) -> float:
    """A plan's limit for a meter: ``inf`` for unlimited, 0 when the plan does not include it."""
    config = settings.plans.get(plan)
    allowance = config.includes.get(meter) if config else None
    if allowance is None:
        return 0
    return math.inf if allowance.limit is None else allowance.limit


def _default_outbox(ledger: str) -> str:
    """The ledger's own store when an outbox driver serves its scheme (SQLite, PostgreSQL: then a
    request's debit and its batch events commit together), else ``memory://``."""
    try:
        check_url("outbox", ledger)
    except ConfigError:
        return "memory://"
    return ledger
