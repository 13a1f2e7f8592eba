"""Reading and writing entries under the store's rules: nothing is read while the circuit is
open or invalidations are queued (they replay first), a failure is a miss or a skipped write
(never an error, unless `on_error="raise"`), values are decoded and encoded by the Rust core
in either stored form (plain or LZ4-compressed), and the near cache's L1 is consulted first
and kept coherent.

An entry listed in indexes (its user, its variants, its tags) is read together with the
tokens of their generations, in the same round trip, and is a hit only when it was built
under exactly those tokens: an invalidation deletes them, so it holds even where Redis
evicted an index, and a token that is gone is a miss.

A miss takes its `Lease` before it runs the endpoint (memcache's leases, NSDI 2013): the
tokens (created where missing), which stamp what it stores, and what the entry's key holds
(a lease value put there when it held nothing); its write lands only while the key still
holds that. An invalidation that deletes the key takes the lease with it, so a miss that
read its data before an invalidation never stores it after."""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Sequence
from typing import Any, Callable, TypeVar, cast

from oxcache._core import (
    STORED_HEAD_SIZE,
    Entry,
    EntryError,
    EntryHead,
    decode_stored,
    generation_stamp,
    is_lease,
    lease_value,
    pack_entry,
    peek_stored,
)
from oxcache.backends.base import Backend
from oxcache.coalesce import SharedReads
from oxcache.health import Health
from oxcache.invalidation import Invalidations
from oxcache.near import NearCache
from oxcache.options import STORE_SETTING, StoreSetting

__all__ = ["GENERATION_MIN_TTL_MS", "Entries", "Lease"]

logger = logging.getLogger("oxcache")

T = TypeVar("T")

#: A generation token lives at least this long (and at least as long as the entry whose miss
#: made it); it is never extended, since every change of it empties near caches of what was
#: read under it. One that expired costs misses, never a stale hit.
GENERATION_MIN_TTL_MS = 3_600_000
_UNCHECKED = "\x00unchecked"


class Lease:
    """What a miss builds its entry on, taken before it reads its data: the `stamp` of the
    tokens its indexes' generations had, and what its key held (`held`: the first bytes of
    an entry there, or a lease value, `placed` when this miss put it there). Two requests
    with equal `basis` read their data under the same invalidations."""

    __slots__ = ("held", "placed", "stamp")

    def __init__(self, held: bytes, stamp: int, placed: bool) -> None:
        self.held = held
        self.stamp = stamp
        self.placed = placed

    @property
    def basis(self) -> tuple[bytes, int]:
        """What two runs that read under the same invalidations have in common."""
        return self.held, self.stamp

    @property
    def mark(self) -> bytes:
        """`basis` as bytes, to compare across workers (it follows the miss lock's token)."""
        return b"%d:%s" % (self.stamp, self.held)


