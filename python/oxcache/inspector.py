"""What one store keeps in a Redis database, as the `oxcache` tool shows it: which keys are
its entries and which its indexes (the store's `KeySpace`), what an entry holds (decoded by
the Rust core, plain or compressed), which keys belong to caches under other prefixes or to
other programs, and the plan of a purge: the keys it deletes, which `--dry-run` prints and
the purge itself carries out. Redis is reached through a `RedisDatabase` only."""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any, NamedTuple

from oxcache._core import (
    ENTRY_VERSION,
    STORED_HEAD_SIZE,
    Entry,
    EntryError,
    decode_stored,
    peek_stored,
)
from oxcache.backends.inspect import RedisDatabase
from oxcache.errors import OxcacheError
from oxcache.keys import KeySpace

__all__ = ["HEAD_SIZE", "InspectError", "Inspector", "Plan", "decode", "prefix_of", "readable"]

#: How much of a value `stats` reads to tell an entry (plain or compressed) from another.
HEAD_SIZE = STORED_HEAD_SIZE

# An index, a generation or a lock: `prefix:@kind:...` (or `@kind:...` without a prefix);
# the prefix ends at the first `:@kind:`. An entry: `prefix:module.function(arguments)`;
# module and function names hold no `:` or `(`, so the prefix ends at the last `:` before
# the first `(`.
_INDEX = re.compile(r"(?:([^(]*?):)?@(?:user|tag|variants|lock|gen):")
_ENTRY = re.compile(r"(?:([^(]*):)?[^:(@][^:(]*\(.*\)", re.DOTALL)


def prefix_of(key: str) -> str | None:
    """The prefix of a key shaped like an oxcache store's (`""` when it has none), or None
    for a key of another program (`session:abc`, `celery-task-meta-...`)."""
    found = _INDEX.match(key) or _ENTRY.fullmatch(key)
    return None if found is None else found.group(1) or ""


class InspectError(OxcacheError):
    """What the tool cannot show: a missing key, a value that is not an entry."""


class Plan(NamedTuple):
    """The keys a purge deletes: entries, and the index keys that go with them."""

    entries: list[str]
    indexes: list[str]
    #: `--all`: every key under the prefix, deleted key by key (as `store.clear()` does);
    #: otherwise through the store's invalidation script (indexes with their members).
    everything: bool = False


def decode(name: str, data: bytes) -> Entry:
    """The entry the value `data` of key `name` holds; else an InspectError saying what it
    is."""
    try:
        return decode_stored(data)
    except EntryError as exc:
        version = data[3] if len(data) > 3 and data[:3] == b"OXC" else ENTRY_VERSION
        reason = f"not an oxcache entry ({exc})"
        if version != ENTRY_VERSION:
            reason = f"an entry of envelope version {version} (this oxcache reads {ENTRY_VERSION})"
        raise InspectError(
            f"{name}: {reason}; {len(data)} bytes, starting {data[:24]!r}. "
            "The cache reads it as a miss and overwrites it."
        ) from None


def readable(head: bytes | None) -> bool:
    """Whether a stored value's head (None: the value is not a string) starts an entry."""
    if head is None:
        return False
    try:
        peek_stored(head)
    except EntryError:
        return False
    return True


def _str(raw: bytes) -> str:
    return raw.decode("utf-8", "backslashreplace")


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).isoformat(timespec="seconds")


def _named(name: str, endpoint: str) -> bool:
    """Whether `module.function` is `endpoint` (given in full, or the function's name)."""
    return name == endpoint or name.endswith("." + endpoint)


