"""A hit on Redis Cluster beside a hit on one Redis, in the same run: oxcache only.

The same app and store options on each backend: a shared endpoint (`/shared`, one entry)
and a per-user one (`/per-user`, 50 users in turn, each on their own entry, so the keys
spread over every primary). The single Redis and the cluster's nodes are redis-servers on
this machine's loopback, started by the session fixtures of tests/conftest.py (3 primaries
and 3 replicas for the cluster). What the figures show is the client-side cost of the
cluster (slot lookup, redis-py's cluster client); on a real network both pay one round trip.
"""

import asyncio
from typing import Any

import pytest
from fastapi import Depends, FastAPI, Header, HTTPException

from benches.asgi import call

BATCH = 50
USERS = [f"user-{i}".encode() for i in range(BATCH)]
BODY = {f"field{i}": f"value {i}" for i in range(10)}


async def user_id(x_user: str | None = Header(default=None)) -> str:
    if x_user is None:
        raise HTTPException(status_code=401)
    return x_user


def build(url: str) -> tuple[FastAPI, Any]:
    from oxcache import Cache, cache

    store = Cache(url, prefix="bench-cl")
    app = FastAPI()

    @app.get("/shared")
    @cache(expire=600, store=store)
    async def shared() -> dict[str, Any]:
        return BODY

    @app.get("/per-user")
    @cache(expire=600, store=store, per_user=user_id)
    async def per_user(user: str = Depends(user_id)) -> dict[str, Any]:
        return BODY

    return app, store


@pytest.mark.parametrize("backend", ["Redis", "Cluster"])
@pytest.mark.parametrize("path", ["/shared", "/per-user"])
def test_cluster_hit(
    benchmark: Any,
    loop: asyncio.AbstractEventLoop,
    request: pytest.FixtureRequest,
    backend: str,
    path: str,
) -> None:
    url = request.getfixturevalue("redis_url" if backend == "Redis" else "cluster_url")
    app, store = build(url)
    loop.run_until_complete(store.__aenter__())
    loop.run_until_complete(store.clear())
    headers = [[(b"x-user", u)] for u in USERS]

    async def batch() -> None:
        for h in headers:
            status, out, _ = await call(app, path, headers=h)
            assert status == 200 and out[b"x-fastapi-cache"] == b"Hit", out

    async def warm() -> None:
        for h in headers:
            await call(app, path, headers=h)

    loop.run_until_complete(warm())
    benchmark.group = f"cluster hit {path.strip('/')}"
    benchmark.extra_info.update(
        {"library": f"oxcache ({backend})", "scenario": "cluster", "batch": BATCH}
    )
    try:
        benchmark.pedantic(lambda: loop.run_until_complete(batch()), rounds=50, warmup_rounds=1)
        assert store.stats()["errors"] == 0
    finally:
        loop.run_until_complete(store.clear())
        loop.run_until_complete(store.__aexit__(None, None, None))
