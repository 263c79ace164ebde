from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.reporter.helpers import BatchAPI, batch_api


@pytest.fixture(scope="module")
def api_server() -> Iterator[BatchAPI]:
    with batch_api() as api:
        yield api


@pytest.fixture
def api(api_server: BatchAPI) -> BatchAPI:
    api_server.configure()
    return api_server
