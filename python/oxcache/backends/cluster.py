"""Redis Cluster backend on `redis.asyncio.cluster.RedisCluster`: the single-Redis key layout,
with every command on one key, so nothing can fail with CROSSSLOT."""

from __future__ import annotations

import os
import time
import weakref
from collections import defaultdict
from collections.abc import Awaitable, Collection, Sequence
from typing import Any, Callable, TypeVar
from urllib.parse import urlsplit, urlunsplit

from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.crc import key_slot
from redis.exceptions import NoScriptError

from oxcache.backends._bound import backstop
from oxcache.backends._bound import bounded as _bounded
from oxcache.backends._slots import SlotMap
from oxcache.backends.base import index_member, listed_key
from oxcache.backends.cluster_tracking import ClusterTracker
from oxcache.backends.redis import (
    GLOB_SPECIALS,
    LEASE_SCRIPT,
    RELEASE_SCRIPT,
    SET_INDEXED_SCRIPT,
    RedisBackend,
)
from oxcache.backends.tracking import Listener

__all__ = ["CLUSTER_SCHEMES", "ClusterBackend", "cluster_url", "is_cluster_url"]

T = TypeVar("T")

_BATCH = 500

CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}


def cluster_url(url: str) -> str:
    """The redis-py URL behind a `redis+cluster://` (or `rediss+cluster://`) URL; other URLs
    are returned unchanged. redis-py has no such scheme: the `+cluster` only says "this is a
    node of a Redis Cluster"."""
    parts = urlsplit(url)
    scheme = CLUSTER_SCHEMES.get(parts.scheme.lower())
    if scheme is None:
        return url
    return urlunsplit((scheme, *parts[1:]))


def is_cluster_url(url: str) -> bool:
    """Whether `url` names a Redis Cluster (`redis+cluster://` or `rediss+cluster://`)."""
    return urlsplit(url).scheme.lower() in CLUSTER_SCHEMES


