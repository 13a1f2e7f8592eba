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
from collections.abc import AsyncIterator, Sequence
from datetime import datetime, timezone
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import AuthenticationError, RedisError

from oxcache._core import (
    ENTRY_HEAD_SIZE,
    ENTRY_VERSION,
    EntryError,
    decode_entry,
    peek_entry,
)
from oxcache.backends.connect import redact
from oxcache.backends.redis import RedisBackend
from oxcache.errors import CacheUnavailable
from oxcache.store import Cache

DEFAULT_URL = "redis://127.0.0.1:6379/0"
_GLOB_SPECIALS = str.maketrans({c: "\\" + c for c in "*?[]\\"})
_BATCH = 500

#: Exit statuses: 0 success, 1 an operational error, 2 a usage error (argparse's too).
EXIT_ERROR = 1
EXIT_USAGE = 2


class CliError(Exception):
    """A failure the tool reports as one line and a non-zero exit status."""

    def __init__(self, message: str, status: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.status = status


def _glob(text: str) -> str:
    """`text` as a literal inside a SCAN MATCH pattern."""
    return text.translate(_GLOB_SPECIALS)


def _text(raw: bytes | str) -> str:
    return raw if isinstance(raw, str) else raw.decode("utf-8", "backslashreplace")


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).isoformat(timespec="seconds")


