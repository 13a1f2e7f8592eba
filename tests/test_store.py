"""store.py: `Cache`. Its configuration and lifecycle (memory stores of their own, bounded;
a client passed in is never closed), reading what is stored (a foreign or corrupt value is a
miss, then overwritten), stats(), and the public invalidation API (invalidate, invalidate_tag,
clear, and the tag indexes behind them). On memory, Redis and Redis Cluster (parametrized
through make_store) unless a test needs one backend."""

from __future__ import annotations

import time
from functools import partial
from typing import Any

import anyio
import pytest
import redis
import redis.asyncio as aioredis
from fastapi import FastAPI
from fastapi.testclient import TestClient

from oxcache import Cache, MemoryBackend, RedisBackend, cache
from tests.apps import MakeStore, client_for, current_user_id, item_app
from tests.conftest import sync_client

# -- configuration and lifecycle ---------------------------------------------------------------


def test_two_memory_stores_never_share_entries() -> None:
    first, second = Cache(), Cache()
    app = FastAPI()

    @app.get("/a")
    @cache(store=first)
    async def a() -> int:
        return 1

    @app.get("/b")
    @cache(store=second)
    async def b() -> int:
        return 2

    with client_for(app, first) as client:
        client.get("/a")
    assert len(first.backend) == 1  # type: ignore[arg-type]
    assert len(second.backend) == 0  # type: ignore[arg-type]


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


# -- reading entries, and the counters ---------------------------------------------------------


def _find(app: FastAPI, path: str) -> Any:
    for route in app.routes:
        if getattr(route, "path", None) == path:
            return route.endpoint  # type: ignore[attr-defined]
    raise LookupError(path)


def test_corrupted_value_is_a_miss_then_overwritten(make_store: MakeStore) -> None:
    store = make_store()
    app, calls = item_app(store)
    key = store.key_for(_find(app, "/item/{id}"), "http://testserver", id=9)
    with client_for(app, store) as client:
        for garbage in (b"not ours", b"OXC\x07" + b"\x00" * 60, b""):
            # On the app's event loop: redis.asyncio connections belong to one loop.
            client.portal.call(store.backend.set, key, garbage, 60_000)
            assert client.get("/item/9").headers["x-fastapi-cache"] == "Miss"
            assert client.get("/item/9").headers["x-fastapi-cache"] == "Hit"
    assert calls == [9, 9, 9]


@pytest.mark.parametrize(
    "garbage",
    [b"not ours", b"OXC\x07" + b"\x00" * 60, b"OXC\x01" + b"\xff" * 40, b"\x00", b'{"a": 1}'],
)
def test_foreign_or_corrupt_values_are_misses_then_hits(
    make_store: MakeStore, garbage: bytes
) -> None:
    store = make_store()
    app, calls = item_app(store, named=True)
    key = store.key_for(app.routes[-1].endpoint, "http://testserver", id=3)  # type: ignore[attr-defined]
    with TestClient(app) as client:
        client.portal.call(store.backend.set, key, garbage, 60_000)
        first = client.get("/item/3")
        second = client.get("/item/3")
    assert first.status_code == 200 and first.headers["x-fastapi-cache"] == "Miss"
    assert second.headers["x-fastapi-cache"] == "Hit" and second.json() == first.json()
    assert calls == [3]


def test_stats_count_what_happened(make_store: MakeStore) -> None:
    store = make_store()
    app, _ = item_app(store, named=True)
    with TestClient(app) as client:
        client.get("/item/1")
        client.get("/item/1")
        tag = client.get("/item/1").headers["etag"]
        client.get("/item/1", headers={"If-None-Match": tag})
        client.get("/item/1", headers={"Cache-Control": "no-cache"})
    stats = store.stats()
    assert stats["misses"] == 1 and stats["hits"] == 3 and stats["bypasses"] == 1
    assert stats["bytes_written"] > 0 and stats["bytes_read"] >= 2 * stats["bytes_written"]
    assert stats["errors"] == 0


# -- invalidation: by call, by tag, clear(), and the indexes behind them -----------------------


def test_invalidate_and_clear(make_store: MakeStore) -> None:
    store = make_store()
    app, _ = item_app(store)
    endpoint = _find(app, "/item/{id}")
    with client_for(app, store) as client:
        client.get("/item/1")
        client.get("/item/2")
        assert client.portal.call(partial(store.invalidate, endpoint, id=1)) == 1
        assert client.get("/item/1").headers["x-fastapi-cache"] == "Miss"
        assert client.get("/item/2").headers["x-fastapi-cache"] == "Hit"
        # Two entries (on Redis, with their variants indexes: every origin of a call is
        # listed, and the indexes' generations).
        assert client.portal.call(store.clear) in (2, 6)
        assert client.get("/item/2").headers["x-fastapi-cache"] == "Miss"


