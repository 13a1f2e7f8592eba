"""The small async interface every storage backend implements."""

from __future__ import annotations

import abc
import os
from collections.abc import Sequence

__all__ = ["Backend", "index_member", "listed_key", "member_key"]

_VARIANTS = "@variants:"
_RELATIVE = "\x01"  # keys hold no control character: a member starting so is relative


def index_member(index: str, key: str) -> str:
    """How the index `index` lists `key`. A variants index `<p>@variants:<base>` lists an
    entry key `<p><base without its ")"><parts>)` as `"\x01" + "<parts>)"` (the request's
    parts: origin, user, `vary` values): short enough for Redis to keep a small index as a
    listpack rather than a skiplist (members over `zset-max-listpack-value`, 64 bytes, turn a
    one-member index from about 170 into about 1,000 bytes). Any other member is the key."""
    start = index.find(_VARIANTS)
    if start < 0 or index.find(_VARIANTS, start + 1) >= 0 or not index.endswith(")"):
        return key  # not a variants index, or one whose name could be split two ways
    root = index[:start] + index[start + len(_VARIANTS) : -1]
    if not key.startswith(root):
        return key
    return _RELATIVE + key[len(root) :]


def member_key(index: str, member: str) -> str:
    """The entry key the member `member` of the index `index` stands for (`index_member`
    reversed)."""
    if not member.startswith(_RELATIVE):
        return member
    start = index.find(_VARIANTS)
    return index[:start] + index[start + len(_VARIANTS) : -1] + member[1:]


def listed_key(index: str, member: bytes) -> bytes:
    """`member_key` for a member as Redis returns it (a member that is not ours is kept as
    it is, whatever its bytes)."""
    if not member.startswith(b"\x01"):
        return member
    return member_key(index, member.decode()).encode()


class Backend(abc.ABC):
    """Where entries live. Only backends talk to storage; values are opaque bytes to them.

    Every method may raise on a storage failure; the store turns failures into misses
    (fail open), so a backend never needs to swallow errors itself.
    """

    #: Whether `close()` should run when the owning store shuts down.
    owns_connection: bool = True
    #: Whether entries are read with their generations' tokens (`read`): True where storage
    #: may lose an index while its entries live on (Redis evicts keys). A backend whose
    #: indexes are exact says False, and then lists each lease under its generations so that
    #: invalidating them deletes it (see `MemoryBackend`); its entries record no stamp.
    reads_generations: bool = True

    #: Whether other programs may keep keys in the same storage (a Redis database does);
    #: a store never clears such a backend without a prefix.
    shared: bool = True

    #: Whether reads are answered in process, without I/O: concurrent reads of a key then
    #: gain nothing by sharing one, and the store reads each on its own.
    local: bool = False

    @abc.abstractmethod
    async def get(self, key: str) -> bytes | None:
        """Return the value stored under `key`, or None."""

    @abc.abstractmethod
    async def get_head(self, key: str, size: int) -> bytes | None:
        """Return at most the first `size` bytes of the value under `key`, or None."""

    async def read(
        self, key: str, generations: Sequence[str], head: int = 0
    ) -> tuple[bytes | None, list[bytes | None]]:
        """The value under `key` (its first `head` bytes when `head` > 0, None for none)
        and the token of each generation in `generations` (None where there is none), read
        together: one round trip where the storage allows it. This default reads them one
        after the other."""
        value = await (self.get_head(key, head) if head else self.get(key))
        return value, [await self.get(name) for name in generations]

    async def lease(
        self, key: str, generations: Sequence[str], ttl_ms: int, claim: bytes, size: int
    ) -> tuple[bytes, list[bytes]]:
        """Before a miss runs the endpoint of `key`, what its write will be conditional on:
        the first `size` bytes under `key`, or `claim` stored there (for `ttl_ms`) when it
        holds nothing; and the token of each generation in `generations`, a new random one
        stored (for `ttl_ms`) where there is none, so that what the miss stores is stamped
        with tokens that existed before it read its data. A token is only ever created or
        deleted, never touched otherwise (a near cache hears of every change of it).

        This default is not atomic: backends shared by several processes override it."""
        held = await self.get_head(key, size)
        if not held:
            held = claim
            await self.set(key, claim, ttl_ms)
        tokens = []
        for name in generations:
            token = await self.get(name)
            if token is None:
                token = os.urandom(16)
                await self.set(name, token, ttl_ms)
            tokens.append(token)
        return held, tokens

    @abc.abstractmethod
    async def set(
        self,
        key: str,
        value: bytes,
        ttl_ms: int,
        indexes: Sequence[str] = (),
        expect: bytes | None = None,
    ) -> bool | None:
        """Store `value` under `key` for `ttl_ms` milliseconds (at least 1), and record `key`
        in each index of `indexes` (a user's entries, a tag's, an endpoint's variants); a
        Redis backend lists it as `index_member(index, key)`.
        With `expect` (what `lease` returned), only while the value under `key` still starts
        with it, atomically: return False when it did not (nothing written).

        An index lives as long as its longest-lived entry and lists only entries that have
        not expired yet, so it never grows beyond the entries it points to.
        """

    @abc.abstractmethod
    async def invalidate(
        self, indexes: Sequence[str], keys: Sequence[str] = (), generations: Sequence[str] = ()
    ) -> int:
        """Delete the tokens of `generations` (every entry built under them stops being
        read, wherever it is), every entry recorded in `indexes`, the indexes themselves,
        and `keys`; return how many entries were deleted. One round trip where the storage
        allows it."""

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
