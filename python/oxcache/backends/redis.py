"""Redis backend on `redis.asyncio`: one pool, one round trip per hit."""

from __future__ import annotations

import asyncio
import os
import time
import weakref
from collections.abc import Awaitable, Sequence
from typing import Any, Callable, TypeVar

import redis.asyncio as aioredis
from redis.asyncio import connection as _connection

from oxcache.backends._bound import backstop, bounded
from oxcache.backends._pipe import ReadPipe, encode_get, encode_getrange, encode_mget
from oxcache.backends.base import Backend, index_member, listed_key
from oxcache.backends.tracking import Listener, Tracker

__all__ = ["GLOB_SPECIALS", "LEASE_SCRIPT", "RELEASE_SCRIPT", "SET_INDEXED_SCRIPT", "RedisBackend"]

T = TypeVar("T")

GLOB_SPECIALS = str.maketrans({c: "\\" + c for c in "*?[]\\"})

# KEYS[1]: the entry; KEYS[2..]: its indexes (sorted sets scored by expiry, in ms since the
# epoch). ARGV: value, ttl ms, now ms, what the value under KEYS[1] must still start with
# ("" for nothing: an unconditional write), then the entry's member in each index
# (`index_member`). Each index drops members that have expired and
# lives exactly as long as its longest-lived member (relative TTLs, so clock skew between
# the app and Redis cannot make an index die before its entries). 0 when the condition
# failed (nothing written).
SET_INDEXED_SCRIPT = """
local expect = ARGV[4]
if expect ~= '' and redis.call('GETRANGE', KEYS[1], 0, #expect - 1) ~= expect then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
local now = tonumber(ARGV[3])
local expires = now + tonumber(ARGV[2])
for i = 2, #KEYS do
  redis.call('ZADD', KEYS[i], expires, ARGV[i + 3])
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now)
  local top = redis.call('ZRANGE', KEYS[i], -1, -1, 'WITHSCORES')
  redis.call('PEXPIRE', KEYS[i], math.max(tonumber(top[2]) - now, 1) + 1000)
end
return 1
"""

# KEYS[1]: an entry; KEYS[2..]: generations. ARGV: ttl ms, head size, the lease value, then a
# new token for each generation. Returns what the write of KEYS[1] will be conditional on
# (its first bytes, or the lease, stored there if it held nothing) and the tokens (missing
# ones set to the new ones).
LEASE_SCRIPT = """
local held = redis.call('GETRANGE', KEYS[1], 0, tonumber(ARGV[2]) - 1)
if held == '' then
  held = ARGV[3]
  redis.call('SET', KEYS[1], held, 'PX', ARGV[1])
end
local out = {held}
for i = 2, #KEYS do
  local token = redis.call('GET', KEYS[i])
  if not token then
    token = ARGV[i + 2]
    redis.call('SET', KEYS[i], token, 'PX', ARGV[1])
  end
  out[i] = token
end
return out
"""

# Delete the lock only if we still hold it (it may have expired and been taken by another).
RELEASE_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# Every script declares in KEYS each key it touches: Dragonfly refuses a script that touches
# any other by default, and Redis Cluster needs them to route it (tests/test_scripts.py runs
# every script under MONITOR and checks). So an invalidation reads its indexes first and
# then deletes what it read in one transaction, rather than in a script that would read the
# indexes' members and delete keys it never declared.


_PIPELINE_POOLS = (aioredis.ConnectionPool, aioredis.BlockingConnectionPool)
_PIPELINE_CONNECTIONS = (
    _connection.Connection,
    _connection.SSLConnection,
    _connection.UnixDomainSocketConnection,
)


