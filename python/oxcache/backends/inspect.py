"""One Redis database as the `oxcache` command-line tool reads it: a single Redis, the master
of a Sentinel service, or every primary of a Redis Cluster (the URLs `Cache(url=...)`
takes), through SCAN (never KEYS) and pipelines of at most `BATCH` keys, each round trip
bounded by the tool's timeout, with redis-py's errors turned into `RedisUnavailable`. The
tool (`oxcache.cli`, `oxcache.inspector`) knows the store's key layout and the entry
format; this module knows only Redis."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from typing import Any, NamedTuple, TypeVar

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import AuthenticationError, RedisClusterException, RedisError

from oxcache.backends._bound import bounded
from oxcache.backends.base import Backend, member_key
from oxcache.backends.cluster import ClusterBackend
from oxcache.backends.connect import backend_for
from oxcache.backends.redis import GLOB_SPECIALS, RedisBackend
from oxcache.errors import ConfigError, OxcacheError

__all__ = ["BATCH", "CredentialsRefused", "Measured", "RedisDatabase", "RedisUnavailable"]

#: Keys per pipeline (and per EXISTS batch).
BATCH = 500

T = TypeVar("T")


class RedisUnavailable(OxcacheError):
    """Redis could not be reached, or a command failed. `str()` is redis-py's message and
    `reason` the name of its exception (`ConnectionError`, `ResponseError`, ...)."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class CredentialsRefused(RedisUnavailable):
    """Redis refused the credentials of the URL."""


class Measured(NamedTuple):
    """One key as `RedisDatabase.survey` found it."""

    key: str
    #: MEMORY USAGE in bytes (0 when Redis cannot tell, e.g. the key is gone).
    size: int
    #: The first bytes of the value; None for an index or a value that is not a string.
    head: bytes | None
    #: For an index: how many members score after now (entries not yet expired); else 0.
    live: int


@contextlib.contextmanager
def _redis_errors() -> Iterator[None]:
    try:
        yield
    except AuthenticationError as exc:
        raise CredentialsRefused(str(exc), type(exc).__name__) from exc
    except (RedisError, RedisClusterException, OSError) as exc:
        raise RedisUnavailable(str(exc), type(exc).__name__) from exc


def _text(raw: bytes | str) -> str:
    return raw if isinstance(raw, str) else raw.decode("utf-8", "backslashreplace")


def _open(url: str, timeout: float, cluster: bool = False) -> RedisBackend:
    """The store's backend for `url` (`redis+cluster://` and `redis+sentinel://` too)."""
    try:
        backend: Backend = backend_for(
            url,
            None,
            cluster=cluster,
            sentinel=None,
            service_name=None,
            timeout=timeout,
            max_entries=1,
            max_bytes=1,
        )
    except (ValueError, TypeError) as exc:
        raise ConfigError(str(exc)) from exc
    assert isinstance(backend, RedisBackend)
    return backend


