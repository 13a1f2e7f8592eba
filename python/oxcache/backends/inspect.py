"""One Redis database as the `oxcache` command-line tool reads it: SCAN (never KEYS) and
pipelines of at most `BATCH` keys, with redis-py's errors turned into `RedisUnavailable`.
The tool (`oxcache.cli`) knows the store's key layout and the entry format; this module
knows only Redis."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any, NamedTuple

import redis.asyncio as aioredis
from redis.exceptions import AuthenticationError, RedisError

from oxcache.backends.redis import GLOB_SPECIALS, RedisBackend
from oxcache.errors import ConfigError, OxcacheError

__all__ = ["BATCH", "CredentialsRefused", "Measured", "RedisDatabase", "RedisUnavailable"]

#: Keys per pipeline (and per EXISTS batch).
BATCH = 500


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
    except (RedisError, OSError) as exc:
        raise RedisUnavailable(str(exc), type(exc).__name__) from exc


def _text(raw: bytes | str) -> str:
    return raw if isinstance(raw, str) else raw.decode("utf-8", "backslashreplace")


class RedisDatabase:
    """The keys of one Redis database, read for the `oxcache` tool.

    Args:
        url: A redis-py URL (`redis://`, `rediss://`, `unix://`, with password and
            database); one redis-py cannot use raises `ConfigError` with its reason.
        timeout: Seconds for each command and connection attempt.

    Every method raises `RedisUnavailable` (`CredentialsRefused` for a wrong password)
    when Redis fails. `close()` releases the connections.
    """

    def __init__(self, url: str, *, timeout: float) -> None:
        try:
            client = aioredis.Redis.from_url(
                url, socket_timeout=timeout, socket_connect_timeout=timeout
            )
        except (ValueError, TypeError) as exc:
            raise ConfigError(str(exc)) from exc
        self.client: Any = client
        #: The store's backend on the same connections (its scripts, for a
        #: `Cache(backend=...)`); it never closes them.
        self.backend = RedisBackend(client=client, timeout=timeout)

    async def ping(self) -> None:
        """Raise unless Redis answers."""
        with _redis_errors():
            await self.client.ping()

    async def close(self) -> None:
        """Close the connections."""
        await self.client.aclose()

    async def scan(self, prefix: str, containing: str = "") -> AsyncIterator[str]:
        """Every key that starts with `prefix` and, when given, contains `containing` after
        it (SCAN with MATCH, never KEYS; a key may come more than once)."""
        pattern = prefix.translate(GLOB_SPECIALS) + "*"
        if containing:
            pattern += containing.translate(GLOB_SPECIALS) + "*"
        cursor = 0
        while True:
            with _redis_errors():
                cursor, keys = await self.client.scan(cursor=cursor, match=pattern, count=1000)
            for raw in keys:
                yield _text(raw)
            if not cursor:
                return

    async def find(self, key: str, prefix: str = "") -> tuple[str, str] | None:
        """The key `key` names, tried as given and then under `prefix` (unless it starts
        with it), with its Redis type (`string`, `zset`, ...); None when neither exists."""
        names = [key]
        if prefix and not key.startswith(prefix):
            names.append(prefix + key)
        for name in names:
            with _redis_errors():
                kind = _text(await self.client.type(name))
            if kind != "none":
                return name, kind
        return None

    async def read(self, key: str) -> tuple[bytes, int]:
        """The string value of `key` (b"" when it is gone) and its PTTL in milliseconds."""
        with _redis_errors():
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.get(key)
                pipe.pttl(key)
                data, pttl = await pipe.execute()
        return bytes(data or b""), int(pttl)

    async def live_members(self, index: str) -> list[str]:
        """The members of the sorted set `index` that exist (an index may list a few
        entries that expired since its last write), sorted."""
        with _redis_errors():
            members = [_text(m) for m in await self.client.zrange(index, 0, -1)]
        alive: list[str] = []
        for start in range(0, len(members), BATCH):
            batch = members[start : start + BATCH]
            with _redis_errors():
                async with self.client.pipeline(transaction=False) as pipe:
                    for key in batch:
                        pipe.exists(key)
                    flags = await pipe.execute()
            alive.extend(key for key, flag in zip(batch, flags, strict=True) if flag)
        return sorted(alive)

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
        with _redis_errors():
            async with self.client.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.memory_usage(key)
                    if is_index(key):
                        pipe.zcount(key, time.time_ns() // 1_000_000, "+inf")
                    else:
                        pipe.getrange(key, 0, head_size - 1)
                replies = iter(await pipe.execute(raise_on_error=False))
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
        """The server's keyspace hits and misses (INFO stats), over all its clients."""
        with _redis_errors():
            info = await self.client.info("stats")
        return int(info.get("keyspace_hits", 0)), int(info.get("keyspace_misses", 0))

    async def invalidate(self, indexes: Sequence[str], keys: Sequence[str]) -> int:
        """Delete through the store's script (`RedisBackend.invalidate`): every entry
        `indexes` list, the indexes, and `keys`; how many entries existed."""
        with _redis_errors():
            return await self.backend.invalidate(indexes, keys)