class ClusterBackend(RedisBackend):
    """Entries on a Redis Cluster, under the same keys and in the same format as on one Redis.

    Keys are spread over the cluster by their hash slot, so an entry and its indexes (user,
    tag, variants) usually live on different nodes. No command here touches two slots: an
    index is updated by its own commands (`ZADD`, `ZREMRANGEBYSCORE`, `PEXPIRE NX` and
    `PEXPIRE GT`, Redis 7 or later), grouped per node in one pipeline, *before* the entry is
    written, so an entry that exists is always listed where its invalidations look.
    Invalidation reads each index, unlinks its members grouped by slot, and then removes only
    the members it read (an entry listed meanwhile stays listed). `clear()` scans every
    primary.

    Pass `url` (a `redis://` or `redis+cluster://` URL of any node) or `client` (a
    `redis.asyncio.cluster.RedisCluster` you made and close yourself). redis-py's own cluster
    retries are turned off for a client made here and every request-path call (read, write,
    lock) is bounded by `timeout` in total, so a failover or a dead node costs a request at
    most `timeout`: the store's circuit breaker then leaves the cluster alone for a moment,
    and the slot map is reloaded (at once for a refused connection, once a node has been
    silent for a second for a hung one, never for one that is only slow: `_slots.py`) and
    finds the promoted replica. At most
    `max_connections` calls run at once (more wait, at most `timeout`); each uses at most one
    connection per node. A near cache listens on every primary (`track()`,
    `backends/cluster_tracking.py`).
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        client: RedisCluster | None = None,
        timeout: float = 0.1,
        max_connections: int = 32,
    ) -> None:
        if (url is None) == (client is None):
            raise ValueError("ClusterBackend needs exactly one of url= or client=")
        if client is None:
            assert url is not None
            client = RedisCluster.from_url(
                cluster_url(url),
                # Backstops only: every call is bounded by `_bounded` (backends/_bound.py).
                socket_timeout=backstop(timeout),
                socket_connect_timeout=backstop(timeout),
                # One attempt: the store's circuit breaker is the retry policy, and a retry
                # inside redis-py would make a request wait for a failover.
                retry=Retry(NoBackoff(), 0),
                # Per node; each call here holds at most one connection per node, and the
                # semaphore below keeps calls at or under this, so it is never exceeded.
                max_connections=max_connections,
                decode_responses=False,
            )
            self.owns_connection = True
        else:
            self.owns_connection = False
        self.client: Any = client
        self.timeout = timeout
        self.bound = None  # RedisBackend's per-command bound; calls here use `_call`
        #: Whether the client's slot map may be used now, and the permits of concurrent calls.
        self.slots = SlotMap(client, timeout, max_connections)
        self._release = client.register_script(RELEASE_SCRIPT)
        # The single-Redis scripts, run on the entry's key alone (one slot).
        self._set_indexed = client.register_script(SET_INDEXED_SCRIPT)
        self._lease = client.register_script(LEASE_SCRIPT)  # on the entry's key alone
        # RedisBackend's auto-pipelined reads speak to one node; on a cluster every read is
        # routed by redis-py instead.
        self.auto_pipeline = False
        self._pipes = weakref.WeakKeyDictionary()
        self._pipe = None

    async def _call(self, make: Callable[[], Awaitable[T]], keys: Sequence[str] | None) -> T:
        """One request-path call on `keys` (None: every primary): on a loaded slot map,
        under a permit and bounded by `timeout` in total."""
        async with self.slots.guarded(keys=keys):
            return await _bounded(make(), self.timeout)

    async def get(self, key: str) -> bytes | None:
        value = await self._call(lambda: self.client.get(key), (key,))
        return bytes(value) if value is not None else None

    async def get_head(self, key: str, size: int) -> bytes | None:
        value = await self._call(lambda: self.client.getrange(key, 0, size - 1), (key,))
        return bytes(value) if value else None

    async def read(
        self, key: str, generations: Sequence[str], head: int = 0
    ) -> tuple[bytes | None, list[bytes | None]]:
        if not generations:
            return await (self.get_head(key, head) if head else self.get(key)), []
        value, *tokens = await self._call(
            lambda: self._read(key, generations, head), (key, *generations)
        )
        if head and not value:
            value = None
        return (None if value is None else bytes(value)), [
            None if t is None else bytes(t) for t in tokens
        ]

    async def _read(self, key: str, generations: Sequence[str], head: int) -> list[Any]:
        # One GET per key (each its own slot), sent to their nodes together.
        pipe = self.client.pipeline(transaction=False)
        if head:
            pipe.getrange(key, 0, head - 1)
        else:
            pipe.get(key)
        for name in generations:
            pipe.get(name)
        return list(await pipe.execute())

    async def lease(
        self, key: str, generations: Sequence[str], ttl_ms: int, claim: bytes, size: int
    ) -> tuple[bytes, list[bytes]]:
        fresh = [os.urandom(16) for _ in generations]
        ttl = max(int(ttl_ms), 1)

        async def lease() -> tuple[bytes, list[bytes]]:
            pipe = self.client.pipeline(transaction=False)
            # The key alone: its own slot. By its SHA1, not its text (half of a miss's
            # bytes); a node that does not have it (restarted, flushed, a promoted
            # replica) answers NOSCRIPT and the script is loaded there and run once more.
            # (As a raw command: redis-py 5 blocks `evalsha` on a cluster pipeline,
            # though it routes EVALSHA by its keys as it does EVAL.)
            pipe.execute_command("EVALSHA", self._lease.sha, 1, key, ttl, size, claim)
            for name, token in zip(generations, fresh, strict=True):
                pipe.set(name, token, px=ttl, nx=True, get=True)  # Redis 7: the old token
            first, *found = await pipe.execute(raise_on_error=False)
            if isinstance(first, NoScriptError):
                first = await self._lease(keys=[key], args=[ttl, size, claim])
            for reply in (first, *found):
                if isinstance(reply, Exception):
                    raise reply
            (held,) = first  # the script answers [held]
            pairs = zip(found, fresh, strict=True)
            return bytes(held), [bytes(old) if old is not None else new for old, new in pairs]

        return await self._call(lease, (key, *generations))

    async def set(
        self,
        key: str,
        value: bytes,
        ttl_ms: int,
        indexes: Sequence[str] = (),
        expect: bytes | None = None,
    ) -> bool:
        ttl = max(int(ttl_ms), 1)
        return await self._call(
            lambda: self._set(key, value, ttl, indexes, expect), (key, *indexes)
        )

    async def _set(
        self, key: str, value: bytes, ttl: int, indexes: Sequence[str], expect: bytes | None
    ) -> bool:
        if indexes:
            now_ms = time.time_ns() // 1_000_000
            pipe = self.client.pipeline(transaction=False)
            for index in indexes:
                # The same rules as the single-Redis script: members scored by expiry, the
                # expired ones dropped, and the index outliving its longest-lived member
                # (NX sets the first expiry, GT only ever extends it; both relative, so
                # clock skew between the app and Redis cannot cut an index short).
                pipe.zadd(index, {index_member(index, key): now_ms + ttl})
                pipe.zremrangebyscore(index, "-inf", now_ms)
                pipe.pexpire(index, ttl + 1000, nx=True)
                pipe.pexpire(index, ttl + 1000, gt=True)
            await pipe.execute()
        if expect is None:
            await self.client.set(key, value, px=ttl)
            return True
        # The condition and the write on the entry's key alone: one slot, atomic.
        now_ms = time.time_ns() // 1_000_000
        return bool(await self._set_indexed(keys=[key], args=[value, ttl, now_ms, expect]))

    async def acquire(self, name: str, token: bytes, ttl_ms: int) -> bool:
        ttl = max(int(ttl_ms), 1)
        return bool(
            await self._call(lambda: self.client.set(name, token, px=ttl, nx=True), (name,))
        )

    async def release(self, name: str, token: bytes) -> None:
        await self._call(lambda: self._release(keys=[name], args=[token]), (name,))

    async def invalidate(
        self, indexes: Sequence[str], keys: Sequence[str] = (), generations: Sequence[str] = ()
    ) -> int:
        if not indexes and not keys and not generations:
            return 0
        async with self.slots.guarded(first_load=True):
            # The generations first: once they are gone, every entry built under them is a
            # miss, whatever happens to the rest (an evicted index, a failure below).
            await self._unlink([name.encode() for name in generations])
            members: list[list[bytes]] = []
            if indexes:
                pipe = self.client.pipeline(transaction=False)
                for index in indexes:
                    pipe.zrange(index, 0, -1)
                members = list(await _bounded(pipe.execute(), self.timeout))
            targets = {k.encode() for k in keys}
            for index, listed in zip(indexes, members, strict=True):
                targets.update(listed_key(index, m) for m in listed)
            deleted = await self._unlink(targets)
            if indexes:
                # Only what was read and deleted: an entry listed since stays listed, and a
                # failure before this point leaves the index whole for the replay.
                pipe = self.client.pipeline(transaction=False)
                for index, listed in zip(indexes, members, strict=True):
                    for start in range(0, len(listed), _BATCH):
                        pipe.zrem(index, *listed[start : start + _BATCH])
                if len(pipe):
                    await _bounded(pipe.execute(), self.timeout)
            return deleted

    async def _unlink(self, keys: Collection[bytes]) -> int:
        """UNLINK `keys` with one command per slot, grouped per node in one pipeline."""
        by_slot: dict[int, list[bytes]] = defaultdict(list)
        for key in keys:
            by_slot[key_slot(key)].append(key)
        if not by_slot:
            return 0
        pipe = self.client.pipeline(transaction=False)
        for same_slot in by_slot.values():
            for start in range(0, len(same_slot), _BATCH):
                pipe.execute_command("UNLINK", *same_slot[start : start + _BATCH])
        return sum(int(n) for n in await _bounded(pipe.execute(), self.timeout))

    async def delete(self, keys: Sequence[str]) -> int:
        async with self.slots.guarded(first_load=True):
            return await self._unlink([k.encode() for k in keys])

    async def clear(self, prefix: str) -> int:
        pattern = prefix.translate(GLOB_SPECIALS) + "*"
        deleted = 0
        async with self.slots.guarded(first_load=True):
            # SCAN every primary (as redis-py's scan_iter does), each round trip bounded.
            cursors, keys = await _bounded(
                self.client.scan(match=pattern, count=1000), self.timeout
            )
            nodes = {name: self.client.get_node(node_name=name) for name in cursors}
            while True:
                for start in range(0, len(keys), _BATCH):
                    deleted += await self._unlink(keys[start : start + _BATCH])
                cursors = {name: cursor for name, cursor in cursors.items() if cursor}
                if not cursors:
                    return deleted
                name, cursor = next(iter(cursors.items()))
                found, keys = await _bounded(
                    self.client.scan(
                        cursor=cursor, match=pattern, count=1000, target_nodes=nodes[name]
                    ),
                    self.timeout,
                )
                cursors[name] = found[name]

    async def ping(self) -> None:
        # At startup (`Cache.connect`) the slot map is loaded here, in the foreground: each
        # socket operation is bounded by the socket timeout (`backstop(timeout)`), the whole
        # load is not.
        await self.client.initialize()
        await self._call(lambda: self.client.ping(target_nodes=RedisCluster.PRIMARIES), None)

    def track(
        self,
        prefix: str,
        *,
        heartbeat: float,
        on_subscribed: Callable[[], None],
        on_changed: Callable[[list[str] | None], None],
        on_lost: Callable[[Exception | None], None],
    ) -> Listener:
        """A `ClusterTracker`, not yet started: one `Tracker` per primary, following the
        cluster's topology (see `backends/cluster_tracking.py`)."""
        return ClusterTracker(
            self.client,
            prefix,
            timeout=self.timeout,
            heartbeat=heartbeat,
            on_subscribed=on_subscribed,
            on_changed=on_changed,
            on_lost=on_lost,
        )
