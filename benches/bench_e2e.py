"""End to end, in process: the same app under each library, on the same Redis and in memory.

Each benchmark round sends BATCH requests through the whole ASGI app with a raw driver
(benches/asgi.py), so the per-request figure is the round time / BATCH. Every round checks
the responses (status, body, and for hits that the endpoint did not run), so a library that
silently stops caching cannot look fast.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest

from benches.apps import BUILDERS, Target
from benches.asgi import call

BATCH = 50
# 1 MiB rounds are shorter: the slowest peers take 200 ms a request there.
BATCHES = {"small": BATCH, "50KiB": BATCH, "1MiB": 10}
ROUNDS = {"small": 30, "50KiB": 15, "1MiB": 4}

CASES = [(library, backend) for library, (_, backends) in BUILDERS.items() for backend in backends]


@pytest.fixture(params=CASES, ids=[f"{lib}-{backend}" for lib, backend in CASES])
def target(request: pytest.FixtureRequest, loop: asyncio.AbstractEventLoop) -> Any:
    library, backend = request.param
    url = request.getfixturevalue("redis_url") if backend == "redis" else None
    build, _ = BUILDERS[library]
    made: Target = build(url)
    if made.setup:
        loop.run_until_complete(made.setup())
    yield made
    if made.teardown:
        loop.run_until_complete(made.teardown())


def _record(benchmark: Any, target: Target, scenario: str, size: str) -> None:
    benchmark.group = f"e2e {scenario} {size}"
    benchmark.extra_info.update(
        {"library": target.name, "scenario": scenario, "size": size, "batch": BATCHES[size]}
    )


def _is_floor(target: Target) -> bool:
    return target.name.startswith("floor")


@pytest.mark.parametrize("size", ["small", "50KiB", "1MiB"])
def test_hit(benchmark: Any, target: Target, loop: asyncio.AbstractEventLoop, size: str) -> None:
    path = f"/{size}"
    status, _, expected = loop.run_until_complete(call(app := target.app, path))
    assert status == 200
    loop.run_until_complete(call(app, path))  # the second request is a hit everywhere

    async def batch() -> None:
        before = target.calls[0]
        for _ in range(BATCHES[size]):
            status, headers, body = await call(app, path)
            assert status == 200 and body == expected
            if target.hit_header is not None:
                name, value = target.hit_header
                assert headers.get(name) == value, headers
        if not _is_floor(target):
            assert target.calls[0] == before, f"{target.name} ran the endpoint on a hit"

    _record(benchmark, target, "hit", size)
    benchmark.pedantic(
        lambda: loop.run_until_complete(batch()), rounds=ROUNDS[size], warmup_rounds=1
    )


_fresh = itertools.count()


def test_miss(benchmark: Any, target: Target, loop: asyncio.AbstractEventLoop) -> None:
    async def batch() -> None:
        before = target.calls[0]
        for _ in range(BATCH):
            query = f"n={next(_fresh)}".encode()
            status, _, body = await call(target.app, "/small", query)
            assert status == 200 and body.startswith(b"{")
        assert target.calls[0] == before + BATCH, f"{target.name} did not run the endpoint"

    _record(benchmark, target, "miss", "small")
    benchmark.pedantic(
        lambda: loop.run_until_complete(batch()), rounds=ROUNDS["small"], warmup_rounds=1
    )


@pytest.mark.parametrize("size", ["small", "1MiB"])
def test_not_modified(
    benchmark: Any, target: Target, loop: asyncio.AbstractEventLoop, size: str
) -> None:
    path = f"/{size}"
    status, headers, _ = loop.run_until_complete(call(target.app, path))
    tag = headers.get(b"etag")
    if tag is None:
        pytest.skip(f"{target.name} sends no ETag")
    conditional = [(b"if-none-match", tag)]
    status, _, _ = loop.run_until_complete(call(target.app, path, headers=conditional))
    if status != 304:
        pytest.skip(f"{target.name} does not answer If-None-Match with 304 (got {status})")

    async def batch() -> None:
        for _ in range(BATCHES[size]):
            status, _, body = await call(target.app, path, headers=conditional)
            assert status == 304 and body == b""

    _record(benchmark, target, "304", size)
    benchmark.pedantic(
        lambda: loop.run_until_complete(batch()), rounds=ROUNDS[size], warmup_rounds=1
    )
