"""Per-user caching, Vary, tags and invalidation, on Redis and in memory (parametrized).

The promise under test: no response ever reaches the wrong user.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

import anyio
import httpx
import pytest
import redis
from fastapi import Depends, FastAPI, Header, Request
from fastapi.testclient import TestClient

from oxcache import Cache, MemoryBackend, RedisBackend, cache
from oxcache.backends.base import Backend
from tests.apps import MakeStore, client_for, current_user_id, stored_keys
from tests.conftest import sync_client


def per_user_app(store: Cache, calls: Counter[str]) -> FastAPI:
    app = FastAPI()

    @app.get("/me/prefs")
    @cache(expire=300, per_user=current_user_id, store=store)
    async def prefs(user: str = Depends(current_user_id)) -> dict[str, Any]:
        calls[user] += 1
        await asyncio.sleep(0)
        return {"user": user, "theme": f"theme-of-{user}"}

    return app


def test_many_users_concurrently_each_get_their_own_body(make_store: MakeStore) -> None:
    """50 users x 20 concurrent requests: every body is its own user's, on miss and hit."""
    store = make_store(timeout=1.0)  # a burst of 50 new connections must not trip the breaker
    calls: Counter[str] = Counter()
    app = per_user_app(store, calls)
    users = [f"user-{i}" for i in range(50)]

    async def scenario() -> list[tuple[str, httpx.Response]]:
        async with store:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:

                async def one(user: str) -> tuple[str, httpx.Response]:
                    return user, await client.get("/me/prefs", headers={"X-User": user})

                results: list[tuple[str, httpx.Response]] = []
                for _round in range(20):  # each round: every user at once, interleaved
                    results += await asyncio.gather(*(one(u) for u in users))
                return results

    results = anyio.run(scenario)
    assert len(results) == 1000
    for user, response in results:
        assert response.status_code == 200
        assert response.json() == {"user": user, "theme": f"theme-of-{user}"}
        assert response.headers["cache-control"] == "private, max-age=300"
    hits = sum(r.headers["x-fastapi-cache"] == "Hit" for _, r in results)
    # At most one miss per user and round-1 concurrency: the first round is all misses.
    assert hits >= 1000 - 50, f"only {hits} hits of 1000"
    assert set(calls) == set(users)


def test_per_user_keys_hold_the_user_and_404_401_store_nothing(make_store: MakeStore) -> None:
    store = make_store()
    calls: Counter[str] = Counter()
    app = per_user_app(store, calls)
    with client_for(app, store) as client:
        assert client.get("/me/prefs").status_code == 401
        assert stored_keys(store) == []
        assert client.get("/me/prefs", headers={"X-User": "alice"}).status_code == 200
    keys = stored_keys(store)
    entry = f'{store.prefix}:tests.test_per_user.prefs(user="alice",@user="alice")'
    assert entry in keys
    assert f"{store.prefix}:@user:alice" in keys or isinstance(store.backend, MemoryBackend)


def test_user_dependency_runs_once_per_request(make_store: MakeStore) -> None:
    """per_user is resolved by FastAPI together with the endpoint's own Depends."""
    store = make_store()
    runs: list[str] = []

    def user_id(x_user: str = Header()) -> str:
        runs.append(x_user)
        return x_user

    app = FastAPI()

    @app.get("/p")
    @cache(expire=60, per_user=user_id, store=store)
    async def p(user: str = Depends(user_id)) -> dict[str, str]:
        return {"user": user}

    with client_for(app, store) as client:
        for _ in range(3):
            assert client.get("/p", headers={"X-User": "u1"}).json() == {"user": "u1"}
    assert runs == ["u1", "u1", "u1"]


def test_async_user_dependency_and_endpoint_without_the_user_parameter(
    make_store: MakeStore,
) -> None:
    store = make_store()

    async def user_id(x_user: str = Header()) -> int:
        return int(x_user)

    app = FastAPI()
    seen: list[int] = []

    @app.get("/p")
    @cache(expire=60, per_user=user_id, store=store)
    def p(request: Request) -> dict[str, Any]:
        seen.append(1)
        return {"header": request.headers["x-user"]}

    with client_for(app, store) as client:
        a1 = client.get("/p", headers={"X-User": "1"})
        b1 = client.get("/p", headers={"X-User": "2"})
        a2 = client.get("/p", headers={"X-User": "1"})
    assert a1.json() == a2.json() == {"header": "1"} and b1.json() == {"header": "2"}
    assert a2.headers["x-fastapi-cache"] == "Hit" and len(seen) == 2


def test_user_dependency_returning_something_else_serves_uncached(
    make_store: MakeStore, caplog: pytest.LogCaptureFixture
) -> None:
    store = make_store()

    def user(x_user: str = Header()) -> dict[str, str]:
        return {"id": x_user}

    app = FastAPI()

    @app.get("/p")
    @cache(expire=60, per_user=user, store=store)
    async def p() -> dict[str, int]:
        return {"ok": 1}

    with caplog.at_level(logging.WARNING, "oxcache"), client_for(app, store) as client:
        for _ in range(2):
            response = client.get("/p", headers={"X-User": "1"})
            assert response.status_code == 200 and "x-fastapi-cache" not in response.headers
    assert sum("str, int or UUID" in r.getMessage() for r in caplog.records) == 1


def test_invalidate_user_leaves_other_users(make_store: MakeStore) -> None:
    store = make_store()
    calls: Counter[str] = Counter()
    app = per_user_app(store, calls)
    with client_for(app, store) as client:
        for user in ("alice", "bob"):
            client.get("/me/prefs", headers={"X-User": user})
        assert client.portal.call(store.invalidate_user, "alice") == 1  # logout
        again = {u: client.get("/me/prefs", headers={"X-User": u}) for u in ("alice", "bob")}
        assert client.portal.call(store.invalidate_user, "nobody") == 0
    assert again["alice"].headers["x-fastapi-cache"] == "Miss"
    assert again["bob"].headers["x-fastapi-cache"] == "Hit"
    assert calls == Counter({"alice": 2, "bob": 1})


