"""What per-user caching costs on a hit: oxcache only, against its own shared hits.

Three endpoints return the same small body on the same store: `shared` (no dependency),
`shared + auth` (`shared=True` and an authentication dependency that checks the same header,
so the only difference left is oxcache's per-user work), and `per-user`
(`per_user=<that dependency>`: the user id in the key, `Cache-Control: private`). 50 users
take turns, so every request is a hit on its own user's entry.

The dependencies are `async def`: FastAPI runs a plain `def` dependency in its threadpool,
which costs about 200 us per request on this machine whether or not anything is cached.
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


async def require_user(x_user: str | None = Header(default=None)) -> None:
    if x_user is None:
        raise HTTPException(status_code=401)


def build(redis_url: str | None) -> tuple[FastAPI, Any]:
    from oxcache import Cache, cache

    store = Cache(redis_url, prefix="bench-pu") if redis_url else Cache(prefix="bench-pu")
    app = FastAPI()

    @app.get("/shared")
    @cache(expire=600, store=store)
    async def shared() -> dict[str, Any]:
        return BODY

    @app.get("/shared-auth", dependencies=[Depends(require_user)])
    @cache(expire=600, store=store, shared=True)
    async def shared_auth() -> dict[str, Any]:
        return BODY

    @app.get("/per-user")
    @cache(expire=600, store=store, per_user=user_id)
    async def per_user() -> dict[str, Any]:
        return BODY

    return app, store


SCENARIOS = {"shared": "/shared", "shared + auth": "/shared-auth", "per-user": "/per-user"}


@pytest.mark.parametrize("backend", ["memory", "redis"])
@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_per_user_hit(
    benchmark: Any,
    loop: asyncio.AbstractEventLoop,
    request: pytest.FixtureRequest,
    backend: str,
    scenario: str,
) -> None:
    url = request.getfixturevalue("redis_url") if backend == "redis" else None
    app, store = build(url)
    path = SCENARIOS[scenario]
    loop.run_until_complete(store.__aenter__())
    loop.run_until_complete(store.clear())
    headers = [[(b"x-user", u)] for u in USERS]

    async def batch() -> None:
        for h in headers:
            status, out, _ = await call(app, path, headers=h)
            assert status == 200 and out[b"x-fastapi-cache"] == b"Hit", out
            assert out[b"cache-control"].startswith(b"private") == (scenario == "per-user")

    async def warm() -> None:
        for h in headers:
            await call(app, path, headers=h)

    loop.run_until_complete(warm())
    kind = "Redis" if url else "memory"
    benchmark.group = f"per-user hit {kind}"
    benchmark.extra_info.update(
        {"library": f"oxcache {scenario}", "scenario": "per-user", "batch": BATCH}
    )
    try:
        benchmark.pedantic(lambda: loop.run_until_complete(batch()), rounds=50, warmup_rounds=1)
    finally:
        loop.run_until_complete(store.clear())
        loop.run_until_complete(store.__aexit__(None, None, None))
