"""`store.clear()` never deletes other applications' keys: a Redis store without a prefix
refuses, and invalidations queued during an outage never turn into such a clear."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import anyio
import pytest
import redis

from oxcache import Cache, ConfigError, RedisBackend
from tests.conftest import sync_client


def foreign_keys(client: redis.Redis | redis.RedisCluster) -> list[str]:
    """A session and a Celery result, as another app sharing the database writes them."""
    run = uuid.uuid4().hex[:8]
    keys = [f"session:user42-{run}", f"celery-task-meta-{run}"]
    for key in keys:
        client.set(key, b"not oxcache's")
    return keys


@pytest.mark.parametrize("kind", ["redis", "cluster"])
def test_clear_without_a_prefix_refuses_and_other_apps_keys_survive(
    kind: str, request: pytest.FixtureRequest
) -> None:
    url = str(request.getfixturevalue("redis_url" if kind == "redis" else "cluster_url"))
    client = sync_client(url)
    foreign = foreign_keys(client)
    store = Cache(url, timeout=2.0)  # the quick start's store: no prefix
    ours = f"tests.test_clear.item(id={uuid.uuid4().hex[:8]})"

    async def main() -> None:
        async with store:
            assert await store.write(ours, b"entry", 60_000)
            with pytest.raises(ConfigError, match="without a prefix") as refused:
                await store.clear()
            assert "prefix=" in str(refused.value)  # says what to do

    try:
        anyio.run(main)
        assert all(client.get(key) == b"not oxcache's" for key in foreign)
        assert client.exists(ours)
    finally:
        client.delete(*foreign)
        client.delete(ours)
        client.close()


def test_clear_with_a_prefix_deletes_only_its_keys(redis_url: str) -> None:
    client = sync_client(redis_url)
    foreign = foreign_keys(client)
    store = Cache(redis_url, prefix="app-" + uuid.uuid4().hex[:8], timeout=2.0)

    async def main() -> int:
        async with store:
            await store.write(store.keyspace.start + "m.f()", b"entry", 60_000)
            return await store.clear()

    try:
        assert anyio.run(main) == 1
        assert all(client.get(key) == b"not oxcache's" for key in foreign)
    finally:
        client.delete(*foreign)
        client.close()


def test_the_memory_store_clears_without_a_prefix() -> None:
    store = Cache()

    async def main() -> int:
        await store.write("m.f()", b"entry", 60_000)
        return await store.clear()

    assert anyio.run(main) == 1


class Refusing(RedisBackend):
    """A real Redis that refuses invalidations while `down` (an outage, for the queue)."""

    down = True

    async def invalidate(
        self, indexes: Sequence[str], keys: Sequence[str] = (), generations: Sequence[str] = ()
    ) -> int:
        if self.down:
            raise redis.ConnectionError("Redis is down")
        return await super().invalidate(indexes, keys, generations)


def test_a_long_outage_queue_is_never_replayed_as_a_clear_of_an_unprefixed_database(
    redis_url: str,
) -> None:
    """More queued invalidations than the queue holds become one clear of the prefix, which
    without a prefix would delete the whole database: they are folded into one
    invalidation of every key they name instead."""
    client = sync_client(redis_url)
    foreign = foreign_keys(client)
    run = uuid.uuid4().hex[:8]
    doomed = [f"tests.test_clear.f(n={n},run={run!r})" for n in range(1100)]
    backend = Refusing(redis_url, timeout=2.0)
    store = Cache(backend=backend)

    async def main() -> None:
        for key in doomed:
            await store.write(key, b"entry", 60_000)
        for key in doomed:  # each fails and is queued
            assert await store.delete([key]) == 0
        pending = store.invalidations.pending
        assert None not in pending and len(pending) < 1000  # folded, never a clear
        backend.down = False
        await store.delete([])  # any invalidation replays the queue first
        assert store.invalidations.pending == []
        await backend.close()

    try:
        anyio.run(main)
        assert all(client.get(key) == b"not oxcache's" for key in foreign)
        assert sum(client.exists(key) for key in doomed) == 0
    finally:
        client.delete(*foreign)
        client.close()
