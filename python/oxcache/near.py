"""The near cache: an in-process L1 of decoded entries in front of Redis, kept coherent
across workers by Redis's own client-side caching machinery (its Redis side is
`backends/tracking.py`, reached through `RedisBackend.track()`).

A `NearCache` holds decoded entries keyed by their Redis key, bounded by entry count, by
bytes (the sum of the entries' encoded sizes) and by `max_ttl`, how long an entry may be
served without asking Redis again. It is only used while its listener is subscribed: one
dedicated connection runs `CLIENT TRACKING ON REDIRECT <itself> BCAST PREFIX <prefix:>` and
`SUBSCRIBE __redis__:invalidate`, so Redis announces every change of every key under the
prefix (writes, deletes, invalidation scripts, expiry, FLUSHDB), whoever made it. When that
connection drops, or stops answering its heartbeat, the L1 is flushed and bypassed until it
is subscribed again. On a Redis Cluster there is one such connection per primary
(`backends/cluster_tracking.py`), and the L1 is used only while every one is subscribed.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import OrderedDict
from typing import TYPE_CHECKING

from oxcache._core import Entry
from oxcache.backends.redis import RedisBackend
from oxcache.errors import ConfigError

if TYPE_CHECKING:
    from oxcache.backends.tracking import Listener

__all__ = ["NearCache"]

logger = logging.getLogger("oxcache")

_MAX_READING = 4096


class NearCache:
    """An in-process L1 cache in front of a Redis store: `Cache(url=..., near=NearCache())`.

    A read answered by the L1 does no Redis I/O at all. Entries keep the absolute expiry of
    their envelope and are served at most `max_ttl` seconds after they were read from Redis.
    Every change Redis makes to a key under the store's prefix, by any worker or any other
    client, removes the key from every worker's L1 (Redis client tracking in broadcast mode):
    the coherence delay is one message on an open connection. The worker that invalidates
    waits for its own notifications before `invalidate*()` returns, so it never reads its
    own stale entry. While the tracking connection is down or not yet subscribed, the L1 is
    empty and every read goes to Redis. On a Redis Cluster, every primary has its tracking
    connection, the set of primaries is read again every `heartbeat` seconds (failovers,
    nodes joining or leaving), and the L1 is used only while all of them are subscribed.

    Args:
        max_entries: At most this many entries; the least recently used go first.
        max_bytes: At most this many bytes, counted as the entries' encoded sizes; an entry
            larger than this is never held.
        max_ttl: Seconds an entry may be served from the L1 before Redis is asked again,
            whatever the notifications say (the bound if a notification were ever lost).
        heartbeat: Seconds of silence after which the listener pings Redis; no answer within
            another `heartbeat` counts as a dropped connection (flush, bypass, reconnect).
            On a cluster, also how often the set of primaries is read again.
    """

    def __init__(
        self,
        *,
        max_entries: int = 10_000,
        max_bytes: int = 32 * 1024 * 1024,
        max_ttl: float = 10.0,
        heartbeat: float = 1.0,
    ) -> None:
        if max_entries < 1 or max_bytes < 1:
            raise ConfigError("NearCache bounds max_entries and max_bytes must be positive")
        if not (0 < max_ttl < math.inf) or not (0 < heartbeat < math.inf):
            raise ConfigError("NearCache max_ttl and heartbeat must be positive seconds")
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.max_ttl = float(max_ttl)
        self.heartbeat = float(heartbeat)
        # key -> (entry, encoded size, monotonic deadline: min(freshness end, read + max_ttl))
        self._data: OrderedDict[str, tuple[Entry, int, float]] = OrderedDict()
        # key -> the (generation, token) pairs a held entry was read under (entries of
        # indexed endpoints only), and generation -> the token last read from Redis: a
        # notification of a generation drops its token, and so every entry read under it.
        self._under: dict[str, tuple[tuple[str, bytes], ...]] = {}
        self._generations: dict[str, bytes] = {}
        self._bytes = 0
        # Reads from Redis in flight: key -> token. A notification for the key (or a flush)
        # removes the token, so a value read before a change can never be kept after it.
        self._reading: dict[str, object] = {}
        #: Whether the L1 is in use: the tracking connection is subscribed.
        self.ready = False
        self.flushes = 0
        self.notifications = 0
        self._owner: object | None = None
        self._tracker: Listener | None = None
        self._down_logged = False

    def __repr__(self) -> str:
        return (
            f"NearCache(max_entries={self.max_entries}, max_bytes={self.max_bytes}, "
            f"max_ttl={self.max_ttl}, ready={self.ready})"
        )

    def __len__(self) -> int:
        return len(self._data)

    @property
    def size_bytes(self) -> int:
        """The sum of the held entries' encoded sizes."""
        return self._bytes

    # -- the map -------------------------------------------------------------------------

    def get(self, key: str) -> Entry | None:
        """The entry held for `key` if it is still fresh, within `max_ttl`, and every
        generation it was read under still has the token it had, else None."""
        item = self._data.get(key)
        if item is None:
            return None
        if item[2] <= time.monotonic():
            self._remove(key)
            return None
        under = self._under.get(key)
        if under is not None:
            known = self._generations
            for name, token in under:
                if known.get(name) != token:
                    self._remove(key)
                    return None
        self._data.move_to_end(key)
        return item[0]

    def begin(self, key: str, generations: tuple[str, ...] = ()) -> object | None:
        """Note that `key` is about to be read from Redis (with the tokens of
        `generations`); the token `put` needs, or None when the L1 is not in use."""
        if not self.ready:
            return None
        if len(self._reading) >= _MAX_READING:
            self._reading.clear()  # forgotten reads only lose the chance to fill the L1
        token = object()
        self._reading[key] = token
        for name in generations:
            self._reading[name] = token
        return token

    def end(self, key: str, token: object, generations: tuple[str, ...] = ()) -> None:
        """Forget a read that found nothing to keep."""
        for name in (key, *generations):
            if self._reading.get(name) is token:
                del self._reading[name]

    def put(
        self,
        key: str,
        entry: Entry,
        size: int,
        token: object,
        generations: tuple[tuple[str, bytes], ...] = (),
    ) -> None:
        """Hold `entry`, read from Redis after `begin(key, ...)` gave `token`, together with
        the tokens its `generations` had, unless the key or one of them changed (or the L1
        was flushed) since."""
        reading = self._reading
        fresh = reading.get(key) is token
        for name, _ in generations:
            fresh = fresh and reading.get(name) is token
        self.end(key, token, tuple(name for name, _ in generations))
        if not fresh or not self.ready or size > self.max_bytes:
            return
        left_s = (entry.expires_ms - time.time_ns() // 1_000_000) / 1000.0
        if left_s <= 0:
            return  # stale entries are the store's business (stale-while-revalidate)
        if generations:
            if len(self._generations) >= 4 * self.max_entries:
                self._generations.clear()  # held entries read under them go too, on `get`
            self._generations.update(generations)
        self._remove(key)
        self._data[key] = (entry, size, time.monotonic() + min(left_s, self.max_ttl))
        if generations:
            self._under[key] = generations
        self._bytes += size
        while len(self._data) > self.max_entries or self._bytes > self.max_bytes:
            self._remove(next(iter(self._data)))

    def _remove(self, key: str) -> None:
        item = self._data.pop(key, None)
        if item is not None:
            self._bytes -= item[1]
            self._under.pop(key, None)

    def discard(self, key: str) -> None:
        """Drop `key` (an entry, or a generation and every entry read under it) and any
        read of it in flight."""
        self._remove(key)
        self._generations.pop(key, None)
        self._reading.pop(key, None)

    def flush(self) -> None:
        """Drop everything, and every read in flight."""
        self._data.clear()
        self._under.clear()
        self._generations.clear()
        self._reading.clear()
        self._bytes = 0
        self.flushes += 1

    # -- the listener (backends/tracking.py) ----------------------------------------------

    def attach(self, owner: object, backend: object) -> None:
        """Bind this near cache to the store that owns it (one store per near cache), whose
        backend must be Redis: one server, Sentinel or a cluster (`ConfigError` otherwise)."""
        if not isinstance(backend, RedisBackend):
            raise ConfigError(
                "near= needs a Redis store (url= or client=): the memory backend is "
                "already in process"
            )
        if self._owner is not None and self._owner is not owner:
            raise ConfigError("a NearCache belongs to one Cache; make one per store")
        self._owner = owner

    def start(self, backend: RedisBackend, prefix: str) -> None:
        """Start listening, on the running loop, for every change `backend`'s Redis (every
        primary of a cluster) makes to a key starting with `prefix` (no-op if it listens
        there already)."""
        if self._tracker is None:
            self._tracker = backend.track(
                prefix,
                heartbeat=self.heartbeat,
                on_subscribed=self._subscribed,
                on_changed=self._changed,
                on_lost=self._lost,
            )
        self._tracker.start()

    async def stop(self) -> None:
        """Stop the listener and empty the L1."""
        if self._tracker is not None:
            await self._tracker.stop()  # which ends in `_lost(None)`
        else:
            self._lost(None)

    async def wait_ready(self, timeout: float) -> bool:
        """Wait until the listener is subscribed (at most `timeout` seconds)."""
        deadline = time.monotonic() + timeout
        while not self.ready and time.monotonic() < deadline:
            if self._tracker is None:
                await asyncio.sleep(0.01)  # not started yet
            else:
                await self._tracker.wait(deadline - time.monotonic())
        return self.ready

    async def sync(self, timeout: float) -> None:
        """Return once every notification Redis sent before now has been applied, so this
        worker never reads what it just invalidated. Flushes the L1 when that cannot be
        shown within `timeout` seconds (or from another event loop)."""
        tracker = self._tracker
        if not self.ready or tracker is None:
            return  # not in use: nothing is held
        if not await tracker.sync(timeout):
            self.flush()

    def _subscribed(self) -> None:
        self.flush()
        self.ready = True
        if self._down_logged:
            self._down_logged = False
            logger.info("NEAR_CACHE_SUBSCRIBED: invalidations flow again; L1 in use.")

    def _changed(self, keys: list[str] | None) -> None:
        self.notifications += 1
        if keys is None:  # FLUSHDB, FLUSHALL: everything changed
            self.flush()
            return
        for key in keys:
            self.discard(key)

    def _lost(self, error: Exception | None) -> None:
        if error is not None and not self._down_logged:
            self._down_logged = True
            logger.warning(
                "NEAR_CACHE_UNSUBSCRIBED: the invalidation connection failed (%s: %s); "
                "the L1 is flushed and bypassed until it is back.",
                type(error).__name__,
                error,
            )
        self.ready = False
        self.flush()
