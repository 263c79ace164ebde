"""Redis servers for the ledger tests: started once per session on free ports, each test its own key prefix."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from .redis_servers import SERVER, RedisServer, start_cluster

_ABSENT = "redis-server is not installed (apt-get install redis-server) or redis-py is missing"


def _available() -> bool:
    try:
        import redis  # noqa: F401
    except ImportError:
        return False
    return os.access(SERVER, os.X_OK)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    if not _available():
        pytest.skip(_ABSENT)
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[RedisServer]]:
    if not _available():
        pytest.skip(_ABSENT)
    nodes = start_cluster(tmp_path_factory.mktemp("redis-cluster"))
    yield nodes
    for node in nodes:
        node.stop()


def _prefix() -> str:
    return f"t{uuid.uuid4().hex[:12]}:"  # each test its own keys: no flushing between tests


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    return f"redis://{redis_server.address}/0?prefix={_prefix()}"


@pytest.fixture
def redis_cluster_url(redis_cluster: list[RedisServer]) -> str:
    return f"redis+cluster://{redis_cluster[0].address}?prefix={_prefix()}"
