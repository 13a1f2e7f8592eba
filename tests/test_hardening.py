"""The bugs the peer study found in every other FastAPI cache, one test per bug, each named
after the bug it prevents (`../shared/research/peer-study.md` section 4; docs/peers.md maps
each to the peers' probes). Parametrized over real Redis and memory.
"""

from __future__ import annotations

import logging
from typing import Any

import anyio
import pytest
import redis.asyncio as aioredis
from fastapi import FastAPI

from oxcache import Cache, MemoryBackend, cache
from tests.apps import MakeStore, client_for


def make_list_endpoint(kind: str, store: Cache, **options: Any) -> Any:
    """A route factory: every endpoint it builds is `list_items` in this module."""

    @cache(expire=60, store=store, **options)
    async def list_items(page: int = 1) -> dict[str, Any]:
        return {"kind": kind, "page": page}

    return list_items


def test_route_factory_endpoints_never_share_a_key(
    make_store: MakeStore, caplog: pytest.LogCaptureFixture
) -> None:
    store = make_store()
    app = FastAPI()
    with caplog.at_level(logging.WARNING, "oxcache"):
        users = make_list_endpoint("users", store)
        orders = make_list_endpoint("orders", store)
    app.get("/users")(users)
    app.get("/orders")(orders)
    with client_for(app, store) as client:
        for _ in range(2):  # miss, then hit
            assert client.get("/users").json() == {"kind": "users", "page": 1}
            assert client.get("/orders").json() == {"kind": "orders", "page": 1}
        assert client.get("/orders").headers["x-fastapi-cache"] == "Hit"
    assert store.key_for(users) != store.key_for(orders)
    assert store.key_for(users) == f"{store.prefix}:tests.test_hardening.list_items(page=1)"
    assert store.key_for(orders) == f"{store.prefix}:tests.test_hardening.list_items#2(page=1)"
    assert any("name=" in r.getMessage() for r in caplog.records)


def test_route_factory_names_can_be_pinned(make_store: MakeStore) -> None:
    store = make_store()
    a = make_list_endpoint("a", store, name="list_a")
    b = make_list_endpoint("b", store, name="list_b")
    assert store.key_for(a, page=2) == f"{store.prefix}:tests.test_hardening.list_a(page=2)"
    assert store.key_for(b, page=2) == f"{store.prefix}:tests.test_hardening.list_b(page=2)"


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
