"""The near cache (issue 9): an L1 hit against floor A, in the same run.

Floor A is the endpoint with no cache; `oxcache (Redis)` the same endpoint cached on Redis;
`oxcache (Redis + near)` the same store with a `NearCache`, so after the first two requests
every hit is answered from the process's memory; `oxcache (Cluster + near)` the same on the
session's 3-primary Redis Cluster (issue 20: an L1 hit there should cost what it costs on one
Redis, within 1.1x, since it does no I/O either). Every round checks status, body, the hit
header, that the endpoint did not run, and (for the near cache) that every request of the
round was an L1 hit, so a near cache that silently fell back to Redis cannot look fast.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from fastapi import FastAPI

from benches.apps import Target, _routes, floor_a, oxcache_target
from benches.asgi import call

BATCH = 50
ROUNDS = {"small": 30, "50KiB": 15, "1MiB": 4}


def oxcache_near_target(redis_url: str | None, route: bool = False) -> Target:
    from oxcache import Cache, CachedRoute, NearCache, cache

    assert redis_url
    cluster = redis_url.startswith("redis+cluster://")
    prefix = "bench-nearr" if route else "bench-nearc" if cluster else "bench-near"
    store = Cache(redis_url, prefix=prefix, near=NearCache())
    app, calls = FastAPI(), [0]
    if route:
        app.router.route_class = CachedRoute
    _routes(app, lambda f: cache(expire=600, store=store)(f), calls, with_request=False)

    async def setup() -> None:
        await store.__aenter__()
        await store.clear()
        assert store.near is not None and await store.near.wait_ready(10.0)

    async def teardown() -> None:
        await store.__aexit__(None, None, None)

    kind = "Cluster" if cluster else "Redis"
    name = f"oxcache CachedRoute ({kind} + near)" if route else f"oxcache ({kind} + near)"
    target = Target(name, app, calls, setup, teardown, (b"x-fastapi-cache", b"Hit"))
    target.store = store  # type: ignore[attr-defined]
    return target


BUILDERS = {
    "floor-a": floor_a,
    "oxcache-redis": oxcache_target,
    "oxcache-near": oxcache_near_target,
    "oxcache-near-route": lambda url: oxcache_near_target(url, route=True),
    "oxcache-near-cluster": oxcache_near_target,
}
#: The builders given the cluster's URL rather than the single Redis's.
ON_CLUSTER = {"oxcache-near-cluster"}


@pytest.fixture(params=list(BUILDERS))
def target(request: pytest.FixtureRequest, loop: asyncio.AbstractEventLoop) -> Any:
    url = request.getfixturevalue("cluster_url" if request.param in ON_CLUSTER else "redis_url")
    made: Target = BUILDERS[request.param](url)
    if made.setup:
        loop.run_until_complete(made.setup())
    yield made
    if made.teardown:
        loop.run_until_complete(made.teardown())


@pytest.mark.parametrize("size", ["small", "50KiB", "1MiB"])
def test_near_hit(
    benchmark: Any, target: Target, loop: asyncio.AbstractEventLoop, size: str
) -> None:
    path = f"/{size}"
    status, _, expected = loop.run_until_complete(call(app := target.app, path))
    assert status == 200
    loop.run_until_complete(call(app, path))  # a hit everywhere (for near: into the L1)
    store = getattr(target, "store", None)

    async def batch() -> None:
        before = target.calls[0]
        l1_before = store.stats()["l1_hits"] if store is not None else 0
        for _ in range(BATCH):
            status, headers, body = await call(app, path)
            assert status == 200 and body == expected
            if target.hit_header is not None:
                name, value = target.hit_header
                assert headers.get(name) == value, headers
        if target.hit_header is not None:
            assert target.calls[0] == before, f"{target.name} ran the endpoint on a hit"
        if store is not None:
            assert store.stats()["l1_hits"] == l1_before + BATCH, "a hit went to Redis"

    benchmark.group = f"near hit {size}"
    benchmark.extra_info.update(
        {"library": target.name, "scenario": "near hit", "size": size, "batch": BATCH}
    )
    benchmark.pedantic(
        lambda: loop.run_until_complete(batch()), rounds=ROUNDS[size], warmup_rounds=1
    )