class RedisDatabase:
    """The keys of one Redis database, read for the `oxcache` tool.

    Args:
        url: Any URL `Cache(url=...)` takes: `redis://`, `rediss://`, `unix://` (with
            password and database), `redis+cluster://` (every primary of the cluster is
            read) or `redis+sentinel://host:port/service[/db]` (the service's master). One
            that cannot be used raises `ConfigError` with its reason.
        timeout: Seconds for each command and connection attempt.

    Every method raises `RedisUnavailable` (`CredentialsRefused` for a wrong password)
    when Redis fails. `ping()` first: a plain URL of a node of a Redis Cluster is then read
    as the whole cluster (`note` says so), never as that one node. `close()` releases the
    connections.
    """

    def __init__(self, url: str, *, timeout: float) -> None:
        self.url = url
        self.timeout = timeout
        #: The store's backend on the same connections (its scripts, for a
        #: `Cache(backend=...)`).
        self.backend = _open(url, timeout)
        self.client: Any = self.backend.client
        #: Set by `ping()` when it found a cluster behind a plain URL.
        self.note: str | None = None

    @property
    def cluster(self) -> bool:
        """Whether the database is a Redis Cluster (read on every primary)."""
        return isinstance(self.backend, ClusterBackend)

    async def _run(self, aw: Awaitable[T]) -> T:
        with _redis_errors():
            return await bounded(aw, self.timeout)

    async def ping(self) -> None:
        """Raise unless Redis answers; behind a plain URL of a cluster node, switch to the
        whole cluster."""
        with _redis_errors():
            await self.backend.ping()
        if self.cluster:
            return
        info = await self._run(self.client.info("cluster"))
        if int(info.get("cluster_enabled", 0)):
            await self.close()
            self.backend = _open(self.url, self.timeout, cluster=True)
            self.client = self.backend.client
            with _redis_errors():
                await self.backend.ping()
            self.note = "a node of a Redis Cluster: reading every primary of the cluster"

    async def close(self) -> None:
        """Close the connections."""
        await self.backend.close()

    async def scan(self, prefix: str, containing: str = "") -> AsyncIterator[str]:
        """Every key that starts with `prefix` and, when given, contains `containing` after
        it (SCAN with MATCH on every primary of a cluster, never KEYS; a key may come more
        than once)."""
        pattern = prefix.translate(GLOB_SPECIALS) + "*"
        if containing:
            pattern += containing.translate(GLOB_SPECIALS) + "*"
        nodes = self.client.get_primaries() if self.cluster else [None]
        for node in nodes:
            cursor = 0
            while True:
                if node is None:
                    cursor, keys = await self._run(
                        self.client.scan(cursor=cursor, match=pattern, count=1000)
                    )
                else:
                    cursors, keys = await self._run(
                        self.client.scan(
                            cursor=cursor, match=pattern, count=1000, target_nodes=node
                        )
                    )
                    cursor = cursors[node.name]
                for raw in keys:
                    yield _text(raw)
                if not cursor:
                    break

    async def find(self, key: str, prefix: str = "") -> tuple[str, str] | None:
        """The key `key` names, tried as given and then under `prefix` (unless it starts
        with it), with its Redis type (`string`, `zset`, ...); None when neither exists."""
        names = [key]
        if prefix and not key.startswith(prefix):
            names.append(prefix + key)
        for name in names:
            kind = _text(await self._run(self.client.type(name)))
            if kind != "none":
                return name, kind
        return None

    async def read(self, key: str) -> tuple[bytes, int]:
        """The string value of `key` (b"" when it is gone) and its PTTL in milliseconds."""
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.get(key)
            pipe.pttl(key)
            data, pttl = await self._run(pipe.execute())
        return bytes(data or b""), int(pttl)

    async def existing(self, keys: Sequence[str]) -> list[str]:
        """Those of `keys` that exist, in order."""
        alive: list[str] = []
        for start in range(0, len(keys), BATCH):
            batch = keys[start : start + BATCH]
            async with self.client.pipeline(transaction=False) as pipe:
                for key in batch:
                    pipe.exists(key)
                flags = await self._run(pipe.execute())
            alive.extend(key for key, flag in zip(batch, flags, strict=True) if flag)
        return alive

    async def live_members(self, index: str) -> list[str]:
        """The members of the sorted set `index` that exist (an index may list a few
        entries that expired since its last write), sorted."""
        members = [
            member_key(index, _text(m)) for m in await self._run(self.client.zrange(index, 0, -1))
        ]
        return sorted(await self.existing(members))

    async def survey(
        self, prefix: str, is_index: Callable[[str], bool], head_size: int
    ) -> AsyncIterator[Measured]:
        """Every key under `prefix` (SCAN), measured in one pipeline per `BATCH` keys: its
        MEMORY USAGE, and for an index (`is_index(key)`: a sorted set scored by expiry) its
        live members, for any other key its first `head_size` bytes."""
        batch: list[str] = []
        async for key in self.scan(prefix):
            batch.append(key)
            if len(batch) >= BATCH:
                for measured in await self._measure(batch, is_index, head_size):
                    yield measured
                batch = []
        if batch:
            for measured in await self._measure(batch, is_index, head_size):
                yield measured

    async def _measure(
        self, keys: list[str], is_index: Callable[[str], bool], head_size: int
    ) -> list[Measured]:
        async with self.client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.memory_usage(key)
                if is_index(key):
                    pipe.zcount(key, time.time_ns() // 1_000_000, "+inf")
                else:
                    pipe.getrange(key, 0, head_size - 1)
            replies = iter(await self._run(pipe.execute(raise_on_error=False)))
        found = []
        for key in keys:
            size, extra = next(replies), next(replies)
            found.append(
                Measured(
                    key,
                    size if isinstance(size, int) else 0,
                    extra if isinstance(extra, bytes) else None,
                    extra if isinstance(extra, int) else 0,
                )
            )
        return found

    async def server_hits(self) -> tuple[int, int]:
        """The server's keyspace hits and misses (INFO stats), over all its clients (and
        all the primaries of a cluster)."""
        if self.cluster:
            found = await self._run(self.client.info("stats", target_nodes=RedisCluster.PRIMARIES))
            infos = list(found.values())
        else:
            infos = [await self._run(self.client.info("stats"))]
        hits = sum(int(info.get("keyspace_hits", 0)) for info in infos)
        return hits, sum(int(info.get("keyspace_misses", 0)) for info in infos)

    async def invalidate(self, indexes: Sequence[str], keys: Sequence[str]) -> int:
        """Delete as the store invalidates (`RedisBackend.invalidate`): every entry
        `indexes` list (unlisted from them), and `keys`; how many entries existed."""
        with _redis_errors():
            return await self.backend.invalidate(indexes, keys)

    async def delete(self, keys: Sequence[str]) -> int:
        """UNLINK `keys` (`BATCH` at a time, per slot on a cluster); how many existed."""
        deleted = 0
        for start in range(0, len(keys), BATCH):
            batch = list(keys[start : start + BATCH])
            deleted += await self._run(self.backend.delete(batch))
        return deleted
