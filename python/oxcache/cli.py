"""`oxcache`, the command-line tool: look inside a Redis cache and purge parts of it.

    oxcache [--url URL] [--prefix PREFIX] stats
    oxcache keys [--endpoint NAME | --user ID | --tag TAG]
    oxcache show KEY
    oxcache purge (--key KEY ... | --endpoint NAME | --user ID | --tag TAG | --all) [--dry-run]

It reads the layout the store writes (see `Cache.user_index`, `Cache.tag_index` and
docs/formats.md): entries under `prefix:module.function(args)`, indexes under
`prefix:@user:<id>`, `prefix:@tag:<tag>` and `prefix:@variants:<key>`, miss locks under
`prefix:@lock:<key>`, on one Redis, a Sentinel service's master or every primary of a
cluster (`oxcache.inspector`, `oxcache.backends.inspect`). It only ever uses SCAN, never
KEYS; a purge deletes exactly the keys its `--dry-run` lists, through the store's own
invalidation script. Errors (a wrong URL, an unreachable server, a missing key) are one line
on stderr and a non-zero exit status, never a traceback; notes (a cluster behind a plain
URL, caches under another prefix) go to stderr too.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from oxcache.backends.connect import redact
from oxcache.backends.inspect import CredentialsRefused, RedisDatabase, RedisUnavailable
from oxcache.errors import ConfigError
from oxcache.inspector import InspectError, Inspector, Plan

__all__ = ["DEFAULT_URL", "EXIT_ERROR", "EXIT_USAGE", "CliError", "main"]

DEFAULT_URL = "redis://127.0.0.1:6379/0"

#: Exit statuses: 0 success, 1 an operational error, 2 a usage error (argparse's too).
EXIT_ERROR = 1
EXIT_USAGE = 2


class CliError(Exception):
    """A failure the tool reports as one line and a non-zero exit status."""

    def __init__(self, message: str, status: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.status = status


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
        help="the URL Cache(url=...) was given: redis://, rediss://, unix://, "
        "redis+cluster://node:port (every primary is read), "
        "redis+sentinel://host:port/service[/db]; default $REDIS_URL or " + DEFAULT_URL,
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

    purge = sub.add_parser(
        "purge", help="delete entries by key, endpoint, user, tag, or all of the prefix"
    )
    purge.add_argument("--key", action="append", default=[], help="an entry key (repeatable)")
    purge.add_argument(
        "--endpoint", help="every entry of module.function (or only the function's name)"
    )
    purge.add_argument("--user", help="every entry of this user")
    purge.add_argument("--tag", help="every entry with this tag")
    purge.add_argument(
        "--all", action="store_true", help="everything under --prefix (entries and indexes)"
    )
    purge.add_argument(
        "--dry-run",
        action="store_true",
        help="list the keys the same command would delete, and delete nothing",
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
    others = {
        repr(name): f"{v['entries']} entries, {v['indexes']} index keys"
        for name, v in result["other_prefixes"].items()
    }
    for title, rows in (
        ("endpoints", endpoints),
        ("users", result["users"]),
        ("tags", result["tags"]),
        ("caches under other prefixes (not counted above; pass --prefix)", others),
    ):
        if rows:
            print(f"{title}:")
            for name, value in rows.items():
                print(f"  {name}: {value}")
    if result["foreign"]:
        print(f"other programs' keys (not oxcache's): {result['foreign']}")
    rate = result["server_hit_rate"]
    hits, misses = result["server_keyspace_hits"], result["server_keyspace_misses"]
    reads = f"{rate:.1%} ({hits} hits, {misses} misses)" if rate is not None else "no reads yet"
    print(
        f"hit rate: the Redis server's keyspace, all its clients (not only this cache): "
        f"{reads}; this cache's own, per process: store.stats()"
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


def _counts(entries: int, indexes: int) -> str:
    text = f"{entries} {'entry' if entries == 1 else 'entries'}"
    if indexes:
        text += f" and {indexes} index {'key' if indexes == 1 else 'keys'}"
    return text


def _note(message: str) -> None:
    print(f"oxcache: note: {message}", file=sys.stderr)


async def _run(args: argparse.Namespace) -> int:
    url = args.url or os.environ.get("REDIS_URL") or DEFAULT_URL
    shown = redact(url)
    if not args.timeout > 0:
        raise CliError(f"--timeout must be a positive number of seconds, not {args.timeout}", 2)
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
        if db.note is not None:
            _note(f"{shown} is {db.note}")
        inspector = Inspector(db, args.prefix)
        status = await _command(inspector, args)
        if inspector.others:
            found = ", ".join(f"{p!r} ({n} keys)" for p, n in sorted(inspector.others.items()))
            first = min(inspector.others)
            _note(
                f"no --prefix given; keys of oxcache caches under other prefixes were left "
                f"out: {found}. Pass --prefix {first} to read that cache."
            )
        return status
    except InspectError as exc:
        raise CliError(str(exc)) from None
    except RedisUnavailable as exc:
        raise CliError(f"Redis at {shown} failed: {exc.reason}: {exc}") from None
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
    return await _purge(inspector, args)


async def _purge(inspector: Inspector, args: argparse.Namespace) -> int:
    """The same checks and the same plan with and without `--dry-run`: the dry run lists
    the keys the purge would delete, and the purge deletes those."""
    chosen = args.key or args.endpoint is not None or args.user is not None
    chosen = chosen or args.tag is not None
    if not (chosen or args.all):
        raise CliError("purge needs --key, --endpoint, --user, --tag or --all", EXIT_USAGE)
    if args.all and chosen:
        raise CliError("purge --all deletes everything under the prefix: give it alone", EXIT_USAGE)
    if args.all and not inspector.prefix:
        raise CliError(
            "purge --all without --prefix would delete every key of the database; "
            "give --prefix (or use redis-cli FLUSHDB if that is really what you want)",
            EXIT_USAGE,
        )
    plan: Plan = await inspector.plan(args.key, args.user, args.tag, args.endpoint, args.all)
    if args.dry_run:
        for key in plan.entries + plan.indexes:
            print(key)
        print(f"dry run: would delete {_counts(len(plan.entries), len(plan.indexes))}")
        return 0
    entries, indexes = await inspector.execute(plan)
    print(f"deleted {_counts(entries, indexes)}")
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
