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


@pytest.fixture(scope="module", params=sorted(ADAPTERS))
def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    name = request.param
    modules, argv = ADAPTERS[name]
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"{name}: {', '.join(missing)} not installed")
    db: Path = tmp_path_factory.mktemp(name) / "ledger.db"
    url = f"sqlite:///{db}"
    with serve(argv, env={"ZEROCLICK_LEDGER": url}) as base:
        ledger = open_ledger(url, plans=PLANS)
        try:
            yield Served(name, base, ledger)
        finally:
            ledger.close()
