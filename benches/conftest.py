"""Benchmark fixtures: a redis-server of the session's own, and an event loop to drive apps."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from tests.conftest import (  # noqa: F401 - the same session fixtures as the tests
    cluster_url,
    redis_url,
)


@pytest.fixture(scope="session")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()
