"""`oxcache`, the command-line tool: look inside a Redis cache and purge parts of it.

    oxcache [--url URL] [--prefix PREFIX] stats
    oxcache keys [--endpoint NAME | --user ID | --tag TAG]
    oxcache show KEY
    oxcache purge (--key KEY ... | --user ID | --tag TAG | --all) [--dry-run]

It reads the layout the store writes (see `Cache.user_index`, `Cache.tag_index` and
docs/formats.md): entries under `prefix:module.function(args)`, indexes under
`prefix:@user:<id>`, `prefix:@tag:<tag>` and `prefix:@variants:<key>`, miss locks under
`prefix:@lock:<key>`. It only ever uses SCAN, never KEYS, and deletes through the same
scripts as `store.invalidate_user`, `store.invalidate_tag`, `store.delete` and `store.clear`.
Errors (a wrong URL, an unreachable server, a missing key) are one line on stderr and a
non-zero exit status, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

from oxcache._core import (
    ENTRY_VERSION,
    STORED_HEAD_SIZE,
    Entry,
    EntryError,
    decode_stored,
    peek_stored,
)
from oxcache.backends.connect import redact
from oxcache.backends.inspect import CredentialsRefused, RedisDatabase, RedisUnavailable
from oxcache.errors import CacheUnavailable, ConfigError
from oxcache.store import Cache

__all__ = ["DEFAULT_URL", "EXIT_ERROR", "EXIT_USAGE", "CliError", "Inspector", "main"]

DEFAULT_URL = "redis://127.0.0.1:6379/0"

#: Exit statuses: 0 success, 1 an operational error, 2 a usage error (argparse's too).
EXIT_ERROR = 1
EXIT_USAGE = 2


class CliError(Exception):
    """A failure the tool reports as one line and a non-zero exit status."""

    def __init__(self, message: str, status: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.status = status


# The only code that reads stored values (plain or compressed, through the Rust core): what
# the value of a key holds, and whether a value's head (its first `_HEAD_SIZE` bytes, which
# `stats` fetches) starts an entry.
_HEAD_SIZE = STORED_HEAD_SIZE


def _decode_stored(name: str, data: bytes) -> Entry:
    """The entry the value `data` of key `name` holds; else a CliError saying what it is."""
    try:
        return decode_stored(data)
    except EntryError as exc:
        version = data[3] if len(data) > 3 and data[:3] == b"OXC" else ENTRY_VERSION
        reason = f"not an oxcache entry ({exc})"
        if version != ENTRY_VERSION:
            reason = f"an entry of envelope version {version} (this oxcache reads {ENTRY_VERSION})"
        raise CliError(
            f"{name}: {reason}; {len(data)} bytes, starting {data[:24]!r}. "
            "The cache reads it as a miss and overwrites it."
        ) from None


def _readable(head: bytes | None) -> bool:
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


class Inspector:
    """A store's keys on one Redis database: which are entries and which are indexes (the
    store's `KeySpace`), what they hold (a `RedisDatabase`), and purges through the store's
    own scripts."""

    def __init__(self, db: RedisDatabase, prefix: str) -> None:
        self.db = db
        self.prefix = prefix
        # Clears exactly as the store does; never connects by itself.
        self.store = Cache(backend=db.backend, prefix=prefix, on_error="raise")
        self.keys = self.store.keyspace
        self.start = self.keys.start

    def is_index(self, key: str) -> bool:
        """Whether a key under the prefix is one of the store's indexes (or locks)."""
        return self.keys.kind(key) != "entry"

    def indexes(self, user: str | None, tag: str | None) -> list[str]:
        """The indexes of `user` and of `tag`, of those given."""
        found = []
        if user is not None:
            found.append(self.keys.user_index(user))
        if tag is not None:
            found.append(self.keys.tag_index(tag))
        return found

    async def entry_keys(self, endpoint: str | None = None) -> list[str]:
        """Entry keys under the prefix, of one endpoint (`module.function`, or just the
        function's name) when given."""
        found = []
        async for key in self.db.scan(self.start, f"{endpoint}(" if endpoint else ""):
            if self.is_index(key):
                continue
            name = self.keys.endpoint(key)
            if endpoint and name != endpoint and not name.endswith("." + endpoint):
                continue
            found.append(key)
        return sorted(found)

    async def user_keys(self, user: str) -> list[str]:
        """Entries cached for one user (as the `per_user` dependency returned the id)."""
        return await self.db.live_members(self.keys.user_index(user))

    async def tag_keys(self, tag: str) -> list[str]:
        """Entries cached with one tag."""
        return await self.db.live_members(self.keys.tag_index(tag))

    async def stats(self) -> dict[str, Any]:
        """Counts and sizes of everything under the prefix."""
        entries = foreign = entry_bytes = index_bytes = 0
        endpoints: dict[str, dict[str, int]] = {}
        kinds: Counter[str] = Counter()
        live: dict[str, dict[str, int]] = {"user": {}, "tag": {}}
        survey = self.db.survey(self.start, self.is_index, _HEAD_SIZE)
        async for key, size, head, count in survey:
            kind = self.keys.kind(key)
            if kind != "entry":
                kinds[kind] += 1
                index_bytes += size
                if kind in live:
                    live[kind][key[len(self.start) + len(kind) + 2 :]] = count
            elif not _readable(head):
                foreign += 1  # another library's value, or an older envelope: a miss
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
            "unreadable": foreign,
            "indexes": dict(sorted(kinds.items())),
            "index_bytes": index_bytes,
            "endpoints": dict(sorted(endpoints.items())),
            "users": dict(sorted(live["user"].items())),
            "tags": dict(sorted(live["tag"].items())),
            "server_keyspace_hits": hits,
            "server_keyspace_misses": misses,
            "server_hit_rate": round(hits / (hits + misses), 4) if hits + misses else None,
        }

    async def show(self, key: str) -> dict[str, Any]:
        """The decoded entry under `key` (tried as given, then under the prefix)."""
        found = await self.db.find(key, self.start)
        if found is None:
            raise CliError(f"no such key: {key}")
        name, kind = found
        if kind != "string":
            what = self.keys.kind(name)
            note = f"an oxcache {what} index" if what != "entry" else "not an oxcache entry"
            raise CliError(f"{name} is a Redis {kind} ({note}); `oxcache keys` lists entries")
        data, pttl = await self.db.read(name)
        entry = _decode_stored(name, data)
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

    async def purge_plan(
        self, keys: Sequence[str], user: str | None, tag: str | None, everything: bool
    ) -> tuple[list[str], list[str]]:
        """The entries a purge deletes and the index keys deleted with them."""
        if everything:
            found = [key async for key in self.db.scan(self.start)]
            indexes = [key for key in found if self.is_index(key)]
            return sorted(key for key in found if not self.is_index(key)), sorted(indexes)
        doomed: set[str] = set()
        for key in keys:
            existing = await self.db.find(key, self.start)
            if existing is not None:
                doomed.add(existing[0])
        if user is not None:
            doomed.update(await self.user_keys(user))
        if tag is not None:
            doomed.update(await self.tag_keys(tag))
        return sorted(doomed), self.indexes(user, tag)

    async def purge(
        self, keys: Sequence[str], user: str | None, tag: str | None, everything: bool
    ) -> int:
        """Delete as the store does; returns how many entries were deleted."""
        if everything:
            return await self.store.clear()
        existing, _ = await self.purge_plan(keys, None, None, False)
        return await self.db.invalidate(self.indexes(user, tag), existing)


