"""Per-user caching end to end: `per_user=` puts the user in the key (serve.py, keys.py),
`invalidate_user` drops one user's entries and leaves the others', an invalidation reaches
every user and variant, and without per_user or shared=True a request with credentials
bypasses the cache. On memory, Redis and Redis Cluster (parametrized through make_store).

The promise under test: no response ever reaches the wrong user.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections import Counter
from typing import Any

import anyio
import httpx
import pytest
from fastapi import Depends, FastAPI, Header, Request

from oxcache import MemoryBackend, cache
from tests.apps import MakeStore, client_for, current_user_id, per_user_app, stored_keys


def test_many_users_concurrently_each_get_their_own_body(make_store: MakeStore) -> None:
    """50 users x 20 concurrent requests: every body is its own user's, on miss and hit."""
    # A burst of 50 new connections must not trip the breaker, even on a loaded machine
    # (1 s was exceeded under a load average of 6 on 2 cores).
    store = make_store(timeout=5.0)
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
    entry = (
        f'{store.prefix}:tests.apps.prefs(user="alice",@user="alice",@origin="http://testserver")'
    )
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


def test_the_endpoints_own_depends_of_per_user_carries_the_user(make_store: MakeStore) -> None:
    """`user = Depends(per_user)` is the user: the wrapper adds no second `Depends` of it
    (FastAPI would solve its header twice), and each user still gets their own entry; a
    `Security` of it (scopes key another value) or another dependency does not count."""
    store = make_store()

    def user_id(x_user: str = Header()) -> str:
        return x_user

    def other(x_user: str = Header()) -> str:
        return "other"

    app = FastAPI()

    @app.get("/own")
    @cache(expire=60, per_user=user_id, store=store)
    async def own(who: str = Depends(user_id)) -> dict[str, str]:
        return {"user": who}

    @app.get("/other")
    @cache(expire=60, per_user=user_id, store=store)
    async def not_own(who: str = Depends(other)) -> dict[str, str]:
        return {"user": who}

    assert list(inspect.signature(own).parameters) == [
        "who",
        "oxcache_request__",
        "oxcache_response__",
    ]
    assert "oxcache_user__" in inspect.signature(not_own).parameters
    with client_for(app, store) as client:
        for _ in range(2):
            for user in ("u1", "u2"):
                response = client.get("/own", headers={"X-User": user})
                assert response.json() == {"user": user}
                other_response = client.get("/other", headers={"X-User": user})
                assert other_response.json() == {"user": "other"}
        assert response.headers["x-fastapi-cache"] == "Hit"
        assert other_response.headers["x-fastapi-cache"] == "Hit"
    assert len([k for k in stored_keys(store) if '@user="u' in k and ".own(" in k]) == 2


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
