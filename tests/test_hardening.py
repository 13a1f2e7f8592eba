"""The bugs the peer study found in every other FastAPI cache, one test per bug, each named
after the bug it prevents (`../shared/research/peer-study.md` section 4; docs/peers.md maps
each to the peers' probes). Parametrized over real Redis and memory.
"""

from __future__ import annotations

from typing import Any

import anyio
import redis.asyncio as aioredis
from fastapi import FastAPI

from oxcache import Cache, MemoryBackend, cache
from tests.apps import client_for


def test_memory_stores_never_share_entries_and_stay_bounded() -> None:
    one, two = Cache(max_entries=10), Cache(max_entries=10)
    assert one.backend is not two.backend
    apps = []
    for store, label in ((one, "one"), (two, "two")):
        app = FastAPI()

        @app.get("/x/{n}")
        @cache(expire=60, store=store)
        async def x(n: int, label: str = label) -> dict[str, Any]:
            return {"n": n, "store": label}

        apps.append((app, store, label))
    for app, store, label in apps:
        with client_for(app, store) as client:
            for n in range(100):
                assert client.get(f"/x/{n}").json() == {"n": n, "store": label}
        backend = store.backend
        assert isinstance(backend, MemoryBackend) and len(backend) == 10


def test_a_client_passed_in_is_never_closed(redis_url: str) -> None:
    async def scenario() -> bytes | None:
        client = aioredis.Redis.from_url(redis_url)
        store = Cache(client=client, prefix="mine")
        async with store:
            await store.write("mine:k", b"v", 60_000)
        await client.set("mine:after", b"still open")  # the store did not close it
        value: bytes | None = await client.get("mine:after")
        await client.delete("mine:k", "mine:after")
        await client.aclose()
        return value

    assert anyio.run(scenario) == b"still open"