class RedisBackend(Backend):
    """Entries as plain Redis strings with a millisecond TTL (`SET key value PX ttl`).

    Pass `url` (any redis-py URL: `redis://`, `rediss://`, `unix://`, with password and
    database) to let the backend create and own its client, or `client` to use one you made;
    a client passed in is never closed by oxcache. `timeout` bounds every command and
    connection attempt, so a dead or stuck Redis costs a request at most about that long.
    The bound is on Redis, not on this process's event loop: a command whose timer fires
    late because the loop was busy with other requests gets more time (`backends/_bound.py`),
    so load on the app alone never looks like an outage. `max_connections` (16) bounds the
    pool; more concurrent commands wait for a free connection (within the same bound): a hit
    holds one for well under a millisecond, and fewer connections mean fewer handshakes
    racing the timeout in a burst.

    With `auto_pipeline` (the default) reads do not use the pool: each event loop gets one
    more connection on which the GETs of concurrent requests go out together in one write
    and their replies are matched in order, which costs a hit far less than a pooled
    command and turns a burst of hits into one round trip. Writes, locks and invalidations
    always use the pool. It applies when the backend made its client from `url`, on plain,
    TLS and Unix-socket connections; a client passed in keeps pooled reads.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        client: aioredis.Redis | None = None,
        timeout: float = 0.1,
        max_connections: int = 16,
        auto_pipeline: bool = True,
    ) -> None:
        if (url is None) == (client is None):
            raise ValueError("RedisBackend needs exactly one of url= or client=")
        if client is None:
            assert url is not None
            # A blocking pool: past `max_connections` concurrent commands, a request waits
            # (at most `timeout`) for a free connection instead of failing at once, which
            # would look like an outage under load.
            # The pool's own timeouts are only a backstop: `bounded` enforces `timeout`.
            limit = backstop(timeout)
            pool = aioredis.BlockingConnectionPool.from_url(
                url,
                socket_timeout=limit,
                socket_connect_timeout=limit,
                max_connections=max_connections,
                timeout=limit,
                decode_responses=False,
                retry_on_timeout=False,
            )
            client = aioredis.Redis.from_pool(pool)
            self.owns_connection = True
        else:
            self.owns_connection = False
        self.client: Any = client
        self.timeout = timeout
        # Commands on a client made here are bounded by `timeout`; a client passed in keeps
        # its own timeouts.
        self.bound: float | None = timeout if self.owns_connection else None
        # Scripts run by EVALSHA, reloaded by redis-py after a restart emptied the script cache.
        self._set_indexed = client.register_script(SET_INDEXED_SCRIPT)
        self._lease = client.register_script(LEASE_SCRIPT)
        self._release = client.register_script(RELEASE_SCRIPT)
        read_pool: Any = getattr(client, "connection_pool", None)
        self.auto_pipeline = bool(
            auto_pipeline
            and self.owns_connection
            and type(read_pool) in _PIPELINE_POOLS
            and read_pool.connection_class in _PIPELINE_CONNECTIONS
            and read_pool.connection_kwargs.get("encoding", "utf-8") == "utf-8"
        )
        # One read pipe per event loop (a store may serve several, e.g. two TestClients).
        self._pipes: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, ReadPipe] = (
            weakref.WeakKeyDictionary()
        )
        self._pipe: ReadPipe | None = None  # the last one used

    async def _limit(self, aw: Awaitable[T]) -> T:
        """`aw` under this backend's bound (see `backends/_bound.py`), when it has one."""
        if self.bound is None:
            return await aw
        return await bounded(aw, self.bound)

    def _read_pipe(self) -> ReadPipe:
        loop = asyncio.get_running_loop()
        pipe = self._pipe
        if pipe is None or pipe.loop is not loop:
            pipe = self._pipes.get(loop)
            if pipe is None:
                pipe = self._pipes[loop] = ReadPipe(self.client.connection_pool, self.timeout, loop)
            self._pipe = pipe
        return pipe

    async def get(self, key: str) -> bytes | None:
        if self.auto_pipeline:
            value = await self._read_pipe().request(encode_get(key.encode()))
        else:
            value = await self._limit(self.client.get(key))
        return bytes(value) if value is not None else None

    async def get_head(self, key: str, size: int) -> bytes | None:
        # GETRANGE on a missing key gives b"", which no entry can be.
        if self.auto_pipeline:
            value = await self._read_pipe().request(encode_getrange(key.encode(), 0, size - 1))
        else:
            value = await self._limit(self.client.getrange(key, 0, size - 1))
        return bytes(value) if value else None

    async def read(
        self, key: str, generations: Sequence[str], head: int = 0
    ) -> tuple[bytes | None, list[bytes | None]]:
        if not generations:
            return await (self.get_head(key, head) if head else self.get(key)), []
        names = [name.encode() for name in generations]
        if self.auto_pipeline:
            pipe = self._read_pipe()
            if head:
                value, tokens = await pipe.request_many(
                    [encode_getrange(key.encode(), 0, head - 1), encode_mget(names)]
                )
            else:  # one command: the entry and its generations, read at the same instant
                value, *tokens = await pipe.request(encode_mget([key.encode(), *names]))
        elif head:
            value, tokens = await self._limit(_head_and_tokens(self.client, key, head, generations))
        else:
            value, *tokens = await self._limit(self.client.mget(key, *generations))
        if head and not value:
            value = None
        return (None if value is None else bytes(value)), [
            None if t is None else bytes(t) for t in tokens
        ]

    async def lease(
        self, key: str, generations: Sequence[str], ttl_ms: int, claim: bytes, size: int
    ) -> tuple[bytes, list[bytes]]:
        fresh = [os.urandom(16) for _ in generations]
        ttl = max(int(ttl_ms), 1)
        held, *tokens = await self._limit(
            self._lease(keys=[key, *generations], args=[ttl, size, claim, *fresh])
        )
        return bytes(held), [bytes(t) for t in tokens]

    async def set(
        self,
        key: str,
        value: bytes,
        ttl_ms: int,
        indexes: Sequence[str] = (),
        expect: bytes | None = None,
    ) -> bool:
        ttl = max(int(ttl_ms), 1)
        if not indexes and expect is None:
            await self._limit(self.client.set(key, value, px=ttl))
            return True
        now_ms = time.time_ns() // 1_000_000
        done = await self._limit(
            self._set_indexed(
                keys=[key, *indexes],
                args=[value, ttl, now_ms, expect or b"", *(index_member(i, key) for i in indexes)],
            )
        )
        return bool(done)

    async def invalidate(
        self, indexes: Sequence[str], keys: Sequence[str] = (), generations: Sequence[str] = ()
    ) -> int:
        if not indexes and not keys and not generations:
            return 0
        members: list[list[bytes]] = []
        if indexes:
            read = self.client.pipeline(transaction=False)
            for index in indexes:
                read.zrange(index, 0, -1)
            members = list(await self._limit(read.execute()))
        targets = {key.encode() for key in keys}
        for index, listed in zip(indexes, members, strict=True):
            targets.update(listed_key(index, m) for m in listed)
        if not targets and not generations:
            return 0
        # One transaction: the generations go first (what makes the invalidation hold, even
        # where an index was evicted), then the entries, and they from the indexes they were
        # read from; an entry listed since the read stays listed (built under the deleted
        # tokens, it is never read again), and a failure before the write leaves everything
        # whole for the replay.
        delete = self.client.pipeline(transaction=True)
        if generations:
            delete.unlink(*generations)
        if targets:
            delete.unlink(*sorted(targets))
        for index, listed in zip(indexes, members, strict=True):
            if listed:
                delete.zrem(index, *listed)
        replies = await self._limit(delete.execute())
        return int(replies[1 if generations else 0]) if targets else 0

    async def delete(self, keys: Sequence[str]) -> int:
        if not keys:
            return 0
        return int(await self._limit(self.client.unlink(*keys)))

    async def acquire(self, name: str, token: bytes, ttl_ms: int) -> bool:
        return bool(
            await self._limit(self.client.set(name, token, px=max(int(ttl_ms), 1), nx=True))
        )

    async def release(self, name: str, token: bytes) -> None:
        await self._limit(self._release(keys=[name], args=[token]))

    async def clear(self, prefix: str) -> int:
        pattern = prefix.translate(GLOB_SPECIALS) + "*"
        deleted = 0
        cursor = 0
        while True:  # SCAN + UNLINK, each round trip under the bound (never KEYS)
            cursor, keys = await self._limit(
                self.client.scan(cursor=cursor, match=pattern, count=1000)
            )
            for start in range(0, len(keys), 500):
                deleted += int(await self._limit(self.client.unlink(*keys[start : start + 500])))
            if not cursor:
                return deleted

    async def ping(self) -> None:
        await self._limit(self.client.ping())

    def track(
        self,
        prefix: str,
        *,
        heartbeat: float,
        on_subscribed: Callable[[], None],
        on_changed: Callable[[list[str] | None], None],
        on_lost: Callable[[Exception | None], None],
    ) -> Listener:
        """A `Tracker`, not yet started, that hears of every change Redis makes to a key
        starting with `prefix`, on a connection of its own made like the pool's, within
        this backend's `timeout` to connect (see `backends/tracking.py` for the callbacks)."""
        return Tracker(
            self.client.connection_pool,
            prefix,
            timeout=self.timeout,
            heartbeat=heartbeat,
            on_subscribed=on_subscribed,
            on_changed=on_changed,
            on_lost=on_lost,
        )

    async def close(self) -> None:
        for pipe in list(self._pipes.values()):
            pipe.close()
        self._pipes.clear()
        self._pipe = None
        if self.owns_connection:
            await self.client.aclose()


async def _head_and_tokens(
    client: Any, key: str, head: int, generations: Sequence[str]
) -> tuple[bytes, list[bytes | None]]:
    """The first `head` bytes under `key` and the tokens of `generations`, in one round trip
    on the pool (a client passed in, whose reads are not auto-pipelined)."""
    async with client.pipeline(transaction=False) as pipe:
        pipe.getrange(key, 0, head - 1)
        pipe.mget(*generations)
        value, tokens = await pipe.execute()
    return value, tokens
