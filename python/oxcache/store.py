"""The store: configuration, a backend, and the rules for talking to it safely."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Any, Callable

from oxcache._core import (
    ENTRY_HEAD_SIZE,
    Entry,
    EntryError,
    EntryHead,
    decode_entry,
    peek_entry,
)
from oxcache.backends.base import Backend
from oxcache.backends.memory import MemoryBackend
from oxcache.backends.redis import RedisBackend
from oxcache.errors import ConfigError

logger = logging.getLogger("oxcache")
logger.addHandler(logging.NullHandler())

DEFAULT_RESPONSE_HEADER = "X-FastAPI-Cache"


class Cache:
    """A cache store: where entries live and how responses are keyed and marked.

    `Cache()` runs on an in-process `MemoryBackend`; `Cache(url="redis://...")` on Redis
    (`client=` takes a `redis.asyncio.Redis` you made; `backend=` any `Backend`). Enter it with
    `FastAPI(lifespan=store.lifespan)` or `async with store:`; an entered store becomes the
    default for `@cache` endpoints that name no `store=`.

    Storage failures never fail a request: reads become misses and writes are skipped, the
    outage is logged once (CONNECT_FAIL) and its end once, and after a failure the store
    leaves the backend alone for `retry_after` seconds before trying again.

    Args:
        url: Redis URL; None for the in-memory backend.
        prefix: Prepended to every key as `prefix:`; `clear()` deletes only keys under it.
        response_header: The header saying `Hit` or `Miss`.
        ignore_arg_types: Types of endpoint arguments left out of keys (subclasses too, and
            through `Optional[...]` and `Annotated[...]`), such as `sqlalchemy.orm.Session`.
            Request, Response, WebSocket and BackgroundTasks are always left out.
        strong_etag: Send `"tag"` instead of `W/"tag"`. Only safe when nothing between the
            app and the client re-encodes bodies (GZipMiddleware does).
        timeout: Seconds any single Redis command or connection attempt may take.
        retry_after: Seconds to leave the backend alone after a failure.
        max_entries, max_bytes: Bounds of the in-memory backend.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        prefix: str | None = None,
        response_header: str | None = None,
        ignore_arg_types: Iterable[type[Any]] | None = None,
        backend: Backend | None = None,
        client: Any = None,
        strong_etag: bool = False,
        timeout: float = 0.1,
        retry_after: float = 1.0,
        max_entries: int = 10_000,
        max_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        if sum(x is not None for x in (url, backend, client)) > 1:
            raise ConfigError("give at most one of url=, client= and backend=")
        if timeout <= 0 or retry_after < 0:
            raise ConfigError("timeout must be positive and retry_after not negative")
        if backend is None:
            if url is not None or client is not None:
                backend = RedisBackend(url, client=client, timeout=timeout)
            else:
                backend = MemoryBackend(max_entries=max_entries, max_bytes=max_bytes)
        self.backend = backend
        self.url = url
        self.prefix = prefix or ""
        self.response_header = response_header or DEFAULT_RESPONSE_HEADER
        self.hit_header = self.response_header.lower().encode("latin-1")
        self.ignore_arg_types: tuple[type[Any], ...] = tuple(ignore_arg_types or ())
        self.strong_etag = strong_etag
        self.retry_after = retry_after
        self._down_until = 0.0
        self._healthy = True
        self._previous_default: Cache | None = None
        self._warned: set[str] = set()

    def __repr__(self) -> str:
        return f"Cache(backend={type(self.backend).__name__}, prefix={self.prefix!r})"

    # -- lifecycle -----------------------------------------------------------------------

    async def connect(self) -> bool:
        """Check the backend once, logging CONNECT_BEGIN and then CONNECT_SUCCESS or
        CONNECT_FAIL. Never raises: an unreachable Redis means uncached responses until it
        answers, not a failed startup."""
        logger.info("CONNECT_BEGIN: Attempting to connect to %s...", self._describe())
        try:
            await self.backend.ping()
        except Exception as exc:
            self._failed(exc)
            return False
        self._healthy = True
        self._down_until = 0.0
        logger.info("CONNECT_SUCCESS: %s is connected.", self._describe())
        return True

    async def close(self) -> None:
        """Release the backend's connections (never a client that was passed in)."""
        if self.backend.owns_connection:
            await self.backend.close()

    async def __aenter__(self) -> Cache:
        await self.connect()
        self._previous_default = _set_default(self)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if _default_store is self:
            _set_default(self._previous_default)
        self._previous_default = None
        await self.close()

    @asynccontextmanager
    async def lifespan(self, app: Any) -> AsyncIterator[None]:
        """Lifespan handler: `FastAPI(lifespan=store.lifespan)` connects on startup and
        closes on shutdown."""
        async with self:
            yield

    # -- entries -------------------------------------------------------------------------

    def _available(self) -> bool:
        return self._down_until == 0.0 or time.monotonic() >= self._down_until

    def _failed(self, exc: BaseException) -> None:
        self._down_until = time.monotonic() + self.retry_after
        if self._healthy:
            self._healthy = False
            logger.warning(
                "CONNECT_FAIL: %s failed (%s: %s); serving uncached until it answers.",
                self._describe(),
                type(exc).__name__,
                exc,
            )

    def _recovered(self) -> None:
        self._down_until = 0.0
        if not self._healthy:
            self._healthy = True
            logger.info("CONNECT_SUCCESS: %s answers again; caching resumed.", self._describe())

    async def read(self, key: str) -> Entry | None:
        """The decoded entry under `key`, or None when absent, unreadable or unreachable."""
        if not self._available():
            return None
        try:
            data = await self.backend.get(key)
        except Exception as exc:
            self._failed(exc)
            return None
        if not self._healthy:
            self._recovered()
        if data is None:
            return None
        try:
            return decode_entry(data)
        except EntryError as exc:
            self._warn_once(
                "corrupt:" + key,
                "ignoring an unreadable value under %s (%s); it will be overwritten",
                key,
                exc,
            )
            return None

    async def read_head(self, key: str) -> EntryHead | None:
        """The fixed-size head of the entry under `key` (ETag, times), without its body."""
        if not self._available():
            return None
        try:
            data = await self.backend.get_head(key, ENTRY_HEAD_SIZE)
        except Exception as exc:
            self._failed(exc)
            return None
        if not self._healthy:
            self._recovered()
        if data is None:
            return None
        try:
            return peek_entry(data)
        except EntryError:
            return None

    async def write(self, key: str, data: bytes, ttl_ms: int) -> bool:
        """Store an encoded entry. Logs KEY_ADDED_TO_CACHE, or FAILED_TO_CACHE_KEY and
        returns False when the backend cannot take it."""
        if not self._available():
            logger.info("FAILED_TO_CACHE_KEY: key=%s (store unavailable)", key)
            return False
        try:
            await self.backend.set(key, data, ttl_ms)
        except Exception as exc:
            self._failed(exc)
            logger.info("FAILED_TO_CACHE_KEY: key=%s (%s)", key, type(exc).__name__)
            return False
        if not self._healthy:
            self._recovered()
        logger.info("KEY_ADDED_TO_CACHE: key=%s", key)
        return True

    # -- invalidation --------------------------------------------------------------------

    def key_for(self, endpoint: Callable[..., Any], /, **args: Any) -> str:
        """The key `@cache` gives `endpoint` called with `args` (defaults filled in)."""
        plan = getattr(endpoint, "__oxcache__", None)
        if plan is None:
            raise ConfigError(f"{endpoint!r} is not decorated with @cache")
        key: str = plan.key_for_call(self, args)
        return key

    async def invalidate(self, endpoint: Callable[..., Any], /, **args: Any) -> int:
        """Delete the entry that `endpoint` called with `args` produced. Returns how many
        entries were deleted (0 or 1)."""
        key = self.key_for(endpoint, **args)
        return await self.backend.delete([key])

    async def delete(self, keys: Sequence[str]) -> int:
        """Delete entries by key."""
        return await self.backend.delete(list(keys))

    async def clear(self) -> int:
        """Delete every entry under this store's prefix (with an empty prefix: every key of
        the backend). Uses SCAN and UNLINK on Redis, never KEYS."""
        return await self.backend.clear(f"{self.prefix}:" if self.prefix else "")

    # -- helpers -------------------------------------------------------------------------

    def _describe(self) -> str:
        if isinstance(self.backend, RedisBackend):
            return "Redis" if self.url is None else f"Redis at {_redact(self.url)}"
        return type(self.backend).__name__

    def _warn_once(self, tag: str, message: str, *args: Any) -> None:
        if tag in self._warned or len(self._warned) > 10_000:
            return
        self._warned.add(tag)
        logger.warning(message, *args)


def _redact(url: str) -> str:
    """Hide the password of a Redis URL in logs."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    userinfo, _, host = rest.rpartition("@")
    user = userinfo.partition(":")[0]
    return f"{scheme}://{user + ':' if user else ''}***@{host}"


_default_store: Cache | None = None
_fallback_store: Cache | None = None


def _set_default(store: Cache | None) -> Cache | None:
    global _default_store
    previous = _default_store
    _default_store = store
    return previous


def default_store() -> Cache:
    """The store `@cache` uses when given none: the one configured by
    `FastApiRedisCache().init(...)` or last entered, else a process-wide in-memory store."""
    global _fallback_store
    if _default_store is not None:
        return _default_store
    if _fallback_store is None:
        _fallback_store = Cache()
    return _fallback_store


def _schedule(coro: Any) -> None:
    """Run `coro` on the running loop if there is one (used by the sync seed API)."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        coro.close()
        return
    task = loop.create_task(coro)
    _background.add(task)
    task.add_done_callback(_background.discard)


_background: set[asyncio.Task[Any]] = set()
