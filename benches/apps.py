"""The same endpoint under each library, on Redis or in memory, built the way each documents.

No `from __future__ import annotations` here: fastapi-redis-cache matches ignored argument
types by annotation identity, so string annotations would put Request objects in its keys
and it would never hit (its defect D11); real annotations measure it as documented.

Every builder returns a `Target`: the ASGI app, an async setup and teardown, and a counter of
endpoint executions so the benchmarks can prove a "hit" really skipped the endpoint.
"""

import json
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any, Callable

import redis.asyncio as aioredis
from fastapi import FastAPI, Request, Response

SIZES = {"small": 10, "50KiB": 50 * 1024, "1MiB": 1024 * 1024}


def payload(size: str) -> dict[str, Any]:
    """A JSON object of ten fields, padded to about the named size."""
    data: dict[str, Any] = {f"field{i}": f"value {i}" for i in range(10)}
    target = SIZES[size]
    if target > 100:
        data["items"] = [
            {"id": i, "name": f"item-{i:06d}", "ok": True} for i in range(target // 40)
        ]
    return data


@dataclass
class Target:
    name: str
    app: FastAPI
    calls: list[int] = field(default_factory=lambda: [0])
    setup: Callable[[], Awaitable[None]] | None = None
    teardown: Callable[[], Awaitable[None]] | None = None
    hit_header: tuple[bytes, bytes] | None = (
        None  # header proving a hit, when the library sends one
    )


def _routes(
    app: FastAPI, decorate: Callable[[Any], Any], calls: list[int], with_request: bool
) -> None:
    bodies = {size: payload(size) for size in SIZES}
    for size in SIZES:

        def make(size: str = size) -> Any:
            if with_request:

                async def endpoint(
                    request: Request, response: Response, n: int = 0
                ) -> dict[str, Any]:
                    calls[0] += 1
                    return bodies[size]
            else:

                async def endpoint(n: int = 0) -> dict[str, Any]:  # type: ignore[misc]
                    calls[0] += 1
                    return bodies[size]

            endpoint.__name__ = f"endpoint_{size}"
            endpoint.__qualname__ = endpoint.__name__
            return endpoint

        app.get(f"/{size}")(decorate(make()))


def floor_a(_: str | None) -> Target:
    app, calls = FastAPI(), [0]
    _routes(app, lambda f: f, calls, with_request=False)
    return Target("floor A (no cache)", app, calls)


def floor_b(redis_url: str | None) -> Target:
    """No cache, but one bare redis.asyncio GET per request: the unavoidable cost of a hit."""
    assert redis_url
    client = aioredis.Redis.from_url(redis_url)
    app, calls = FastAPI(), [0]

    def decorate(func: Any) -> Any:
        async def wrapper(n: int = 0) -> Any:
            await client.get("bench:floor-b")
            return await func(n=n)

        wrapper.__name__ = func.__name__
        return wrapper

    _routes(app, decorate, calls, with_request=False)

    async def setup() -> None:
        await client.set("bench:floor-b", json.dumps(payload("small")))

    async def teardown() -> None:
        await client.aclose()

    return Target("floor B (no cache + 1 Redis GET)", app, calls, setup, teardown)


def oxcache_target(redis_url: str | None, route: bool = False) -> Target:
    """oxcache with the default `APIRoute`, or with `CachedRoute` (hits answered before
    FastAPI solves the parameters)."""
    from oxcache import Cache, CachedRoute, cache

    prefix = "bench-oxr" if route else "bench-ox"
    store = Cache(redis_url, prefix=prefix) if redis_url else Cache(prefix=prefix)
    app, calls = FastAPI(), [0]
    if route:
        app.router.route_class = CachedRoute
    _routes(app, lambda f: cache(expire=600, store=store)(f), calls, with_request=False)

    async def setup() -> None:
        await store.__aenter__()
        await store.clear()

    async def teardown() -> None:
        await store.__aexit__(None, None, None)

    kind = "Redis" if redis_url else "memory"
    name = f"oxcache CachedRoute ({kind})" if route else f"oxcache ({kind})"
    return Target(name, app, calls, setup, teardown, (b"x-fastapi-cache", b"Hit"))


def oxcache_route_target(redis_url: str | None) -> Target:
    return oxcache_target(redis_url, route=True)


def oxcache_compressed_target(redis_url: str | None) -> Target:
    """oxcache storing entries of 1 KiB and more LZ4-compressed (`compress_over=1024`)."""
    from oxcache import Cache, cache

    store = Cache(redis_url, prefix="bench-oxz", compress_over=1024)
    app, calls = FastAPI(), [0]
    _routes(app, lambda f: cache(expire=600, store=store)(f), calls, with_request=False)

    async def setup() -> None:
        await store.__aenter__()
        await store.clear()

    async def teardown() -> None:
        await store.__aexit__(None, None, None)

    return Target(
        "oxcache, compress_over=1024 (Redis)",
        app,
        calls,
        setup,
        teardown,
        (b"x-fastapi-cache", b"Hit"),
    )


def fastapi_cache2_target(redis_url: str | None) -> Target:
    from fastapi_cache import FastAPICache
    from fastapi_cache.backends.inmemory import InMemoryBackend
    from fastapi_cache.backends.redis import RedisBackend
    from fastapi_cache.decorator import cache

    client = aioredis.Redis.from_url(redis_url) if redis_url else None
    app, calls = FastAPI(), [0]
    _routes(app, lambda f: cache(expire=600)(f), calls, with_request=False)

    async def setup() -> None:
        FastAPICache.reset()
        FastAPICache.init(RedisBackend(client) if client else InMemoryBackend(), prefix="bench-fc2")
        await FastAPICache.clear()

    async def teardown() -> None:
        FastAPICache.reset()
        if client:
            await client.aclose()

    kind = "Redis" if redis_url else "memory"
    return Target(
        f"fastapi-cache2 ({kind})", app, calls, setup, teardown, (b"x-fastapi-cache", b"HIT")
    )


def cashews_target(redis_url: str | None) -> Target:
    from cashews import Cache
    from cashews.contrib.fastapi import CacheEtagMiddleware

    cache = Cache()
    cache.setup(redis_url or "mem://")
    app, calls = FastAPI(), [0]
    app.add_middleware(CacheEtagMiddleware, cache_instance=cache)
    _routes(app, lambda f: cache(ttl="10m")(f), calls, with_request=False)

    async def setup() -> None:
        await cache.clear()

    async def teardown() -> None:
        await cache.close()

    kind = "Redis" if redis_url else "memory"
    return Target(f"cashews ({kind})", app, calls, setup, teardown)


def fastapi_cachex_target(redis_url: str | None) -> Target:
    from urllib.parse import urlparse

    from fastapi_cachex import BackendProxy, cache
    from fastapi_cachex.backends.memory import MemoryBackend
    from fastapi_cachex.backends.redis import AsyncRedisCacheBackend

    app, calls = FastAPI(), [0]
    _routes(app, lambda f: cache(ttl=600, debug_header=True)(f), calls, with_request=True)
    backend: Any = None

    async def setup() -> None:
        nonlocal backend
        if redis_url:
            url = urlparse(redis_url)
            backend = AsyncRedisCacheBackend(
                host=url.hostname or "127.0.0.1", port=url.port or 6379, key_prefix="bench-cx:"
            )
        else:
            backend = MemoryBackend()
        BackendProxy.set(backend)
        await backend.clear()

    async def teardown() -> None:
        BackendProxy.set(None)
        close = getattr(backend, "close", None) or getattr(backend, "aclose", None)
        if close is not None:
            result = close()
            if hasattr(result, "__await__"):
                await result

    kind = "Redis" if redis_url else "memory"
    return Target(f"fastapi-cachex ({kind})", app, calls, setup, teardown, (b"x-cache", b"HIT"))


def fastapi_redis_cache_target(redis_url: str | None) -> Target:
    """fastapi-redis-cache: Redis only, with its sync client; request/response parameters
    declared, as its README does, since without them it sends broken bodies."""
    assert redis_url
    from fastapi_redis_cache import FastApiRedisCache, cache

    app, calls = FastAPI(), [0]
    _routes(app, lambda f: cache(expire=600)(f), calls, with_request=True)

    async def setup() -> None:
        FastApiRedisCache().init(host_url=redis_url, prefix="bench-frc")
        FastApiRedisCache().redis.flushdb()

    return Target(
        "fastapi-redis-cache (Redis)", app, calls, setup, None, (b"x-fastapi-cache", b"Hit")
    )


BUILDERS: dict[str, tuple[Callable[[str | None], Target], tuple[str, ...]]] = {
    "floor-a": (floor_a, ("memory",)),
    "floor-b": (floor_b, ("redis",)),
    "oxcache": (oxcache_target, ("redis", "memory")),
    "oxcache-route": (oxcache_route_target, ("redis", "memory")),
    "fastapi-redis-cache": (fastapi_redis_cache_target, ("redis",)),
    "fastapi-cache2": (fastapi_cache2_target, ("redis", "memory")),
    "cashews": (cashews_target, ("redis", "memory")),
    "fastapi-cachex": (fastapi_cachex_target, ("redis", "memory")),
}