def test_tags_are_formatted_from_arguments_and_invalidated(make_store: MakeStore) -> None:
    store = make_store()
    app = FastAPI()

    @app.get("/items/{id}")
    @cache(expire=60, tags=["items", "item:{id}"], store=store)
    async def item(id: int) -> dict[str, int]:
        return {"id": id}

    @app.get("/items")
    @cache(expire=60, tags=["items"], store=store)
    async def items() -> list[int]:
        return [1, 2]

    def state(client: TestClient) -> list[str]:
        paths = ("/items/1", "/items/2", "/items")
        return [client.get(path).headers["x-fastapi-cache"] for path in paths]

    with client_for(app, store) as client:
        assert state(client) == ["Miss", "Miss", "Miss"]
        assert client.portal.call(store.invalidate_tag, "item:1") == 1
        assert state(client) == ["Miss", "Hit", "Hit"]
        assert client.portal.call(store.invalidate_tag, "items") == 3
        assert state(client) == ["Miss", "Miss", "Miss"]
        assert client.portal.call(store.invalidate_tag, "no-such-tag") == 0


def test_clear_leaves_foreign_keys_alone(redis_url: str, redis_client: redis.Redis) -> None:
    store = Cache(redis_url, prefix="clear-test")
    app = FastAPI()

    @app.get("/u")
    @cache(expire=60, per_user=current_user_id, tags=["t"], store=store)
    async def u() -> dict[str, int]:
        return {"ok": 1}

    redis_client.set("clear-test-foreign", b"keep")
    redis_client.set("foreign:clear-test:x", b"keep")
    try:
        with client_for(app, store) as client:
            client.get("/u", headers={"X-User": "1"})
            assert redis_client.exists(store.user_index("1"))
            # the entry, its user, tag and variants indexes, and their three generations
            assert client.portal.call(store.clear) == 7
        assert list(redis_client.scan_iter(match="clear-test:*")) == []
        assert redis_client.get("clear-test-foreign") == b"keep"
        assert redis_client.get("foreign:clear-test:x") == b"keep"
    finally:
        redis_client.delete("clear-test-foreign", "foreign:clear-test:x")


def test_indexes_expire_with_their_entries_and_stay_bounded(make_store: MakeStore) -> None:
    store = make_store()
    app = FastAPI()

    @app.get("/n/{n}")
    @cache(expire=1, tags=["all"], store=store)
    async def n(n: int) -> dict[str, int]:
        return {"n": n}

    index = store.tag_index("all")
    with client_for(app, store) as client:
        for i in range(20):
            client.get(f"/n/{i}")
        if isinstance(store.backend, RedisBackend):
            assert store.url
            sync = sync_client(store.url)
            assert sync.zcard(index) == 20
            assert 1000 < sync.pttl(index) <= 2000  # the longest entry's TTL plus 1 s margin
            time.sleep(1.1)
            client.get("/n/100")  # a write prunes members whose entries have expired
            assert sync.zcard(index) == 1
            time.sleep(2.2)
            assert not sync.exists(index)  # and the index dies after its last entry
            sync.close()
        else:
            backend = store.backend
            assert isinstance(backend, MemoryBackend)
            assert backend.index_size(index) == 20
            time.sleep(1.1)
            for i in range(20):
                client.get(f"/n/{i}")  # expired entries are dropped and re-stored
            assert backend.index_size(index) == 20


def test_memory_indexes_follow_evictions() -> None:
    store = Cache(max_entries=5)
    app = FastAPI()

    @app.get("/n/{n}")
    @cache(expire=60, tags=["all"], store=store)
    async def n(n: int) -> dict[str, int]:
        return {"n": n}

    with client_for(app, store) as client:
        for i in range(50):
            client.get(f"/n/{i}")
        backend = store.backend
        assert isinstance(backend, MemoryBackend)
        assert len(backend) == 5 and backend.index_size(store.tag_index("all")) == 5
        assert client.portal.call(store.invalidate_tag, "all") == 5
        assert len(backend) == 0 and backend.index_size(store.tag_index("all")) == 0
