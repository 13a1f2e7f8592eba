"""An invalidation holds whatever Redis evicts: on a real Redis with `maxmemory` and each
eviction policy, 30 users x 20 per-user tagged entries, then unrelated keys pushing memory
past the limit (Redis evicts indexes, entries and generations as it likes), then
`invalidate_user`, `invalidate_tag` and `invalidate(endpoint, ...)`: no request gets data
those calls invalidated. Losing any key of ours may cost misses, never a stale answer."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from fastapi import Depends, FastAPI, Header
from fastapi.testclient import TestClient

from oxcache import Cache, NearCache, cache
from tests.conftest import RedisServer, sync_client

USERS = 30
ITEMS = 20


def user_id(x_user: str = Header()) -> str:
    return x_user


class Site:
    """A per-user, tagged endpoint whose data has a version per (user, item): an answer
    with an older version than the current one is stale."""

    def __init__(self, store: Cache) -> None:
        self.store = store
        self.version: dict[tuple[str, int], int] = {}
        self.runs = 0
        app = FastAPI(lifespan=store.lifespan)

        @app.get("/data/{item}")
        @cache(expire=600, per_user=user_id, tags=["data", "item:{item}"], store=store)
        async def data(item: int, user: str = Depends(user_id)) -> dict[str, Any]:
            self.runs += 1
            return {"user": user, "item": item, "v": self.version.get((user, item), 0)}

        self.endpoint = data
        self.app = app

    def answers(self, client: TestClient) -> tuple[int, int]:
        """(stale answers, hits) over every user's every item."""
        stale = hits = 0
        for u, i in itertools.product(range(USERS), range(ITEMS)):
            response = client.get(f"/data/{i}", headers={"x-user": f"u{u}"})
            assert response.status_code == 200
            body = response.json()
            assert (body["user"], body["item"]) == (f"u{u}", i)
            stale += body["v"] != self.version.get((f"u{u}", i), 0)
            hits += response.headers["x-fastapi-cache"] == "Hit"
        return stale, hits

    def bump(self, users: range | list[int], items: range | list[int]) -> None:
        for u, i in itertools.product(users, items):
            key = (f"u{u}", i)
            self.version[key] = self.version.get(key, 0) + 1


@pytest.fixture(params=["allkeys-lru", "allkeys-lfu", "volatile-lru"])
def evicting_redis(request: pytest.FixtureRequest) -> Iterator[RedisServer]:
    # lfu-log-factor 0: every access counts (instead of about one in ten by then), so a
    # few hundred reads make keys as hot as a busy site's in hours.
    policy = ("--maxmemory-policy", str(request.param), "--lfu-log-factor", "0")
    server = RedisServer(extra=policy)
    try:
        yield server
    finally:
        server.stop()


def our_keys(raw: redis.Redis, prefix: str) -> dict[str, int]:
    """How many keys of each kind the store has in Redis now."""
    kinds: dict[str, int] = {}
    for key in raw.scan_iter(match=f"{prefix}:*", count=1000):
        local = key.decode()[len(prefix) + 1 :]
        kind = local[1:].split(":", 1)[0] if local.startswith("@") else "entry"
        if kind == "gen":
            kind = "gen:" + local.split(":", 2)[1]
        kinds[kind] = kinds.get(kind, 0) + 1
    return kinds


def touch(raw: redis.Redis, keys: list[Any], times: int) -> None:
    """Read `keys` `times` times each, as hits would (LRU clocks, LFU counters)."""
    with raw.pipeline(transaction=False) as pipe:
        for _ in range(times):
            pipe.touch(*keys)
        pipe.execute()


def test_invalidations_hold_whatever_redis_evicts(evicting_redis: RedisServer) -> None:
    raw = redis.Redis(port=evicting_redis.port)
    store = Cache(evicting_redis.url, prefix="evict", timeout=2.0)
    site = Site(store)
    with TestClient(site.app) as client:
        assert site.answers(client) == (0, 0)  # 600 misses: every entry stored
        assert site.answers(client) == (0, USERS * ITEMS)  # 600 hits: entries are hot
        before = our_keys(raw, "evict")
        assert before["entry"] == USERS * ITEMS and before["user"] == USERS
        # A busy site reads its entries (and a hit their generations, in the same MGET) far
        # more often than it writes an index.
        read = [k for k in raw.scan_iter(match="evict:*", count=1000) if b":@" not in k]
        read += [k for k in raw.scan_iter(match="evict:@gen:*", count=1000)]
        touch(raw, read, 100)

        # Unrelated, busy entries (with a TTL, so volatile-lru may evict them too) push
        # memory past a limit set just above what the store holds now: Redis evicts
        # whatever its policy picks, indexes and generations included.
        used = int(raw.info("memory")["used_memory"])
        raw.config_set("maxmemory", used + 200_000)
        evicted = 0
        for batch in range(40):  # at most 40 x 100 x 2 KB
            names = [f"other:{batch}:{n}" for n in range(100)]
            with raw.pipeline(transaction=False) as pipe:
                for name in names:
                    pipe.set(name, b"x" * 2048, px=600_000)
                pipe.execute()
            touch(raw, names, 90)
            evicted = int(raw.info("stats")["evicted_keys"])
            after = our_keys(raw, "evict")
            if after.get("user", 0) <= USERS // 2 and evicted > 500:
                break
        assert evicted > 0

        # The data changes, and the application invalidates it.
        site.bump(range(0, 10), range(ITEMS))
        for u in range(0, 10):
            client.portal.call(store.invalidate_user, f"u{u}")
        site.bump(range(USERS), [3, 7])
        client.portal.call(store.invalidate_tag, "item:3")
        client.portal.call(store.invalidate_tag, "item:7")
        site.bump(range(USERS), [11])
        client.portal.call(lambda: store.invalidate(site.endpoint, item=11))

        stale, hits = site.answers(client)
    raw.close()
    print(f"evicted {evicted} keys; ours before {before}, after {after}; hits after {hits}")
    assert stale == 0