def _parser() -> argparse.ArgumentParser:
    from oxcache import __version__

    parser = argparse.ArgumentParser(
        prog="oxcache",
        description="Look inside an oxcache Redis cache: statistics, keys, entries, purges.",
        epilog="The Redis URL comes from --url, else $REDIS_URL, else " + DEFAULT_URL + ".",
    )
    parser.add_argument("--version", action="version", version=f"oxcache {__version__}")
    parser.add_argument(
        "--url",
        default=None,
        help="Redis URL (redis://, rediss://, unix://); default $REDIS_URL or " + DEFAULT_URL,
    )
    parser.add_argument(
        "--prefix",
        default=os.environ.get("OXCACHE_PREFIX", ""),
        help="the store's prefix (Cache(prefix=...)); default $OXCACHE_PREFIX or none",
    )
    parser.add_argument(
        "--timeout", type=float, default=5.0, help="seconds per Redis command (default 5)"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    stats = sub.add_parser("stats", help="entries, bytes, per endpoint, user and tag")
    stats.add_argument("--json", action="store_true", help="print JSON")

    keys = sub.add_parser("keys", help="list entry keys (SCAN, never KEYS)")
    group = keys.add_mutually_exclusive_group()
    group.add_argument("--endpoint", help="module.function, or only the function's name")
    group.add_argument("--user", help="a user id, as the per_user dependency returns it")
    group.add_argument("--tag", help="a tag, as formatted from @cache(tags=[...])")
    keys.add_argument("--json", action="store_true", help="print a JSON list")

    show = sub.add_parser("show", help="decode one entry: status, headers, ETag, age, TTL, body")
    show.add_argument("key", help="the entry's key (with or without the prefix)")
    show.add_argument(
        "--body", type=int, default=200, metavar="N", help="show the first N body bytes"
    )
    show.add_argument("--json", action="store_true", help="print JSON (body as text)")

    purge = sub.add_parser("purge", help="delete entries by key, user, tag, or all of the prefix")
    purge.add_argument("--key", action="append", default=[], help="an entry key (repeatable)")
    purge.add_argument("--user", help="every entry of this user")
    purge.add_argument("--tag", help="every entry with this tag")
    purge.add_argument(
        "--all", action="store_true", help="everything under --prefix (entries and indexes)"
    )
    purge.add_argument(
        "--dry-run", action="store_true", help="list what would be deleted, delete nothing"
    )
    return parser


def _print_stats(result: dict[str, Any]) -> None:
    prefix = result["prefix"] or "(none)"
    print(f"prefix: {prefix}")
    print(f"entries: {result['entries']} ({result['entry_bytes']} bytes)")
    if result["unreadable"]:
        print(f"unreadable values under the prefix (read as misses): {result['unreadable']}")
    indexes = ", ".join(f"{kind} {n}" for kind, n in result["indexes"].items()) or "none"
    print(f"indexes: {indexes} ({result['index_bytes']} bytes)")
    endpoints = {k: f"{v['entries']} ({v['bytes']} bytes)" for k, v in result["endpoints"].items()}
    for title, rows in (
        ("endpoints", endpoints),
        ("users", result["users"]),
        ("tags", result["tags"]),
    ):
        if rows:
            print(f"{title}:")
            for name, value in rows.items():
                print(f"  {name}: {value}")
    rate = result["server_hit_rate"]
    hits, misses = result["server_keyspace_hits"], result["server_keyspace_misses"]
    reads = f"{rate:.1%} ({hits} hits, {misses} misses)" if rate is not None else "no reads yet"
    print(f"hit rate: per process in store.stats(); Redis server keyspace (all clients): {reads}")


def _preview(body: bytes, limit: int) -> str:
    text = body[:limit].decode("utf-8", "backslashreplace")
    more = len(body) - limit
    return text + (f"... ({more} more bytes)" if more > 0 else "")


def _print_entry(entry: dict[str, Any], limit: int) -> None:
    fresh = entry["fresh_for_s"]
    state = f"fresh for {fresh} s" if fresh >= 0 else f"stale for {-fresh} s"
    print(f"key: {entry['key']}")
    print(f"status: {entry['status']}")
    print(f"etag: {entry['etag']} (sent as W/{entry['etag']} unless strong_etag=True)")
    print(f"created: {entry['created']}, age {entry['age_s']} s")
    print(f"expires: {entry['expires']}, {state}")
    ttl = entry["redis_ttl_ms"]
    print(f"redis ttl: {ttl / 1000:.1f} s" if ttl >= 0 else "redis ttl: none")
    print("headers:")
    for name, value in entry["headers"]:
        print(f"  {name}: {value}")
    print(f"body: {entry['body_bytes']} bytes")
    if limit > 0 and entry["body"]:
        print(_preview(entry["body"], limit))


async def _run(args: argparse.Namespace) -> int:
    url = args.url or os.environ.get("REDIS_URL") or DEFAULT_URL
    shown = redact(url)
    try:
        db = RedisDatabase(url, timeout=args.timeout)
    except ConfigError as exc:
        raise CliError(f"invalid Redis URL {shown}: {exc}", EXIT_USAGE) from None
    try:
        try:
            await db.ping()
        except CredentialsRefused as exc:
            raise CliError(f"Redis at {shown} refused the credentials: {exc}") from None
        except RedisUnavailable as exc:
            raise CliError(f"cannot reach Redis at {shown}: {exc}") from None
        return await _command(Inspector(db, args.prefix), args)
    except (RedisUnavailable, CacheUnavailable) as exc:
        reason = exc.reason if isinstance(exc, RedisUnavailable) else type(exc).__name__
        raise CliError(f"Redis at {shown} failed: {reason}: {exc}") from None
    finally:
        await db.close()


async def _command(inspector: Inspector, args: argparse.Namespace) -> int:
    if args.command == "stats":
        result = await inspector.stats()
        if args.json:
            print(json.dumps(result, indent=2))
        else:
            _print_stats(result)
        return 0
    if args.command == "keys":
        if args.user is not None:
            found = await inspector.user_keys(args.user)
        elif args.tag is not None:
            found = await inspector.tag_keys(args.tag)
        else:
            found = await inspector.entry_keys(args.endpoint)
        if args.json:
            print(json.dumps(found))
        else:
            for key in found:
                print(key)
        return 0
    if args.command == "show":
        entry = await inspector.show(args.key)
        if args.json:
            entry["body"] = _preview(entry["body"], args.body)
            print(json.dumps(entry, indent=2))
        else:
            _print_entry(entry, args.body)
        return 0
    # purge
    if not (args.key or args.user is not None or args.tag is not None or args.all):
        raise CliError("purge needs --key, --user, --tag or --all", EXIT_USAGE)
    if args.all and (args.key or args.user is not None or args.tag is not None):
        raise CliError("purge --all deletes everything under the prefix: give it alone", EXIT_USAGE)
    if args.all and not inspector.prefix and not args.dry_run:
        raise CliError(
            "purge --all without --prefix would delete every key of the database; "
            "give --prefix (or use redis-cli FLUSHDB if that is really what you want)",
            EXIT_USAGE,
        )
    entries, indexes = await inspector.purge_plan(args.key, args.user, args.tag, args.all)
    if args.dry_run:
        for key in entries:
            print(key)
        print(
            f"dry run: would delete {len(entries)} entries"
            + (f" and {len(indexes)} index keys" if indexes else "")
        )
        return 0
    deleted = await inspector.purge(args.key, args.user, args.tag, args.all)
    print(f"deleted {deleted} {'keys' if args.all else 'entries'}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the tool with `argv` (default `sys.argv[1:]`); returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        return asyncio.run(_run(args))
    except CliError as exc:
        print(f"oxcache: error: {exc}", file=sys.stderr)
        return exc.status
    except KeyboardInterrupt:
        return 130
