"""The small async interface every storage backend implements."""

from __future__ import annotations

import abc
from collections.abc import Sequence

__all__ = ["Backend"]


class Backend(abc.ABC):
    """Where entries live. Only backends talk to storage; values are opaque bytes to them.

    Every method may raise on a storage failure; the store turns failures into misses
    (fail open), so a backend never needs to swallow errors itself.
    """

    #: Whether `close()` should run when the owning store shuts down.
    owns_connection: bool = True

    #: Whether other programs may keep keys in the same storage (a Redis database does);
    #: a store never clears such a backend without a prefix.
    shared: bool = True

    @abc.abstractmethod
    async def get(self, key: str) -> bytes | None:
        """Return the value stored under `key`, or None."""

    @abc.abstractmethod
    async def get_head(self, key: str, size: int) -> bytes | None:
        """Return at most the first `size` bytes of the value under `key`, or None."""

    @abc.abstractmethod
    async def set(self, key: str, value: bytes, ttl_ms: int, indexes: Sequence[str] = ()) -> None:
        """Store `value` under `key` for `ttl_ms` milliseconds (at least 1), and record `key`
        in each index of `indexes` (a user's entries, a tag's, an endpoint's variants).

        An index lives as long as its longest-lived entry and lists only entries that have
        not expired yet, so it never grows beyond the entries it points to.
        """

    @abc.abstractmethod
    async def invalidate(self, indexes: Sequence[str], keys: Sequence[str] = ()) -> int:
        """Delete every entry recorded in `indexes`, the indexes themselves, and `keys`;
        return how many entries existed. One round trip where the storage allows it."""

    @abc.abstractmethod
    async def delete(self, keys: Sequence[str]) -> int:
        """Delete the given keys; return how many existed."""

    @abc.abstractmethod
    async def clear(self, prefix: str) -> int:
        """Delete every key that starts with `prefix`; return how many were deleted."""

    @abc.abstractmethod
    async def ping(self) -> None:
        """Raise if the storage cannot be reached."""

    async def acquire(self, name: str, token: bytes, ttl_ms: int) -> bool:
        """Take the lock `name` for `ttl_ms` unless someone holds it; True if taken.
        Backends shared by several processes override this; the default always grants."""
        return True

    async def release(self, name: str, token: bytes) -> None:  # noqa: B027 - optional
        """Release the lock `name` if `token` still holds it."""

    async def close(self) -> None:  # noqa: B027 - optional hook, nothing to do by default
        """Release connections. Called once when the owning store shuts down."""
