"""Stores by URL: each driver declares its schemes, and a lookup imports a driver only when asked for.

A ledger or outbox is named by a URL (``memory://``, ``sqlite:///path.db``).
Each driver class says which schemes it serves (``schemes = ("sqlite",)``) and
is registered when its class is created; :data:`MODULES` names the module
that defines each built-in scheme, so that module, and whatever it needs, is
imported only when a URL with its scheme is first looked up. A driver defined
outside this package registers itself the same way once its module is imported.
"""

from __future__ import annotations

import importlib
from typing import ClassVar, TypeVar
from urllib.parse import urlsplit

from ._text import did_you_mean
from .errors import ConfigError

__all__ = ["MODULES", "Store", "check_url"]

S = TypeVar("S", bound="Store")

#: kind -> scheme -> the module whose import registers that scheme's driver
MODULES: dict[str, dict[str, str]] = {
    "ledger": {"memory": "zc_middleware.ledger.memory", "sqlite": "zc_middleware.ledger.sqlite"}
    | dict.fromkeys(("redis", "rediss", "redis+cluster"), "zc_middleware.ledger.redis"),
    "outbox": {"memory": "zc_middleware.outbox.memory", "sqlite": "zc_middleware.outbox.sqlite"},
}
for _kind, _schemes in MODULES.items():  # PostgreSQL keeps both kinds, under either name libpq takes
    _schemes.update(dict.fromkeys(("postgresql", "postgres"), f"zc_middleware.{_kind}.postgres"))
#: kind -> scheme -> driver class, filled as driver classes are created
_DRIVERS: dict[str, dict[str, type[Store]]] = {kind: {} for kind in MODULES}


class Store:
    """What every ledger and outbox driver is: a class opened from a URL with one of its schemes."""

    #: ``"ledger"`` or ``"outbox"``: set once by the interface every driver of that kind extends
    kind: ClassVar[str]
    #: the URL schemes this class serves; only a class that sets it in its own body is registered
    schemes: ClassVar[tuple[str, ...]] = ()

    def __init__(self, url: str, *, create: bool = True) -> None:
        """``create=False``: a driver that keeps a file refuses to start a new, empty one where a
        store was expected (``no_<kind>``); a store without a file has nothing to find."""
        self.url = url
        self.create = create

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        for scheme in cls.__dict__.get("schemes", ()):
            _DRIVERS.setdefault(cls.kind, {})[scheme] = cls

    @classmethod
    def check_url(cls, url: str) -> None:
        """Raise :class:`ConfigError` for a URL of this driver's scheme that it could never open."""

    @classmethod
    def driver(cls: type[S], url: str) -> type[S]:
        """The driver of this kind for ``url``'s scheme, its URL checked (``Ledger.driver(url)``);
        raises :class:`ConfigError` (``unknown_<kind>``) naming the known schemes."""
        found = _find(cls.kind, url)
        if not issubclass(found, cls):
            raise TypeError(f"{found.__qualname__} serves {cls.kind} URLs but is not a {cls.__qualname__}")
        found.check_url(url)
        return found


def _find(kind: str, url: str) -> type[Store]:
    scheme = urlsplit(url).scheme
    drivers = _DRIVERS.setdefault(kind, {})
    if scheme not in drivers and scheme in MODULES.get(kind, {}):
        importlib.import_module(MODULES[kind][scheme])  # its driver registers itself
    found = drivers.get(scheme)
    if found is None:
        schemes = {**MODULES.get(kind, {}), **drivers}
        known = ", ".join(f"{name}://" for name in schemes)
        hint = did_you_mean(scheme, schemes) if scheme else ""
        raise ConfigError(f"unknown_{kind}", f"unknown {kind} URL {url!r}: expected one of {known}{hint}")
    return found


def check_url(kind: str, url: str) -> str:
    """Return ``url``'s scheme once a ``kind`` driver serves it and accepts the URL, else raise
    :class:`ConfigError`. Settings validate with this: it needs the kind's name, not its interface."""
    _find(kind, url).check_url(url)
    return urlsplit(url).scheme
