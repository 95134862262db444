"""Fixtures for the tools' tests: loopback servers and retries that wait milliseconds."""

from __future__ import annotations

from typing import Callable, Iterator

import pytest
from tool_servers import LoopbackServer, Route

from fireact.tools.http import Retry


@pytest.fixture
def loopback() -> Iterator[Callable[[Route], LoopbackServer]]:
    servers: list[LoopbackServer] = []

    def start(route: Route) -> LoopbackServer:
        servers.append(LoopbackServer(route))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


@pytest.fixture
def fast_retry() -> Retry:
    """Retries that wait milliseconds, so error tests stay fast."""
    return Retry(max_retries=3, backoff=0.01, max_backoff=0.05, max_total_time=10.0)
