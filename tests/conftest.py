from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.apps.common import PLANS
from tests.servers import ADAPTERS, serve
from zc_middleware import Ledger, open_ledger


class Served:
    """A running scenario app and a ledger opened on the same SQLite file."""

    def __init__(self, name: str, base: str, ledger: Ledger) -> None:
        self.name = name
        self.base = base
        self.ledger = ledger


def serve_adapter(name: str, tmp: pytest.TempPathFactory, **env: str) -> Iterator[Served]:
    """The scenario app of adapter ``name`` under its real server, on a SQLite file of its own, with
    ``env`` added to the server's environment (skipped when the adapter's packages are missing)."""
    modules, argv = ADAPTERS[name]
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"{name}: {', '.join(missing)} not installed")
    db: Path = tmp.mktemp(name) / "ledger.db"
    url = f"sqlite:///{db}"
    with serve(argv, env={"ZEROCLICK_LEDGER": url, **env}) as base:
        ledger = open_ledger(url, plans=PLANS)
        try:
            yield Served(name, base, ledger)
        finally:
            ledger.close()


@pytest.fixture(scope="module", params=sorted(ADAPTERS))
def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    yield from serve_adapter(request.param, tmp_path_factory)