class Inspector:
    """A store's keys on one Redis database (`db`), under `prefix` ("" for none).

    With a prefix, every key under it is the store's. Without one, the database may hold
    other programs' keys and caches under other prefixes: only keys shaped like an
    unprefixed store's count as the store's, and `others` counts the keys of other prefixes
    seen, so the tool can say which `--prefix` to pass."""

    def __init__(self, db: RedisDatabase, prefix: str) -> None:
        self.db = db
        self.prefix = prefix
        self.keys = KeySpace(prefix)
        self.start = self.keys.start
        #: Prefix -> keys of a cache under it, seen while reading without a prefix.
        self.others: Counter[str] = Counter()

    def owner(self, key: str) -> str | None:
        """`""` for a key of this store, the prefix of another store's key, None for a key
        of another program."""
        return "" if self.prefix else prefix_of(key)

    def is_index(self, key: str) -> bool:
        """Whether a key is an index (or lock), of this store or of another prefix's."""
        if self.owner(key):
            return _INDEX.match(key) is not None
        return self.keys.kind(key) != "entry"

    def _ours(self, key: str) -> bool:
        owner = self.owner(key)
        if owner:
            self.others[owner] += 1
        return owner == ""

    def indexes(self, user: str | None, tag: str | None) -> list[str]:
        """The indexes of `user` and of `tag`, of those given."""
        found = []
        if user is not None:
            found.append(self.keys.user_index(user))
        if tag is not None:
            found.append(self.keys.tag_index(tag))
        return found

    async def entry_keys(self, endpoint: str | None = None) -> list[str]:
        """Entry keys of the store, of one endpoint (`module.function`, or just the
        function's name) when given."""
        found = set()
        async for key in self.db.scan(self.start, f"{endpoint}(" if endpoint else ""):
            if not self._ours(key) or self.is_index(key):
                continue
            if endpoint and not _named(self.keys.endpoint(key), endpoint):
                continue
            found.add(key)
        return sorted(found)

    async def variants_indexes(self, endpoint: str) -> list[str]:
        """The variants indexes of one endpoint's entries (per user, `vary`, dependency)."""
        start = self.keys.index("variants", "")
        found = set()
        async for key in self.db.scan(start, f"{endpoint}("):
            if self._ours(key) and _named(key[len(start) :].partition("(")[0], endpoint):
                found.add(key)
        return sorted(found)

    async def user_keys(self, user: str) -> list[str]:
        """Entries cached for one user (as the `per_user` dependency returned the id)."""
        return await self.db.live_members(self.keys.user_index(user))

    async def tag_keys(self, tag: str) -> list[str]:
        """Entries cached with one tag."""
        return await self.db.live_members(self.keys.tag_index(tag))

    async def stats(self) -> dict[str, Any]:
        """Counts and sizes of the store's keys, and of the keys that are not its own."""
        entries = unreadable = foreign = entry_bytes = index_bytes = 0
        endpoints: dict[str, dict[str, int]] = {}
        kinds: Counter[str] = Counter()
        live: dict[str, dict[str, int]] = {"user": {}, "tag": {}}
        others: dict[str, dict[str, int]] = {}
        async for key, size, head, count in self.db.survey(self.start, self.is_index, HEAD_SIZE):
            owner = self.owner(key)
            if owner:  # another prefix's: an index, or an entry (not another program's)
                index = self.is_index(key)
                if index or readable(head):
                    tally = others.setdefault(owner, {"entries": 0, "indexes": 0})
                    tally["indexes" if index else "entries"] += 1
                    self.others[owner] += 1
                    continue
                owner = None
            if owner is None:
                foreign += 1
                continue
            kind = self.keys.kind(key)
            if kind != "entry":
                kinds[kind] += 1
                index_bytes += size
                if kind in live:
                    live[kind][key[len(self.start) + len(kind) + 2 :]] = count
            elif not readable(head):
                unreadable += 1  # another library's value, or an older envelope: a miss
            else:
                entries += 1
                entry_bytes += size
                tally = endpoints.setdefault(self.keys.endpoint(key), {"entries": 0, "bytes": 0})
                tally["entries"] += 1
                tally["bytes"] += size
        hits, misses = await self.db.server_hits()
        return {
            "prefix": self.prefix,
            "entries": entries,
            "entry_bytes": entry_bytes,
            "unreadable": unreadable,
            "indexes": dict(sorted(kinds.items())),
            "index_bytes": index_bytes,
            "endpoints": dict(sorted(endpoints.items())),
            "users": dict(sorted(live["user"].items())),
            "tags": dict(sorted(live["tag"].items())),
            "other_prefixes": dict(sorted(others.items())),
            "foreign": foreign,
            "server_keyspace_hits": hits,
            "server_keyspace_misses": misses,
            "server_hit_rate": round(hits / (hits + misses), 4) if hits + misses else None,
        }

    async def show(self, key: str) -> dict[str, Any]:
        """The decoded entry under `key` (tried as given, then under the prefix)."""
        found = await self.db.find(key, self.start)
        if found is None:
            raise InspectError(f"no such key: {key}")
        name, kind = found
        if kind != "string":
            what = self.keys.kind(name)
            note = f"an oxcache {what} index" if what != "entry" else "not an oxcache entry"
            raise InspectError(f"{name} is a Redis {kind} ({note}); `oxcache keys` lists entries")
        data, pttl = await self.db.read(name)
        entry = decode(name, data)
        now_ms = time.time_ns() // 1_000_000
        return {
            "key": name,
            "status": entry.status,
            "etag": entry.etag,
            "created": _iso(entry.created_ms),
            "expires": _iso(entry.expires_ms),
            "age_s": max(now_ms - entry.created_ms, 0) // 1000,
            "fresh_for_s": (entry.expires_ms - now_ms) // 1000,
            "redis_ttl_ms": pttl,
            "headers": [[_str(n), _str(v)] for n, v in entry.headers],
            "body_bytes": len(entry.body),
            "body": entry.body,
        }

    async def plan(
        self,
        keys: Sequence[str] = (),
        user: str | None = None,
        tag: str | None = None,
        endpoint: str | None = None,
        everything: bool = False,
    ) -> Plan:
        """What a purge of these deletes: `keys` (as given or under the prefix), the
        entries of `user`, of `tag`, of `endpoint` (with their variants indexes), or
        `everything` under the prefix."""
        if everything:
            found = {key async for key in self.db.scan(self.start) if self._ours(key)}
            index_keys = {key for key in found if self.is_index(key)}
            return Plan(sorted(found - index_keys), sorted(index_keys), everything=True)
        doomed: set[str] = set()
        for key in keys:
            existing = await self.db.find(key, self.start)
            if existing is not None:
                doomed.add(existing[0])
        if user is not None:
            doomed.update(await self.user_keys(user))
        if tag is not None:
            doomed.update(await self.tag_keys(tag))
        indexes = self.indexes(user, tag)
        if endpoint is not None:
            doomed.update(await self.entry_keys(endpoint))
            indexes += await self.variants_indexes(endpoint)
        return Plan(sorted(doomed), sorted(set(await self.db.existing(indexes))))

    async def execute(self, plan: Plan) -> tuple[int, int]:
        """Carry out `plan`; how many entries and index keys were deleted. `--all` deletes
        its keys one by one; the others go through the store's invalidation script, which
        reads each index and deletes its members with it in one step (so an entry listed
        meanwhile is deleted too, and never left out of an index that still exists)."""
        if plan.everything:
            return await self.db.delete(plan.entries), await self.db.delete(plan.indexes)
        return await self.db.invalidate(plan.indexes, plan.entries), len(plan.indexes)