# -- each kind of key lost on its own ----------------------------------------------------


@pytest.fixture(params=["redis", "cluster"])
def url(request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue(f"{request.param}_url"))


LOST = ["user index", "tag index", "variants index", "every index", "generations", "all"]


@pytest.mark.parametrize("lost", LOST)
def test_an_invalidation_holds_whichever_of_our_keys_redis_lost(url: str, lost: str) -> None:
    """Each kind of key the store keeps besides entries is deleted behind its back (as an
    eviction would), then each invalidation runs: nothing it covers is served again, and
    what it does not cover is a hit or a miss, never wrong."""
    store = Cache(url, prefix="lost-" + uuid.uuid4().hex[:8], timeout=2.0)
    site = Site(store)
    raw = sync_client(url)
    patterns = {
        "user index": ["@user:*"],
        "tag index": ["@tag:*"],
        "variants index": ["@variants:*"],
        "every index": ["@user:*", "@tag:*", "@variants:*"],
        "generations": ["@gen:*"],
        "all": ["@*"],
    }[lost]
    try:
        with TestClient(site.app) as client:
            for u, i in itertools.product(range(3), range(4)):
                client.get(f"/data/{i}", headers={"x-user": f"u{u}"})
            for pattern in patterns:
                for key in list(raw.scan_iter(match=f"{store.prefix}:{pattern}")):
                    raw.delete(key)
            site.bump([0], range(4))
            client.portal.call(store.invalidate_user, "u0")
            site.bump(range(3), [1])
            client.portal.call(store.invalidate_tag, "item:1")
            site.bump(range(3), [2])
            client.portal.call(lambda: store.invalidate(site.endpoint, item=2))
            for u, i in itertools.product(range(3), range(4)):
                body = client.get(f"/data/{i}", headers={"x-user": f"u{u}"}).json()
                assert body["v"] == site.version.get((f"u{u}", i), 0), (u, i)
            # And afterwards the entries are hits again.
            hit = client.get("/data/3", headers={"x-user": "u1"}).headers["x-fastapi-cache"]
            assert hit == "Hit"
    finally:
        for key in list(raw.scan_iter(match=f"{store.prefix}:*")):
            raw.delete(key)
        raw.close()


def test_a_lost_generation_is_a_miss_then_a_new_token(redis_url: str) -> None:
    store = Cache(redis_url, prefix="gen-" + uuid.uuid4().hex[:8], timeout=2.0)
    site = Site(store)
    raw = redis.Redis.from_url(redis_url)
    gen = f"{store.prefix}:@gen:user:u0"
    try:
        with TestClient(site.app) as client:
            headers = {"x-user": "u0"}
            assert client.get("/data/1", headers=headers).headers["x-fastapi-cache"] == "Miss"
            token = raw.get(gen)
            assert token is not None and len(token) == 16
            assert client.get("/data/1", headers=headers).headers["x-fastapi-cache"] == "Hit"
            raw.delete(gen)
            assert client.get("/data/1", headers=headers).headers["x-fastapi-cache"] == "Miss"
            assert raw.get(gen) not in (None, token)
            assert client.get("/data/1", headers=headers).headers["x-fastapi-cache"] == "Hit"
            assert site.runs == 2
    finally:
        for key in list(raw.scan_iter(match=f"{store.prefix}:*")):
            raw.delete(key)
        raw.close()


def test_the_near_cache_drops_what_an_invalidation_covers_when_its_index_is_lost(
    redis_url: str,
) -> None:
    store = Cache(
        redis_url, prefix="near-lost-" + uuid.uuid4().hex[:8], timeout=2.0, near=NearCache()
    )
    site = Site(store)
    raw = redis.Redis.from_url(redis_url)
    headers = {"x-user": "u0"}
    try:
        with TestClient(site.app) as client:
            assert store.near is not None
            assert client.portal.call(store.near.wait_ready, 10.0)
            client.get("/data/1", headers=headers)
            client.get("/data/1", headers=headers)  # read from Redis into the L1
            l1 = store.stats()["l1_hits"]
            assert client.get("/data/1", headers=headers).json()["v"] == 0
            assert store.stats()["l1_hits"] == l1 + 1
            raw.delete(store.user_index("u0"))  # evicted: the invalidation finds no entry
            site.bump([0], [1])
            client.portal.call(store.invalidate_user, "u0")
            assert client.get("/data/1", headers=headers).json()["v"] == 1
    finally:
        for key in list(raw.scan_iter(match=f"{store.prefix}:*")):
            raw.delete(key)
        raw.close()
