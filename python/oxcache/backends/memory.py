"""In-process backend: the embedded default when no Redis URL is given."""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence

from oxcache.backends.base import Backend

__all__ = ["MemoryBackend"]


class MemoryBackend(Backend):
    """A bounded LRU map with per-entry expiry, private to its instance.

    Bounded by `max_entries` and `max_bytes` (the sum of value sizes); the least recently
    used entries are evicted first, and expired entries are dropped when touched or evicted.
    A lock makes it safe when several event loops or threads share one instance (for example
    two `TestClient`s); no operation awaits while holding it.
    """

    #: Private to the store: `clear()` without a prefix deletes only the store's entries.
    shared = False
    local = True
    #: Its indexes are exact (an entry leaves them when it is evicted, and an index is never
    #: evicted on its own), so entries are read without their generations: a lease is listed
    #: under its generations instead, and invalidating them deletes it.
    reads_generations = False

    def __init__(self, *, max_entries: int = 10_000, max_bytes: int = 64 * 1024 * 1024) -> None:
        if max_entries < 1 or max_bytes < 1:
            raise ValueError("MemoryBackend bounds must be positive")
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        # key -> (value, monotonic deadline, the indexes that list the key)
        self._data: OrderedDict[str, tuple[bytes, float, tuple[str, ...]]] = OrderedDict()
        # index -> the keys it lists; a key leaves its indexes when it leaves `_data`, so an
        # index never holds more than the live entries it points to.
        self._indexes: dict[str, set[str]] = {}
        # generation -> its token. Forgetting one (past the bound) only costs misses.
        self._generations: dict[str, bytes] = {}
        # generation -> the keys a miss leased under it (whatever they hold now), and key ->
        # those generations; a key leaves both when it is written or leaves `_data`.
        self._leased: dict[str, set[str]] = {}
        self._lease_of: dict[str, tuple[str, ...]] = {}
        self._bytes = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._data)

    @property
    def size_bytes(self) -> int:
        """The sum of the stored values' sizes."""
        return self._bytes

    def _lookup(self, key: str) -> bytes | None:
        item = self._data.get(key)
        if item is None:
            return None
        value, deadline, _ = item
        if deadline <= time.monotonic():
            self._remove(key)
            return None
        self._data.move_to_end(key)
        return value

    def _unlease(self, key: str) -> None:
        for name in self._lease_of.pop(key, ()):
            keys = self._leased.get(name)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._leased[name]

    def _remove(self, key: str) -> bool:
        if key in self._lease_of:
            self._unlease(key)
        item = self._data.pop(key, None)
        if item is None:
            return False
        self._bytes -= len(item[0])
        for name in item[2]:
            members = self._indexes.get(name)
            if members is not None:
                members.discard(key)
                if not members:
                    del self._indexes[name]
        return True

    def index_size(self, name: str) -> int:
        """How many keys the index `name` lists (0 when it does not exist)."""
        with self._lock:
            return len(self._indexes.get(name, ()))

    async def get(self, key: str) -> bytes | None:
        with self._lock:
            return self._lookup(key)

    async def get_head(self, key: str, size: int) -> bytes | None:
        with self._lock:
            value = self._lookup(key)
        # Slicing copies; a memory entry is already local, so the whole value is as cheap.
        return value

    async def read(
        self, key: str, generations: Sequence[str], head: int = 0
    ) -> tuple[bytes | None, list[bytes | None]]:
        with self._lock:
            return self._lookup(key), list(map(self._generations.get, generations))

    async def lease(
        self, key: str, generations: Sequence[str], ttl_ms: int, claim: bytes, size: int
    ) -> tuple[bytes, list[bytes]]:
        with self._lock:
            held = self._lookup(key)
            if not held:
                held = claim
                self._store(key, claim, ttl_ms, ())
            if generations and key in self._data:
                self._unlease(key)
                self._lease_of[key] = tuple(generations)
                for name in generations:
                    self._leased.setdefault(name, set()).add(key)
            known = self._generations
            if len(known) > 4 * self.max_entries:
                known.clear()
            return held[:size], [known.setdefault(name, os.urandom(16)) for name in generations]

    async def set(
        self,
        key: str,
        value: bytes,
        ttl_ms: int,
        indexes: Sequence[str] = (),
        expect: bytes | None = None,
    ) -> bool:
        with self._lock:
            if expect is not None:
                held = self._lookup(key)
                if held is None or held[: len(expect)] != expect:
                    return False
            self._store(key, value, ttl_ms, indexes)  # listed in its indexes from now on
            return True

    def _store(self, key: str, value: bytes, ttl_ms: int, indexes: Sequence[str]) -> None:
        if len(value) > self.max_bytes:
            return  # could never fit; storing it would only evict everything else
        deadline = time.monotonic() + max(ttl_ms, 1) / 1000.0
        names = tuple(indexes)
        self._remove(key)
        self._data[key] = (value, deadline, names)
        self._bytes += len(value)
        for name in names:
            self._indexes.setdefault(name, set()).add(key)
        while len(self._data) > self.max_entries or self._bytes > self.max_bytes:
            oldest = next(iter(self._data))
            self._remove(oldest)

    async def delete(self, keys: Sequence[str]) -> int:
        with self._lock:
            return sum(1 for key in keys if self._remove(key))

    async def invalidate(
        self, indexes: Sequence[str], keys: Sequence[str] = (), generations: Sequence[str] = ()
    ) -> int:
        with self._lock:
            leased: set[str] = set()
            for name in generations:
                self._generations.pop(name, None)
                leased.update(self._leased.get(name, ()))
            doomed = set(keys)
            for name in indexes:
                doomed.update(self._indexes.pop(name, ()))
            for key in leased - doomed:
                self._remove(key)  # a miss in flight: its write will find nothing to replace
            return sum(1 for key in doomed if self._remove(key))

    async def clear(self, prefix: str) -> int:
        with self._lock:
            doomed = [key for key in self._data if key.startswith(prefix)]
            for key in doomed:
                self._remove(key)
            for name in [n for n in self._indexes if n.startswith(prefix)]:
                del self._indexes[name]
            for name in [n for n in self._generations if n.startswith(prefix)]:
                del self._generations[name]
            return len(doomed)

    async def ping(self) -> None:
        return None
