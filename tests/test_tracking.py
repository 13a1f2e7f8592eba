"""The tracking listener (backends/tracking.py), reached through `RedisBackend.track()`, on a
redis-server of each test's own: announcements of changes under a prefix, the PING barrier
of `sync`, a dropped connection, stop. How the near cache uses it is in test_near.py."""

from __future__ import annotations

from typing import Any

import anyio
import redis.asyncio as aioredis

from oxcache.backends import RedisBackend
from oxcache.backends.tracking import Tracker
from tests.conftest import RedisServer, free_port


class Heard:
    """What a tracker told its callbacks, in order."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    def subscribed(self) -> None:
        self.events.append(("subscribed", None))

    def changed(self, keys: list[str] | None) -> None:
        self.events.append(("changed", keys))

    def lost(self, error: Exception | None) -> None:
        self.events.append(("lost", error))

    def of(self, kind: str) -> list[Any]:
        return [value for name, value in self.events if name == kind]


def tracker_for(backend: RedisBackend, prefix: str, heard: Heard) -> Tracker:
    return backend.track(
        prefix,
        heartbeat=1.0,
        on_subscribed=heard.subscribed,
        on_changed=heard.changed,
        on_lost=heard.lost,
    )


async def until(predicate: Any) -> bool:
    """Whether `predicate()` holds within 10 s."""
    for _ in range(1000):
        if predicate():
            return True
        await anyio.sleep(0.01)
    return bool(predicate())


async def pubsub_clients(client: aioredis.Redis) -> int:
    return len(await client.client_list(_type="pubsub"))


async def until_closed(client: aioredis.Redis) -> bool:
    """Whether Redis sees no pub/sub connection any more within 10 s."""
    for _ in range(1000):
        if not await pubsub_clients(client):
            return True
        await anyio.sleep(0.01)
    return await pubsub_clients(client) == 0


def test_changes_under_the_prefix_are_announced_before_sync_returns(
    own_redis: RedisServer,
) -> None:
    heard = Heard()

    async def scenario() -> None:
        backend = RedisBackend(own_redis.url, timeout=2.0)
        client = aioredis.Redis.from_url(own_redis.url)
        tracker = tracker_for(backend, "p:", heard)
        try:
            tracker.start()
            tracker.start()  # again on the same loop: one listener
            assert await tracker.wait(10.0) and tracker.subscribed
            assert heard.events == [("subscribed", None)]
            assert await pubsub_clients(client) == 1
            await client.set("p:a", b"1")
            await client.set("other:b", b"1")  # not under the prefix: not announced
            await client.set(b"p:\xff", b"1")
            await client.unlink("p:a")
            # The PING barrier: every announcement of a change made before it has been
            # handed to on_changed when sync returns.
            assert await tracker.sync(5.0)
            assert heard.of("changed") == [["p:a"], ["p:\udcff"], ["p:a"]]
            await client.flushdb()
            assert await tracker.sync(5.0)
            assert heard.of("changed")[-1] is None  # everything changed
            await tracker.stop()
            assert not tracker.subscribed and heard.events[-1] == ("lost", None)
            assert await tracker.sync(1.0)  # nothing subscribed, nothing to wait on
            assert await until_closed(client)
        finally:
            await tracker.stop()
            await client.aclose()
            await backend.close()

    anyio.run(scenario)


def test_a_dropped_connection_is_reported_and_subscribed_again(own_redis: RedisServer) -> None:
    heard = Heard()

    async def scenario() -> None:
        backend = RedisBackend(own_redis.url, timeout=2.0)
        client = aioredis.Redis.from_url(own_redis.url)
        tracker = tracker_for(backend, "p:", heard)
        try:
            tracker.start()
            assert await tracker.wait(10.0)
            assert await client.client_kill_filter(_type="pubsub") == 1
            assert await until(lambda: len(heard.of("subscribed")) == 2)
            (error,) = heard.of("lost")
            assert isinstance(error, Exception)
            await client.set("p:a", b"1")
            assert await tracker.sync(5.0)
            assert heard.of("changed") == [["p:a"]]  # the new connection tracks the prefix
        finally:
            await tracker.stop()
            await client.aclose()
            await backend.close()

    anyio.run(scenario)


def test_an_unreachable_redis_is_reported_and_never_subscribed() -> None:
    heard = Heard()

    async def scenario() -> None:
        backend = RedisBackend(f"redis://127.0.0.1:{free_port()}/0", timeout=0.2)
        tracker = tracker_for(backend, "p:", heard)
        try:
            tracker.start()
            assert not await tracker.wait(0.5)
            assert await until(lambda: len(heard.of("lost")) >= 2)  # it keeps trying
            assert all(isinstance(e, Exception) for e in heard.of("lost"))
            assert heard.of("subscribed") == [] and await tracker.sync(1.0)
        finally:
            await tracker.stop()
            await backend.close()

    anyio.run(scenario)
