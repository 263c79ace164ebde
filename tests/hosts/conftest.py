"""The stores the many-hosts tests share between app servers: a ``redis-server`` of their own, and the
tests' throwaway PostgreSQL database (:mod:`tests.postgres_db`)."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator

import pytest

from tests.ledger.conftest import _ABSENT, _available
from tests.ledger.redis_servers import RedisServer
from tests.postgres_db import postgres_server  # noqa: F401  (fixture)

for needed in ("uvicorn", "starlette", "gunicorn", "flask"):
    if importlib.util.find_spec(needed) is None:
        pytest.skip(f"{needed} not installed", allow_module_level=True)


@pytest.fixture(scope="module")
def own_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A ``redis-server`` for this module alone, which its tests may stop and start again."""
    if not _available():
        pytest.skip(_ABSENT)
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module", params=["redis", "postgresql"])
def store(request: pytest.FixtureRequest) -> str:
    """The URL every app server of a test shares."""
    if request.param == "redis":
        server: RedisServer = request.getfixturevalue("own_redis")
        return f"redis://{server.address}/0"
    return str(request.getfixturevalue("postgres_server"))