class Inspector:
    """The store's key layout on one Redis database, read with SCAN and small batches."""

    def __init__(self, client: Any, prefix: str) -> None:
        self.client = client
        self.prefix = prefix
        # Builds index names exactly as the store does; never connects by itself.
        self.store = Cache(client=client, prefix=prefix, on_error="raise")
        self.key_prefix = f"{prefix}:" if prefix else ""

    def kind(self, key: str) -> str:
        """`entry`, or the index kind (`user`, `tag`, `variants`, `lock`) of a key under the
        prefix: index names start with `@`, which no module name does."""
        local = key[len(self.key_prefix) :]
        if local.startswith("@"):
            return local[1:].partition(":")[0] or "other"
        return "entry"

    def endpoint(self, key: str) -> str:
        """The `module.function` part of an entry key."""
        return key[len(self.key_prefix) :].partition("(")[0]

    async def scan(self, match: str | None = None) -> AsyncIterator[str]:
        """Every key under the prefix (or matching `match`), by SCAN."""
        pattern = match if match is not None else _glob(self.key_prefix) + "*"
        async for raw in self.client.scan_iter(match=pattern, count=1000):
            yield _text(raw)

    async def entry_keys(self, endpoint: str | None = None) -> list[str]:
        """Entry keys under the prefix, of one endpoint (`module.function`, or just the
        function's name) when given."""
        match = None
        if endpoint:
            match = _glob(self.key_prefix) + "*" + _glob(endpoint) + "(*"
        found = []
        async for key in self.scan(match):
            if self.kind(key) != "entry":
                continue
            name = self.endpoint(key)
            if endpoint and name != endpoint and not name.endswith("." + endpoint):
                continue
            found.append(key)
        return sorted(found)

    async def index_members(self, index: str) -> list[str]:
        """The entries an index lists that still exist (an index may list a few entries
        that expired since its last write)."""
        members = [_text(m) for m in await self.client.zrange(index, 0, -1)]
        alive: list[str] = []
        for start in range(0, len(members), _BATCH):
            batch = members[start : start + _BATCH]
            async with self.client.pipeline(transaction=False) as pipe:
                for key in batch:
                    pipe.exists(key)
                flags = await pipe.execute()
            alive.extend(key for key, flag in zip(batch, flags, strict=True) if flag)
        return sorted(alive)

    async def user_keys(self, user: str) -> list[str]:
        """Entries cached for one user (as the `per_user` dependency returned the id)."""
        return await self.index_members(self.store.user_index(user))

    async def tag_keys(self, tag: str) -> list[str]:
        """Entries cached with one tag."""
        return await self.index_members(self.store.tag_index(tag))

    async def stats(self) -> dict[str, Any]:
        """Counts and sizes of everything under the prefix."""
        entries = foreign = entry_bytes = index_bytes = 0
        endpoints: Counter[str] = Counter()
        endpoint_bytes: Counter[str] = Counter()
        kinds: Counter[str] = Counter()
        users: dict[str, int] = {}
        tags: dict[str, int] = {}
        batch: list[str] = []

        async def flush() -> None:
            nonlocal entries, foreign, entry_bytes, index_bytes
            async with self.client.pipeline(transaction=False) as pipe:
                for key in batch:
                    pipe.memory_usage(key)
                    if self.kind(key) == "entry":
                        pipe.getrange(key, 0, ENTRY_HEAD_SIZE - 1)
                    else:
                        pipe.zcount(key, time.time_ns() // 1_000_000, "+inf")
                replies = iter(await pipe.execute(raise_on_error=False))
            for key in batch:
                size_reply, extra = next(replies), next(replies)
                size = size_reply if isinstance(size_reply, int) else 0
                kind = self.kind(key)
                if kind != "entry":
                    kinds[kind] += 1
                    index_bytes += size
                    name = key[len(self.key_prefix) + len(kind) + 2 :]
                    live = extra if isinstance(extra, int) else 0
                    if kind == "user":
                        users[name] = live
                    elif kind == "tag":
                        tags[name] = live
                    continue
                try:
                    if not isinstance(extra, bytes):
                        raise TypeError("not a string")
                    peek_entry(extra)
                except (EntryError, TypeError):
                    foreign += 1  # another library's value, or an older envelope: a miss
                    continue
                entries += 1
                entry_bytes += size
                endpoints[self.endpoint(key)] += 1
                endpoint_bytes[self.endpoint(key)] += size
            batch.clear()

        async for key in self.scan():
            batch.append(key)
            if len(batch) >= _BATCH:
                await flush()
        if batch:
            await flush()
        info = await self.client.info("stats")
        hits, misses = int(info.get("keyspace_hits", 0)), int(info.get("keyspace_misses", 0))
        return {
            "prefix": self.prefix,
            "entries": entries,
            "entry_bytes": entry_bytes,
            "unreadable": foreign,
            "indexes": dict(sorted(kinds.items())),
            "index_bytes": index_bytes,
            "endpoints": {
                name: {"entries": endpoints[name], "bytes": endpoint_bytes[name]}
                for name in sorted(endpoints)
            },
            "users": dict(sorted(users.items())),
            "tags": dict(sorted(tags.items())),
            "server_keyspace_hits": hits,
            "server_keyspace_misses": misses,
            "server_hit_rate": round(hits / (hits + misses), 4) if hits + misses else None,
        }

    async def show(self, key: str) -> dict[str, Any]:
        """The decoded entry under `key` (tried as given, then under the prefix)."""
        candidates = [key]
        if self.key_prefix and not key.startswith(self.key_prefix):
            candidates.append(self.key_prefix + key)
        for name in candidates:
            kind = _text(await self.client.type(name))
            if kind != "none":
                break
        else:
            raise CliError(f"no such key: {key}")
        if kind != "string":
            what = self.kind(name)
            note = f"an oxcache {what} index" if what != "entry" else "not an oxcache entry"
            raise CliError(f"{name} is a Redis {kind} ({note}); `oxcache keys` lists entries")
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.get(name)
            pipe.pttl(name)
            data, pttl = await pipe.execute()
        data = bytes(data or b"")
        try:
            entry = decode_entry(data)
        except EntryError as exc:
            version = data[3] if len(data) > 3 and data[:3] == b"OXC" else None
            if version is not None and version != ENTRY_VERSION:
                reason = (
                    f"an entry of envelope version {version} (this oxcache reads {ENTRY_VERSION})"
                )
            else:
                reason = f"not an oxcache entry ({exc})"
            raise CliError(
                f"{name}: {reason}; {len(data)} bytes, starting {data[:24]!r}. "
                "The cache reads it as a miss and overwrites it."
            ) from None
        now_ms = time.time_ns() // 1_000_000
        return {
            "key": name,
            "status": entry.status,
            "etag": entry.etag,
            "created": _iso(entry.created_ms),
            "expires": _iso(entry.expires_ms),
            "age_s": max(now_ms - entry.created_ms, 0) // 1000,
            "fresh_for_s": (entry.expires_ms - now_ms) // 1000,
            "redis_ttl_ms": int(pttl),
            "headers": [[_text(n), _text(v)] for n, v in entry.headers],
            "body_bytes": len(entry.body),
            "body": entry.body,
        }

    async def purge_plan(
        self, keys: Sequence[str], user: str | None, tag: str | None, everything: bool
    ) -> tuple[list[str], list[str]]:
        """The entries a purge deletes and the index keys deleted with them."""
        if everything:
            found = [key async for key in self.scan()]
            return sorted(k for k in found if self.kind(k) == "entry"), sorted(
                k for k in found if self.kind(k) != "entry"
            )
        doomed: set[str] = set()
        indexes: list[str] = []
        for key in keys:
            for name in (key, self.key_prefix + key) if self.key_prefix else (key,):
                if await self.client.exists(name):
                    doomed.add(name)
                    break
        if user is not None:
            indexes.append(self.store.user_index(user))
            doomed.update(await self.user_keys(user))
        if tag is not None:
            indexes.append(self.store.tag_index(tag))
            doomed.update(await self.tag_keys(tag))
        return sorted(doomed), indexes

    async def purge(
        self, keys: Sequence[str], user: str | None, tag: str | None, everything: bool
    ) -> int:
        """Delete as the store does; returns how many entries were deleted."""
        if everything:
            return await self.store.clear()
        backend = self.store.backend
        assert isinstance(backend, RedisBackend)
        indexes: list[str] = []
        if user is not None:
            indexes.append(self.store.user_index(user))
        if tag is not None:
            indexes.append(self.store.tag_index(tag))
        existing, _ = await self.purge_plan(keys, None, None, False)
        return await backend.invalidate(indexes, existing)


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
    for title, rows in (
        (
            "endpoints",
            {k: f"{v['entries']} ({v['bytes']} bytes)" for k, v in result["endpoints"].items()},
        ),
        ("users", result["users"]),
        ("tags", result["tags"]),
    ):
        if rows:
            print(f"{title}:")
            for name, value in rows.items():
                print(f"  {name}: {value}")
    rate = result["server_hit_rate"]
    print(
        "hit rate: per process in store.stats(); Redis server keyspace (all clients): "
        + (
            f"{rate:.1%} ({result['server_keyspace_hits']} hits, "
            f"{result['server_keyspace_misses']} misses)"
            if rate is not None
            else "no reads yet"
        )
    )


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
        client = aioredis.Redis.from_url(
            url, socket_timeout=args.timeout, socket_connect_timeout=args.timeout
        )
    except (ValueError, TypeError) as exc:
        raise CliError(f"invalid Redis URL {shown}: {exc}", EXIT_USAGE) from None
    try:
        try:
            await client.ping()
        except AuthenticationError as exc:
            raise CliError(f"Redis at {shown} refused the credentials: {exc}") from None
        except (RedisError, OSError) as exc:
            raise CliError(f"cannot reach Redis at {shown}: {exc}") from None
        inspector = Inspector(client, args.prefix)
        return await _command(inspector, args)
    except (RedisError, CacheUnavailable) as exc:
        raise CliError(f"Redis at {shown} failed: {type(exc).__name__}: {exc}") from None
    finally:
        await client.aclose()


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


__all__ = ["CliError", "Inspector", "main"]