def test_int_and_str_user_ids_are_the_same_user(make_store: MakeStore) -> None:
    store = make_store()

    def user_id(x_user: str = Header()) -> int:
        return int(x_user)

    app = FastAPI()

    @app.get("/p")
    @cache(expire=60, per_user=user_id, store=store)
    async def p() -> dict[str, int]:
        return {"ok": 1}

    with client_for(app, store) as client:
        client.get("/p", headers={"X-User": "42"})
        assert client.portal.call(store.invalidate_user, "42") == 1


def test_put_invalidates_get_for_every_user_and_variant(make_store: MakeStore) -> None:
    store = make_store()
    items = {1: "old"}
    app = FastAPI()

    @app.get("/items/{id}")
    @cache(expire=300, per_user=current_user_id, vary=["accept-language"], store=store)
    async def get_item(id: int, user: str = Depends(current_user_id)) -> dict[str, Any]:
        return {"id": id, "name": items[id], "user": user}

    @app.put("/items/{id}")
    async def put_item(id: int, name: str) -> dict[str, bool]:
        items[id] = name
        await store.invalidate(get_item, id=id)
        return {"ok": True}

    variants = [("a", "en"), ("a", "fr"), ("b", "en")]
    with client_for(app, store) as client:

        def get(user: str, lang: str) -> httpx.Response:
            return client.get("/items/1", headers={"X-User": user, "Accept-Language": lang})

        for user, lang in variants:
            assert get(user, lang).json()["name"] == "old"
            assert get(user, lang).headers["x-fastapi-cache"] == "Hit"
        assert client.put("/items/1", params={"name": "new"}).status_code == 200
        after = [get(user, lang) for user, lang in variants]
    for (user, _), response in zip(variants, after, strict=True):
        assert response.json() == {"id": 1, "name": "new", "user": user}
        assert response.headers["x-fastapi-cache"] == "Miss"


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
            assert client.portal.call(store.clear) == 4  # entry, user, tag, variants
        assert list(redis_client.scan_iter(match="clear-test:*")) == []
        assert redis_client.get("clear-test-foreign") == b"keep"
        assert redis_client.get("foreign:clear-test:x") == b"keep"
    finally:
        redis_client.delete("clear-test-foreign", "foreign:clear-test:x")


def test_credentials_bypass_unshared_endpoints_once_warned(
    make_store: MakeStore, caplog: pytest.LogCaptureFixture
) -> None:
    store = make_store()
    app = FastAPI()
    runs: list[str] = []

    @app.get("/profile")
    @cache(expire=60, store=store)
    async def profile(request: Request) -> dict[str, str]:
        runs.append("profile")
        return {"who": request.headers.get("authorization", "anonymous")}

    @app.get("/public")
    @cache(expire=60, shared=True, store=store)
    async def public() -> dict[str, str]:
        runs.append("public")
        return {"data": "same for all"}

    with caplog.at_level(logging.WARNING, "oxcache"), client_for(app, store) as client:
        a = client.get("/profile", headers={"Authorization": "Bearer a"})
        b = client.get("/profile", headers={"Authorization": "Bearer b"})
        c = client.get("/profile", headers={"Cookie": "session=c"})
        anon1 = client.get("/profile")
        anon2 = client.get("/profile")
        p1 = client.get("/public", headers={"Authorization": "Bearer a"})
        p2 = client.get("/public", headers={"Cookie": "session=b"})
    assert a.json() == {"who": "Bearer a"} and b.json() == {"who": "Bearer b"}
    assert c.json() == {"who": "anonymous"}
    for response in (a, b, c):
        assert "x-fastapi-cache" not in response.headers and "etag" not in response.headers
    assert anon1.headers["x-fastapi-cache"] == "Miss" and anon2.headers["x-fastapi-cache"] == "Hit"
    assert p1.headers["x-fastapi-cache"] == "Miss" and p2.headers["x-fastapi-cache"] == "Hit"
    assert runs == ["profile", "profile", "profile", "profile", "public"]
    warnings = [r for r in caplog.records if "Authorization or Cookie" in r.getMessage()]
    assert len(warnings) == 1 and "per_user" in warnings[0].getMessage()


class FlakyBackend(MemoryBackend):
    """A memory backend whose storage calls fail while `down` is set (fault injection)."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False

    def check(self) -> None:
        if self.down:
            raise ConnectionError("storage unreachable")

    async def get(self, key: str) -> bytes | None:
        self.check()
        return await super().get(key)

    async def invalidate(self, indexes: Sequence[str], keys: Sequence[str] = ()) -> int:
        self.check()
        return await super().invalidate(indexes, keys)


def test_failed_invalidation_is_replayed_before_anything_is_served() -> None:
    backend = FlakyBackend()
    store = Cache(backend=backend, retry_after=0)
    calls: Counter[str] = Counter()
    app = per_user_app(store, calls)
    with client_for(app, store) as client:
        client.get("/me/prefs", headers={"X-User": "alice"})
        backend.down = True
        assert client.portal.call(store.invalidate_user, "alice") == 0  # queued
        backend.down = False
        again = client.get("/me/prefs", headers={"X-User": "alice"})
    assert again.headers["x-fastapi-cache"] == "Miss" and calls["alice"] == 2


def test_backend_protocol_has_index_operations() -> None:
    for name in ("set", "invalidate", "clear", "get", "get_head", "delete", "ping"):
        assert getattr(Backend, name).__isabstractmethod__
