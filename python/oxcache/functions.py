"""`@cached`: plain functions (not endpoints) cached through the same stores, keys and
invalidation as `@cache`, returning the same Python objects."""

from __future__ import annotations

import functools
import inspect
import logging
import time
from collections.abc import Sequence
from typing import Any, Callable, TypeVar, cast

import anyio.from_thread
from pydantic import TypeAdapter

from oxcache._core import KeyBuildError, cache_key, encode_entry
from oxcache.errors import ConfigError
from oxcache.keys import KeySpace, resolved_hints
from oxcache.options import ONE_YEAR, ttl_ms
from oxcache.registry import registered_name
from oxcache.store import Cache, default_store

__all__ = ["CachedFunction", "cached"]

logger = logging.getLogger("oxcache")

F = TypeVar("F", bound=Callable[..., Any])


class CachedFunction:
    """What `@cached` knows about one function."""

    def __init__(
        self,
        func: Callable[..., Any],
        ttl_ms: int,
        store: Cache | None,
        tags: Sequence[str],
        name: str | None,
    ) -> None:
        self.func = func
        self.ttl_ms = ttl_ms
        self.store = store
        self.tags = tuple(tags)
        self.module = getattr(func, "__module__", None) or "__main__"
        self.name = name or registered_name(func, self.module, store)
        self.signature = inspect.signature(func)
        hints = resolved_hints(func)
        # The return annotation gives back the same type on a hit (models, dataclasses,
        # dates, tuples...); without one, values come back as JSON-shaped Python data.
        self.adapter: TypeAdapter[Any] = TypeAdapter(hints.get("return", Any))
        if any(p.kind is p.VAR_POSITIONAL for p in self.signature.parameters.values()):
            raise ConfigError(f"@cached cannot key {self.name}: *args are not supported")

    def values(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        bound = self.signature.bind(*args, **kwargs)
        bound.apply_defaults()
        values = dict(bound.arguments)
        for param in self.signature.parameters.values():
            if param.kind is param.VAR_KEYWORD:
                values.update(values.pop(param.name, {}))
        return values

    def key(self, space: KeySpace, values: dict[str, Any]) -> str:
        ignored = space.ignored
        pairs = [(n, v) for n, v in values.items() if not (ignored and isinstance(v, ignored))]
        return cache_key(space.prefix, self.module, self.name, pairs)

    # the interface `Cache.key_for` and `Cache.invalidate` use
    def key_for_call(self, space: KeySpace, args: dict[str, Any], origin: str | None = None) -> str:
        return self.key(space, self.values((), args))  # a function has no origin

    def invalidation(self, space: KeySpace, args: dict[str, Any]) -> tuple[list[str], list[str]]:
        return [], [self.key_for_call(space, args)]

    async def lookup(self, store: Cache, key: str) -> tuple[bool, Any]:
        entry = await store.entries.read(key)
        if entry is None or entry.expires_ms <= time.time_ns() // 1_000_000:
            return False, None
        try:
            value = self.adapter.validate_json(entry.body)
        except Exception:  # stored by an older version of the function: recompute
            return False, None
        store.counters.hits += 1
        logger.info("KEY_FOUND_IN_CACHE: key=%s", key)
        return True, value

    async def save(self, store: Cache, key: str, values: dict[str, Any], result: Any) -> None:
        try:
            body = self.adapter.dump_json(result)
            indexes = [store.keyspace.tag_index(t.format_map(values)) for t in self.tags]
        except Exception as exc:
            logger.info("FAILED_TO_CACHE_KEY: key=%s (%s)", key, type(exc).__name__)
            return
        now_ms = time.time_ns() // 1_000_000
        data = encode_entry(200, [], body, now_ms, now_ms + self.ttl_ms)
        await store.entries.write(key, data, self.ttl_ms, indexes)

    def prepare(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Cache, str, Any]:
        store = self.store or default_store()
        values = self.values(args, kwargs)
        return store, self.key(store.keyspace, values), values


def cached(
    expire: int | Any = ONE_YEAR,
    *,
    store: Cache | None = None,
    tags: Sequence[str] | None = None,
    name: str | None = None,
) -> Callable[[F], F]:
    """Cache a plain async or sync function's results (not an endpoint's responses).

    Keys are built as for endpoints (`prefix:module.function(arg=value,...)`), so
    `store.invalidate(func, **args)`, `invalidate_tag` and `clear()` apply. A hit returns
    the value decoded through the function's return annotation (a pydantic model comes back
    as that model); annotate it to get the same type back. Values pydantic cannot
    serialize are returned uncached (FAILED_TO_CACHE_KEY is logged). A sync function is
    cached when it runs in a worker thread of an event loop (such as FastAPI's threadpool
    for `def` endpoints); called with no event loop around, it runs uncached.

    Args:
        expire: Seconds (int) or a timedelta; default one year.
        store: The `Cache`; by default the default store at call time.
        tags: Tags formatted from the arguments, for `store.invalidate_tag`.
        name: The function-name part of keys.
    """
    expire_ms = ttl_ms(expire)
    if expire_ms <= 0:
        raise ConfigError("@cached needs a positive expire")

    def decorator(func: F) -> F:
        function = CachedFunction(func, expire_ms, store, tags or (), name)

        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                try:
                    target, key, values = function.prepare(args, kwargs)
                except (KeyBuildError, TypeError) as exc:
                    logger.info("FAILED_TO_CACHE_KEY: %s (%s)", function.name, exc)
                    return await func(*args, **kwargs)
                found, value = await function.lookup(target, key)
                if found:
                    return value
                target.counters.misses += 1
                result = await func(*args, **kwargs)
                await function.save(target, key, values, result)
                return result

            async_wrapper.__oxcache__ = function  # type: ignore[attr-defined]
            return cast(F, async_wrapper)

        @functools.wraps(func)
        def sync_wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                target, key, values = function.prepare(args, kwargs)
            except (KeyBuildError, TypeError) as exc:
                logger.info("FAILED_TO_CACHE_KEY: %s (%s)", function.name, exc)
                return func(*args, **kwargs)
            try:
                found, value = anyio.from_thread.run(function.lookup, target, key)
            except RuntimeError:  # not in a worker thread of an event loop
                return func(*args, **kwargs)
            if found:
                return value
            target.counters.misses += 1
            result = func(*args, **kwargs)
            anyio.from_thread.run(function.save, target, key, values, result)
            return result

        sync_wrapper.__oxcache__ = function  # type: ignore[attr-defined]
        return cast(F, sync_wrapper)

    return decorator
