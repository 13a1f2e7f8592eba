"""Hits on routes with dependencies (issue 18), in process: oxcache (APIRoute, CachedRoute;
memory, Redis) against cashews, fastapi-cache2 and fastapi-cachex, and floor A (no cache),
interleaved in one run.

`python benches/with_redis.py python benches/dependencies_bench.py [--rounds 5] [--batch 40]`

The routes are the kinds the issue's table names:

- `db`: `/db/item/{id}?q=` with `db: Session = Depends(get_db)`, 100 keys. `get_db` is an
  async generator: a pool of 5 (`asyncio.Semaphore`), 1 ms of "check-out", then a Session;
  it is closed when FastAPI closes the request's dependencies. Sessions opened are counted.
- `me`: per user (`Authorization: Bearer user-<n>`, 20 users), the token dependency plus `db`.
- `me-nodb`: per user, the token dependency only.
- `hot`: `/item/{id}?q=`, no dependency, one key.

Each library is configured as its documentation says, with its escape hatch for the session:
oxcache `ignore_arg_types=[Session]`; cashews and fastapi-cache2 key templates / key builders
without `db`; fastapi-cachex keys the request (per user: `cache_authorized=True,
vary=["Authorization"]`). Every key is filled first; the measured requests are all hits
(checked: endpoint runs and sessions opened are counted per batch).

Each round runs one batch of every (variant, route) in a freshly shuffled order; a figure is
the median over rounds of wall and process CPU time per request. Requests go one at a time
through the raw ASGI app (`benches.asgi.call`), so a hit that opens a session pays its 1 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import Depends, FastAPI, Header, HTTPException

from benches.asgi import call


class Session:
    """A database session from the pool."""


@dataclass
class Pool:
    """Five connections, a 1 ms check-out each; counts the sessions opened."""

    opened: int = 0
    slots: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(5))

    async def get_db(self) -> AsyncIterator[Session]:
        async with self.slots:
            await asyncio.sleep(0.001)
            self.opened += 1
            yield Session()


async def current_user(authorization: str | None = Header(default=None)) -> str:
    if authorization is None or not authorization.startswith("Bearer "):
        raise HTTPException(status_code=401)
    return authorization[7:]


@dataclass
class Variant:
    name: str
    app: FastAPI
    pool: Pool
    runs: list[int]
    setup: Callable[[], Awaitable[None]] | None = None
    teardown: Callable[[], Awaitable[None]] | None = None
    #: oxcache's storage errors so far (reads that failed or timed out: served uncached).
    errors: Callable[[], int] = lambda: 0


def routes(app: FastAPI, decorate: Callable[[str, Any], Any], pool: Pool, runs: list[int]) -> None:
    """The four routes, each wrapped by `decorate(kind, endpoint)`."""

    async def item(id: int, q: str = "") -> dict[str, Any]:
        runs[0] += 1
        return {"id": id, "q": q, "name": f"item {id}"}

    async def db_item(id: int, q: str = "", db: Session = Depends(pool.get_db)) -> dict[str, Any]:
        runs[0] += 1
        return {"id": id, "q": q, "name": f"item {id}"}

    async def me(
        user_id: str = Depends(current_user), db: Session = Depends(pool.get_db)
    ) -> dict[str, Any]:
        runs[0] += 1
        return {"user": user_id}

    async def me_nodb(user_id: str = Depends(current_user)) -> dict[str, Any]:
        runs[0] += 1
        return {"user": user_id}

    app.get("/item/{id}")(decorate("item", item))
    app.get("/db/item/{id}")(decorate("db", db_item))
    app.get("/me")(decorate("me", me))
    app.get("/me-nodb")(decorate("me", me_nodb))


def floor_a(_: str | None) -> Variant:
    app, pool, runs = FastAPI(), Pool(), [0]
    routes(app, lambda kind, f: f, pool, runs)
    return Variant("floor A (no cache)", app, pool, runs)


def oxcache_variant(url: str | None, route: bool) -> Variant:
    from oxcache import Cache, CachedRoute, cache

    store = Cache(url, prefix="bench-deps" + ("-r" if route else ""), ignore_arg_types=[Session])
    app, pool, runs = FastAPI(), Pool(), [0]
    if route:
        app.router.route_class = CachedRoute

    def decorate(kind: str, f: Any) -> Any:
        if kind == "me":
            return cache(expire=3600, store=store, per_user=current_user)(f)
        return cache(expire=3600, store=store)(f)

    routes(app, decorate, pool, runs)

    async def setup() -> None:
        await store.__aenter__()
        await store.clear()

    async def teardown() -> None:
        await store.__aexit__(None, None, None)

    kind = "Redis" if url else "memory"
    name = f"oxcache {'CachedRoute' if route else 'APIRoute'} ({kind})"
    return Variant(name, app, pool, runs, setup, teardown, lambda: store.stats()["errors"])


def cashews_variant(url: str | None) -> Variant:
    from cashews import Cache

    cache = Cache()
    cache.setup(url or "mem://?size=100000")
    app, pool, runs = FastAPI(), Pool(), [0]
    keys = {"item": "item:{id}:{q}", "db": "db:{id}:{q}", "me": "me:{user_id}"}

    def decorate(kind: str, f: Any) -> Any:
        key = "nodb:" + keys[kind] if f.__name__ == "me_nodb" else f.__name__ + keys[kind]
        return cache(ttl="1h", key=key)(f)

    routes(app, decorate, pool, runs)

    async def setup() -> None:
        await cache.clear()

    async def teardown() -> None:
        await cache.close()

    return Variant(f"cashews ({'Redis' if url else 'memory'})", app, pool, runs, setup, teardown)


def fastapi_cache2_variant(url: str | None) -> Variant:
    from fastapi_cache import FastAPICache
    from fastapi_cache.decorator import cache

    app, pool, runs = FastAPI(), Pool(), [0]

    def key_builder(func: Any, namespace: str = "", *, request: Any = None, **kw: Any) -> str:
        kwargs = kw.get("kwargs", {})
        parts = [str(kwargs.get(n)) for n in ("id", "q", "user_id") if n in kwargs]
        return f"bench-fc2:{func.__name__}:" + ":".join(parts)

    routes(app, lambda kind, f: cache(expire=3600, key_builder=key_builder)(f), pool, runs)
    variant = Variant(f"fastapi-cache2 ({'Redis' if url else 'memory'})", app, pool, runs)

    async def setup() -> None:
        await _fc2_init(variant)
        await FastAPICache.clear()

    variant.setup = setup
    return variant


def fastapi_cachex_variant(_: str | None) -> Variant:
    from fastapi_cachex import BackendProxy, cache
    from fastapi_cachex.backends.memory import MemoryBackend

    app, pool, runs = FastAPI(), Pool(), [0]

    def decorate(kind: str, f: Any) -> Any:
        if kind == "me":
            return cache(ttl=3600, cache_authorized=True, vary=["Authorization"])(f)
        return cache(ttl=3600)(f)

    routes(app, decorate, pool, runs)
    backend = MemoryBackend()

    async def setup() -> None:
        BackendProxy.set(backend)
        await backend.clear()

    async def teardown() -> None:
        BackendProxy.set(None)

    return Variant("fastapi-cachex (memory)", app, pool, runs, setup, teardown)


#: Each variant by the name the HTTP bench gives it (`benches/http_deps_bench.py`), built for
#: a Redis URL (used by the Redis ones only).
TARGETS: dict[str, Callable[[str | None], Variant]] = {
    "floor-a-memory": lambda url: floor_a(None),
    "oxcache-memory": lambda url: oxcache_variant(None, False),
    "oxcache-route-memory": lambda url: oxcache_variant(None, True),
    "oxcache-redis": lambda url: oxcache_variant(url, False),
    "oxcache-route-redis": lambda url: oxcache_variant(url, True),
    "cashews-memory": lambda url: cashews_variant(None),
    "cashews-redis": lambda url: cashews_variant(url),
    "fastapi-cache2-memory": lambda url: fastapi_cache2_variant(None),
    "fastapi-cache2-redis": lambda url: fastapi_cache2_variant(url),
    "fastapi-cachex-memory": lambda url: fastapi_cachex_variant(None),
}

ROUTES: dict[str, list[tuple[str, bytes, list[tuple[bytes, bytes]]]]] = {
    "hot": [("/item/42", b"q=hello", [])],
    "db": [(f"/db/item/{i}", b"q=x", []) for i in range(100)],
    "me": [("/me", b"", [(b"authorization", f"Bearer user-{i}".encode())]) for i in range(20)],
    "me-nodb": [
        ("/me-nodb", b"", [(b"authorization", f"Bearer user-{i}".encode())]) for i in range(20)
    ],
}


async def batch(variant: Variant, route: str, size: int) -> tuple[float, float, int, int]:
    """`size` requests of `route`: wall and CPU seconds, endpoint runs, sessions opened."""
    requests = ROUTES[route]
    runs, opened = variant.runs[0], variant.pool.opened
    wall, cpu = time.perf_counter(), time.process_time()
    for i in range(size):
        path, query, headers = requests[i % len(requests)]
        status, _, _ = await call(variant.app, path, query, headers)
        assert status == 200, (variant.name, route, status)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return wall, cpu, variant.runs[0] - runs, variant.pool.opened - opened


async def main(rounds: int, size: int, url: str | None) -> None:
    builders: list[Callable[[], Variant]] = [
        lambda: floor_a(None),
        lambda: oxcache_variant(None, False),
        lambda: oxcache_variant(None, True),
        lambda: cashews_variant(None),
        lambda: fastapi_cache2_variant(None),
        lambda: fastapi_cachex_variant(None),
    ]
    if url:
        builders += [
            lambda: oxcache_variant(url, False),
            lambda: oxcache_variant(url, True),
            lambda: cashews_variant(url),
            lambda: fastapi_cache2_variant(url),
        ]
    variants = [build() for build in builders]
    results: dict[tuple[str, str], list[tuple[float, float, int, int]]] = {}
    pairs = [(v, r) for v in variants for r in ROUTES]
    for v in variants:
        if v.setup:
            await v.setup()
    for v, r in pairs:  # fill every key (and warm up)
        if v.name.startswith("fastapi-cache2"):
            await _fc2_init(v)
        await batch(v, r, len(ROUTES[r]))
    for _round in range(rounds):
        random.shuffle(pairs)
        for v, r in pairs:
            if v.name.startswith("fastapi-cache2"):
                await _fc2_init(v)  # one global backend: this variant's, before its batch
            results.setdefault((v.name, r), []).append(await batch(v, r, size))
    for v in variants:
        if v.teardown:
            await v.teardown()
    print(f"{rounds} rounds x {size} requests per (variant, route); load {os.getloadavg()[0]:.2f}")
    print("| route | variant | wall us/req | CPU us/req | endpoint runs | sessions per hit |")
    print("|---|---|---:|---:|---:|---:|")
    for r in ROUTES:
        for v in variants:
            got = results[(v.name, r)]
            wall = statistics.median(g[0] for g in got) / size * 1e6
            cpu = statistics.median(g[1] for g in got) / size * 1e6
            ran = sum(g[2] for g in got)
            sessions = sum(g[3] for g in got) / (size * len(got))
            print(f"| {r} | {v.name} | {wall:,.0f} | {cpu:,.0f} | {ran} | {sessions:.2f} |")


_FC2: dict[str, Any] = {}


async def _fc2_init(variant: Variant) -> None:
    """fastapi-cache2 keeps one global backend: point it at this variant's before a batch."""
    from fastapi_cache import FastAPICache

    backend = _FC2.get(variant.name)
    if backend is None:
        from fastapi_cache.backends.inmemory import InMemoryBackend
        from fastapi_cache.backends.redis import RedisBackend

        if "Redis" in variant.name:
            import redis.asyncio as aioredis

            backend = RedisBackend(aioredis.Redis.from_url(os.environ["REDIS_URL"]))
        else:
            backend = InMemoryBackend()
        _FC2[variant.name] = backend
    FastAPICache.reset()  # init() does nothing while another backend is set
    FastAPICache.init(backend, prefix="fc2")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=40)
    args = parser.parse_args()
    asyncio.run(main(args.rounds, args.batch, os.environ.get("REDIS_URL")))