class Entries:
    """The entries of one store (`store.entries`): what the request path reads and writes.
    `compress_over` is the store's own threshold (None: never compress)."""

    __slots__ = (
        "backend",
        "compress_over",
        "generational",
        "health",
        "invalidations",
        "local",
        "near",
        "shared",
    )

    def __init__(
        self,
        backend: Backend,
        health: Health,
        invalidations: Invalidations,
        near: NearCache | None,
        compress_over: int | None,
    ) -> None:
        self.backend = backend
        self.health = health
        self.invalidations = invalidations
        self.near = near
        self.compress_over = compress_over
        #: The reads in progress, which concurrent reads of the same key join.
        self.shared = SharedReads(invalidations)
        #: Whether entries are read with (and stamped by) their generations' tokens.
        self.generational = backend.reads_generations
        #: Whether reads are answered in process (no read is worth sharing).
        self.local = backend.local

    async def _fetch(self, get: Callable[..., Awaitable[T]], *args: Any) -> T | None:
        """Run one backend call under the store's rules: skipped while the circuit is open,
        after any queued invalidations, and a failure is a miss (or raises, see `on_error`)."""
        health = self.health
        if not health.available():
            return None
        if self.invalidations.pending and not await self.invalidations.replay():
            return None
        try:
            data = await get(*args)
        except Exception as exc:
            health.failed(exc)
            return None
        if not health.healthy:
            health.succeeded()
        return data

    async def read(self, key: str, generations: tuple[str, ...] | None = ()) -> Entry | None:
        """The decoded entry under `key`, or None when absent, unreadable, unreachable, or
        not built under the current tokens of `generations` (those of its indexes);
        concurrent reads of `key` share one (see `oxcache.coalesce`). None for
        `generations`: whatever it was built under (to look at an entry; the request path
        never reads so), shared only with other such reads, and kept in the near cache only
        if it belongs to no index."""
        near = self.near
        if near is not None and not self.invalidations.pending:
            held = near.get(key)  # an L1 hit does no I/O: nothing to share
            if held is not None:
                self.health.counters.l1_hits += 1
                return held
        if generations is None:
            # `_UNCHECKED` never ends a key (a key's text holds no control character).
            return await self.shared.read(key + _UNCHECKED, self._read_unchecked, key)
        if self.local:
            return await self.read_alone(key, generations)
        # A key's generations follow from the key (`CachedEndpoint.generations`): the
        # reads of one key that share a read ask for the same ones.
        return await self.shared.read(key, self.read_alone, generations)

    async def _read_unchecked(self, _: str, key: str) -> Entry | None:
        return await self.read_alone(key, None)

    async def read_alone(self, key: str, generations: tuple[str, ...] | None = ()) -> Entry | None:
        """`read` from the backend, not shared with concurrent reads of `key` (`read` has
        looked in the near cache already, with nothing awaited since)."""
        names = (generations or ()) if self.generational else ()
        near = self.near
        token = None
        if near is not None and not self.invalidations.pending:
            token = near.begin(key, names)
        tokens: Sequence[bytes | None] = ()
        stamp: int | None = 0  # what the entry must record: the stamp of `tokens`
        if names:
            found = await self._fetch(self.backend.read, key, names)
            data, tokens = found if found is not None else (None, ())
            if data is not None:
                stamp = generation_stamp(tokens)
        else:
            data = await self._fetch(self.backend.get, key)
        entry = None
        if data is not None:
            self.health.counters.bytes_read += len(data)
            try:
                entry = decode_stored(data)
            except EntryError as exc:
                if not is_lease(data):  # a lease: a miss is filling it
                    self.health.warn_once(
                        "corrupt:" + key,
                        "ignoring an unreadable value under %s (%s); it will be overwritten",
                        key,
                        exc,
                    )
        if entry is None or entry.generations != stamp:
            if near is not None and token is not None:
                near.end(key, token, names)
            # Built under tokens an invalidation deleted (or that are gone): a miss.
            return entry if generations is None else None
        if near is not None and token is not None:
            assert data is not None
            read_under = tuple(zip(names, cast("list[bytes]", tokens), strict=True))
            near.put(key, entry, len(data), token, read_under)
        return entry

    async def read_head(
        self, key: str, generations: tuple[str, ...] | None = ()
    ) -> EntryHead | Entry | None:
        """The fixed-size head of the entry under `key` (ETag, times), without its body,
        under the same rules as `read`. With a near cache in use, the whole entry (from the
        L1, or read into it)."""
        if self.near is not None and self.near.ready and generations is not None:
            return await self.read(key, generations)
        if not self.generational and generations:
            generations = ()
        # Enough bytes for the head of either stored form (plain, or compressed).
        tokens: Sequence[bytes | None] = ()
        if generations:
            found = await self._fetch(self.backend.read, key, generations, STORED_HEAD_SIZE)
            data, tokens = found if found is not None else (None, ())
        else:
            data = await self._fetch(self.backend.get_head, key, STORED_HEAD_SIZE)
        if data is None:
            return None
        try:
            head = peek_stored(data)
        except EntryError:
            return None
        if generations is not None and head.generations != (
            generation_stamp(tokens) if generations else 0
        ):
            return None
        return head

    async def lease(self, key: str, generations: tuple[str, ...], ttl_ms: int) -> Lease | None:
        """Before a miss of `key` reads its data: its `Lease` (the tokens of `generations`,
        created where missing, and what `key` holds, a new lease value if nothing); None
        when storage cannot say (the miss then stores nothing)."""
        ttl = max(ttl_ms + 1000, GENERATION_MIN_TTL_MS)
        claim = lease_value(os.urandom(16))
        got = await self._fetch(self.backend.lease, key, generations, ttl, claim, STORED_HEAD_SIZE)
        if got is None:
            return None
        held, tokens = got
        stamp = (generation_stamp(tokens) or 0) if self.generational else 0
        return Lease(held, stamp, held == claim)

    async def write(
        self,
        key: str,
        data: bytes,
        ttl_ms: int,
        indexes: Sequence[str] = (),
        compress_over: int | StoreSetting | None = STORE_SETTING,
        lease: Lease | None = None,
    ) -> bool:
        """Store an encoded entry, listed in `indexes`; LZ4-compressed from `compress_over`
        bytes on (by default the store's setting; None: never); with `lease` (a miss's), only
        while the key still holds what the lease found there. Logs KEY_ADDED_TO_CACHE, or
        FAILED_TO_CACHE_KEY and returns False when the backend cannot take it or the lease
        was lost (an invalidation deleted the key meanwhile)."""
        if not self.health.available():
            logger.info("FAILED_TO_CACHE_KEY: key=%s (store unavailable)", key)
            return False
        threshold = self.compress_over if compress_over is STORE_SETTING else compress_over
        if threshold is not None and len(data) >= threshold:
            data = pack_entry(data)
        near = self.near
        try:
            if lease is None:
                done = await self.backend.set(key, data, ttl_ms, indexes)
            else:
                done = await self.backend.set(key, data, ttl_ms, indexes, lease.held)
        except Exception as exc:
            if near is not None:
                near.discard(key)
            self.health.failed(exc)
            logger.info("FAILED_TO_CACHE_KEY: key=%s (%s)", key, type(exc).__name__)
            return False
        if near is not None:
            near.discard(key)  # the others hear of it from Redis
        self.shared.forget(key)  # later reads see this write
        self.shared.forget(key + _UNCHECKED)
        if not self.health.healthy:
            self.health.succeeded()
        if done is False:
            logger.info("FAILED_TO_CACHE_KEY: key=%s (invalidated while it was computed)", key)
            return False
        self.health.counters.bytes_written += len(data)
        logger.info("KEY_ADDED_TO_CACHE: key=%s", key)
        return True
