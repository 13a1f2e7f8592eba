"""Reading and writing entries under the store's rules: nothing is read while the circuit is
open or invalidations are queued (they replay first), a failure is a miss or a skipped write
(never an error, unless `on_error="raise"`), values are decoded and encoded by the Rust core
in either stored form (plain or LZ4-compressed), and the near cache's L1 is consulted first
and kept coherent."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Sequence
from typing import Any, Callable

from oxcache._core import (
    STORED_HEAD_SIZE,
    Entry,
    EntryError,
    EntryHead,
    decode_stored,
    pack_entry,
    peek_stored,
)
from oxcache.backends.base import Backend
from oxcache.coalesce import SharedReads
from oxcache.health import Health
from oxcache.invalidation import Invalidations
from oxcache.near import NearCache
from oxcache.options import STORE_SETTING, StoreSetting

__all__ = ["Entries"]

logger = logging.getLogger("oxcache")


class Entries:
    """The entries of one store (`store.entries`): what the request path reads and writes.
    `compress_over` is the store's own threshold (None: never compress)."""

    __slots__ = ("backend", "compress_over", "health", "invalidations", "near", "shared")

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

    async def _fetch(self, get: Callable[..., Awaitable[bytes | None]], *args: Any) -> bytes | None:
        """Run one backend read under the store's rules: skipped while the circuit is open,
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

    async def read(self, key: str) -> Entry | None:
        """The decoded entry under `key`, or None when absent, unreadable or unreachable;
        concurrent reads of `key` share one (see `oxcache.coalesce`)."""
        return await self.shared.read(key, self.read_alone)

    async def read_alone(self, key: str) -> Entry | None:
        """`read`, not shared with concurrent reads of `key`."""
        near = self.near
        token = None
        if near is not None and not self.invalidations.pending:
            held = near.get(key)
            if held is not None:
                self.health.counters.l1_hits += 1
                return held
            token = near.begin(key)
        data = await self._fetch(self.backend.get, key)
        if data is None:
            if near is not None and token is not None:
                near.end(key, token)
            return None
        self.health.counters.bytes_read += len(data)
        try:
            entry = decode_stored(data)
        except EntryError as exc:
            if near is not None and token is not None:
                near.end(key, token)
            self.health.warn_once(
                "corrupt:" + key,
                "ignoring an unreadable value under %s (%s); it will be overwritten",
                key,
                exc,
            )
            return None
        if near is not None and token is not None:
            near.put(key, entry, len(data), token)
        return entry

    async def read_head(self, key: str) -> EntryHead | Entry | None:
        """The fixed-size head of the entry under `key` (ETag, times), without its body.
        With a near cache in use, the whole entry (from the L1, or read into it)."""
        if self.near is not None and self.near.ready:
            return await self.read(key)
        # Enough bytes for the head of either stored form (plain, or compressed).
        data = await self._fetch(self.backend.get_head, key, STORED_HEAD_SIZE)
        if data is None:
            return None
        try:
            return peek_stored(data)
        except EntryError:
            return None

    async def write(
        self,
        key: str,
        data: bytes,
        ttl_ms: int,
        indexes: Sequence[str] = (),
        compress_over: int | StoreSetting | None = STORE_SETTING,
    ) -> bool:
        """Store an encoded entry, listed in `indexes`; LZ4-compressed from `compress_over`
        bytes on (by default the store's setting; None: never). Logs KEY_ADDED_TO_CACHE, or
        FAILED_TO_CACHE_KEY and returns False when the backend cannot take it."""
        if not self.health.available():
            logger.info("FAILED_TO_CACHE_KEY: key=%s (store unavailable)", key)
            return False
        threshold = self.compress_over if compress_over is STORE_SETTING else compress_over
        if threshold is not None and len(data) >= threshold:
            data = pack_entry(data)
        near = self.near
        try:
            await self.backend.set(key, data, ttl_ms, indexes)
        except Exception as exc:
            if near is not None:
                near.discard(key)
            self.health.failed(exc)
            logger.info("FAILED_TO_CACHE_KEY: key=%s (%s)", key, type(exc).__name__)
            return False
        if near is not None:
            near.discard(key)  # the others hear of it from Redis
        self.shared.forget(key)  # later reads see this write
        if not self.health.healthy:
            self.health.succeeded()
        self.health.counters.bytes_written += len(data)
        logger.info("KEY_ADDED_TO_CACHE: key=%s", key)
        return True
