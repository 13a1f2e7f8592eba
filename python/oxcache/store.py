"""The store: a configured backend, and the rules for reading, writing and invalidating it
safely (see `health` and `invalidation`). `Cache` is what applications make and enter;
the request path (`serve`, `fill`) reads and writes through it."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any, Callable

from oxcache._core import Entry, EntryHead
from oxcache.backends.base import Backend
from oxcache.backends.connect import backend_for, describe
from oxcache.entries import Entries
from oxcache.flight import Flights
from oxcache.health import Health, Stats
from oxcache.invalidation import Invalidated, Invalidations
from oxcache.keys import KeySpace, UserId
from oxcache.lifecycle import Lifecycle, current_default
from oxcache.logs import LOGGER_NAME
from oxcache.near import NearCache
from oxcache.observe import Observer, Observers
from oxcache.options import STORE_SETTING, StoreSetting, check_store_options
from oxcache.registry import keyed

__all__ = ["DEFAULT_RESPONSE_HEADER", "Cache", "default_store"]

# Warnings reach the console unless the application configured logging: see `oxcache.logs`.
logger = logging.getLogger(LOGGER_NAME)

DEFAULT_RESPONSE_HEADER = "X-FastAPI-Cache"


class Cache(Lifecycle):
    """A cache store: where entries live and how responses are keyed and marked.

    `Cache()` runs on an in-process `MemoryBackend`; `Cache(url="redis://...")` on Redis
    (`client=` takes a `redis.asyncio.Redis` you made; `backend=` any `Backend`). On Redis
    Cluster: `Cache(url="redis://node:7000", cluster=True)`, a `redis+cluster://node:7000`
    URL, or `client=` a `redis.asyncio.cluster.RedisCluster`. On Redis Sentinel:
    `Cache(sentinel=[("host", 26379)], service_name="mymaster")` or a
    `redis+sentinel://host:26379/mymaster` URL. Enter it with
    `FastAPI(lifespan=store.lifespan)` or `async with store:`; an entered store becomes the
    default for `@cache` endpoints that name no `store=`.

    Storage failures never fail a request: reads become misses and writes are skipped, the
    outage is logged once (CONNECT_FAIL) and its end once, and after a failure the store
    leaves the backend alone for `retry_after` seconds before trying again.

    Args:
        url: Redis URL; None for the in-memory backend. `redis+cluster://` names a node of
            a Redis Cluster, `redis+sentinel://host:port[,host:port]/service[/db]` the
            Sentinels of a master.
        cluster: `url` is a node of a Redis Cluster (as the `redis+cluster://` scheme says).
        sentinel: `(host, port)` of the Sentinels that watch `service_name`'s master.
        service_name: The master's name in the Sentinels' configuration.
        prefix: Prepended to every key as `prefix:`; `clear()` deletes only keys under it
            (on Redis, a store without a prefix refuses to `clear()`).
        response_header: The header saying `Hit` or `Miss`.
        ignore_arg_types: Types of endpoint arguments left out of keys (subclasses too, and
            through `Optional[...]` and `Annotated[...]`), such as `sqlalchemy.orm.Session`.
            Request, Response, WebSocket and BackgroundTasks are always left out.
        strong_etag: Send `"tag"` instead of `W/"tag"`. Only safe when nothing between the
            app and the client re-encodes bodies (GZipMiddleware does).
        timeout: Seconds any single Redis command or connection attempt may take (50 ms by
            default: a hit on a healthy Redis on the same network takes well under 1 ms).
        retry_after: Seconds to leave the backend alone after a failure (the circuit
            breaker); the first request after that tries again.
        on_error: "open" (the default) serves requests uncached when storage fails;
            "raise" raises `CacheUnavailable` instead, for apps that would rather fail.
        lock_timeout: Seconds; when positive, a miss on Redis takes a short lock
            (`SET NX PX`) so that one worker in the whole deployment runs the endpoint while
            the others wait for its entry (at most this long, then they run it themselves:
            a lock whose holder died only costs one timeout). 0 (the default) coalesces
            concurrent misses within each process only.
        refresh_on_no_cache: The default of `@cache(refresh_on_no_cache=...)`: a request
            with `Cache-Control: no-cache` refreshes the entry instead of bypassing it.
        max_entries: Bound of the in-memory backend: how many entries it keeps.
        max_bytes: Bound of the in-memory backend: the sum of its values' sizes.
        near: A `NearCache`: an in-process L1 in front of Redis, kept coherent across
            workers (see docs/near-cache.md). Redis backends only: the memory backend is
            already in process.
        compress_over: When set, entries of at least this many bytes are stored LZ4-compressed
            (when that makes them smaller); None (the default) stores every entry as is.
            Reading compressed entries needs no setting (an oxcache without compression
            reads them as misses).
        per_host: Whether every key holds the request's origin: its scheme, Host header and
            root path, from the ASGI scope after proxy middleware (True, the default: a
            response is never served to a request made to another host or scheme). False
            shares entries between the names an app is served under, for apps that answer
            the same under all of them and never read the host or scheme.
        cache_status: The cache's name in the `Cache-Status` header (RFC 9211) sent with
            every response of a cached endpoint ("oxcache"); None sends no such header.
        enabled: False turns caching off (tests, development): see `disabled()`; entering
            such a store does not check the backend. `store.enabled` may change any time.
        observers: `Observer`s told of every request of its endpoints and every storage
            failure (metrics, traces: docs/observability.md); `store.observers` is the list.
        answer_early: Whether the hits of `@cache` endpoints on plain `APIRoute` routes are
            answered before FastAPI solves their parameters and dependencies, as with
            `CachedRoute` (True, the default): each route is rebuilt that way at its first
            request. False leaves plain routes to FastAPI's handler on every request; read
            when a route serves its first request.
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
        cluster: bool = False,
        sentinel: Sequence[tuple[str, int]] | None = None,
        service_name: str | None = None,
        strong_etag: bool = False,
        timeout: float = 0.05,
        retry_after: float = 0.5,
        on_error: str = "open",
        lock_timeout: float = 0.0,
        refresh_on_no_cache: bool = False,
        max_entries: int = 10_000,
        max_bytes: int = 64 * 1024 * 1024,
        near: NearCache | None = None,
        compress_over: int | None = None,
        per_host: bool = True,
        cache_status: str | None = "oxcache",
        enabled: bool = True,
        observers: Iterable[Observer] = (),
        answer_early: bool = True,
    ) -> None:
        check_store_options(
            sources=(url, backend, client, sentinel),
            sentinel=sentinel,
            service_name=service_name,
            cluster=cluster,
            url=url,
            timeout=timeout,
            retry_after=retry_after,
            lock_timeout=lock_timeout,
            on_error=on_error,
            compress_over=compress_over,
            cache_status=cache_status,
        )
        if backend is None:
            backend = backend_for(
                url,
                client,
                cluster=cluster,
                sentinel=sentinel,
                service_name=service_name,
                timeout=timeout,
                max_entries=max_entries,
                max_bytes=max_bytes,
            )
        if near is not None:
            near.attach(self, backend)
        self.near = near
        self.backend = backend
        self.url = url
        self.prefix = prefix or ""
        self.response_header = response_header or DEFAULT_RESPONSE_HEADER
        self.hit_header = self.response_header.lower().encode("latin-1")
        #: The cache's name in Cache-Status headers, or None to send none.
        self.status_name = None if cache_status is None else cache_status.encode("ascii")
        self.ignore_arg_types: tuple[type[Any], ...] = tuple(ignore_arg_types or ())
        self.per_host = per_host
        #: Where this store's keys, indexes and locks are (`KeySpace`).
        self.keyspace = KeySpace(self.prefix, self.ignore_arg_types, per_host)
        self.strong_etag = strong_etag
        self.retry_after = retry_after
        self.on_error = on_error
        self.lock_ms = int(lock_timeout * 1000)
        self.refresh_on_no_cache = refresh_on_no_cache
        self.compress_over = compress_over
        #: Whether requests and `@cached` calls use the cache (see `disabled()`).
        self.enabled = enabled
        #: Whether plain `APIRoute` routes answer hits early (see `oxcache.route.adopt`).
        self.answer_early = answer_early
        self.counters = Stats()
        #: Told of each request and storage failure (`oxcache.observe`); empty: nobody.
        self.observers = Observers(observers)
        self.health = Health(
            describe(backend, url), retry_after, on_error, self.counters, self.observers
        )
        self.invalidations = Invalidations(backend, self.health, near, self.keyspace)
        #: Reading and writing entries under the rules above (what the request path uses).
        self.entries = Entries(backend, self.health, self.invalidations, near, compress_over)
        #: The endpoint runs in progress (single flight, refreshes, the cross-worker lock).
        self.flights = Flights(backend, self.health, self.keyspace, self.lock_ms)

    def __repr__(self) -> str:
        return f"Cache(backend={type(self.backend).__name__}, prefix={self.prefix!r})"

    def stats(self) -> dict[str, int]:
        """Counters since the store was made: `hits` (including 304s and requests served
        by a concurrent miss's run, also counted as `coalesced`), `misses` (endpoint runs
        for cacheable requests), `stale` (stale-while-revalidate and stale-if-error
        serves), `bypasses` (requests the cache stayed out of: no-cache, credentials,
        unkeyable arguments), `errors` (storage failures), `bytes_read`, `bytes_written`,
        `l1_hits` (reads the near cache answered without Redis), `pending_invalidations`
        (queued because storage could not be reached, not landed yet). With a near cache,
        also `l1_entries` and `l1_bytes` (held now) and `l1_flushes` (times it was
        emptied)."""
        found = {name: getattr(self.counters, name) for name in Stats.__slots__}
        found["pending_invalidations"] = len(self.invalidations.pending)
        near = self.near
        if near is not None:
            found.update(l1_entries=len(near), l1_bytes=near.size_bytes, l1_flushes=near.flushes)
        return found

    def warn_once(self, tag: str, message: str, *args: Any) -> bool:
        """Log a warning once per `tag` for the life of this store; True when it logged."""
        return self.health.warn_once(tag, message, *args)

    # -- entries (the request path uses `store.entries` directly) ------------------------

    async def read(self, key: str, generations: tuple[str, ...] | None = None) -> Entry | None:
        """The decoded entry under `key`, or None when absent, unreadable or unreachable;
        with `generations`, also when not built under their current tokens (as a request
        reads it; see `Entries.read`)."""
        return await self.entries.read(key, generations)

    async def read_head(
        self, key: str, generations: tuple[str, ...] | None = None
    ) -> EntryHead | Entry | None:
        """The head of the entry under `key` (ETag, times), without its body."""
        return await self.entries.read_head(key, generations)

    async def write(
        self,
        key: str,
        data: bytes,
        ttl_ms: int,
        indexes: Sequence[str] = (),
        compress_over: int | StoreSetting | None = STORE_SETTING,
    ) -> bool:
        """Store an encoded entry (see `Entries.write`); False when the backend cannot."""
        return await self.entries.write(key, data, ttl_ms, indexes, compress_over)

    def lock_name(self, key: str) -> str:
        """The lock a miss of `key` takes when `lock_timeout` is set."""
        return self.keyspace.lock_name(key)

    # -- keys and invalidation -----------------------------------------------------------

    def key_for(
        self, endpoint: Callable[..., Any], origin: str | None = None, /, **args: Any
    ) -> str:
        """The key `@cache` gives `endpoint` called with `args` (defaults filled in): from
        `origin` (`"https://example.com"`: scheme, Host, root path) on a `per_host` store;
        without one, the base key (the arguments alone: the key on a `per_host=False`
        store, and the name its variants are listed under, see docs/http.md)."""
        return keyed(endpoint).key_for_call(self.keyspace, args, origin)

    def user_index(self, user_id: UserId) -> str:
        """The index listing every entry cached for `user_id` (as `per_user` returned it)."""
        return self.keyspace.user_index(user_id)

    def tag_index(self, tag: str) -> str:
        """The index listing every entry cached with `tag`."""
        return self.keyspace.tag_index(tag)

    def variants_index(self, key: str) -> str:
        """The index listing the variants of the base key `key` (`key_for` without origin):
        its entries for each origin, user, varying header value and undeclared query."""
        return self.keyspace.variants_index(key)

    async def invalidate(self, endpoint: Callable[..., Any], /, **args: Any) -> Invalidated:
        """Delete the entries that `endpoint` called with `args` produced, for every origin
        (host and scheme), every user, every varying header value, every undeclared query
        and every value of its dependency parameters (defaults are filled in as FastAPI
        would; dependencies need not be given). Returns how many entries were deleted, an
        `Invalidated` whose `landed` is False when storage could not be reached (it is then
        retried in the background until it lands; see `wait_invalidations`)."""
        indexes, keys = keyed(endpoint).invalidation(self.keyspace, args)
        return await self.invalidations.run(indexes, keys)

    async def invalidate_user(self, user_id: UserId) -> Invalidated:
        """Delete every entry cached for one user (for example at logout). `user_id` is what
        the endpoints' `per_user` dependency returns; `42` and `"42"` are the same user."""
        return await self.invalidations.run([self.user_index(user_id)], [])

    async def invalidate_tag(self, tag: str) -> Invalidated:
        """Delete every entry cached with `tag` (as formatted from `@cache(tags=[...])`)."""
        return await self.invalidations.run([self.tag_index(tag)], [])

    async def delete(self, keys: Sequence[str]) -> Invalidated:
        """Delete entries by key."""
        return await self.invalidations.run([], list(keys))

    async def clear(self) -> Invalidated:
        """Delete every key under this store's prefix (entries and indexes); returns how
        many were deleted. Uses SCAN and UNLINK on Redis, never KEYS. On Redis, a store
        without a prefix refuses (`ConfigError`): clearing would delete other programs'
        keys in the same database too. The in-memory store holds only its own entries."""
        return await self.invalidations.clear()

    async def wait_invalidations(self, timeout: float | None = None) -> bool:
        """Wait until every invalidation this store was asked for has landed: True at
        once when none is queued, False when some still have not after `timeout` seconds
        (None: wait as long as it takes). Queued ones are retried in the background."""
        return await self.invalidations.wait(timeout)


_fallback_store: Cache | None = None


def default_store() -> Cache:
    """The store `@cache` uses when given none: the one configured by
    `FastApiRedisCache().init(...)` or last entered, else a process-wide in-memory store."""
    global _fallback_store
    configured: Cache | None = current_default()
    if configured is not None:
        return configured
    if _fallback_store is None:
        _fallback_store = Cache()
    return _fallback_store
