"""`@cached`: plain functions (not endpoints) cached through the same stores, keys and
invalidation as `@cache`, returning the same Python objects.

A hit must return what the miss returned. So: the return annotation says what a value comes
back as (pydantic validates it); without one (or with `Any`) only JSON-shaped values are
cached, since only they come back equal; a one-shot iterator is never cached (storing it
would consume it); generator functions are refused; and a return annotation pydantic
cannot handle makes the function run uncached. Each of these is warned once."""

from __future__ import annotations

import functools
import inspect
import logging
import math
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any, Callable, TypeVar, cast

import anyio.from_thread
from pydantic import TypeAdapter

from oxcache._core import KeyBuildError, cache_key, encode_entry
from oxcache.entries import Lease
from oxcache.errors import ConfigError
from oxcache.keys import KeySpace
from oxcache.options import ONE_YEAR, ttl_ms
from oxcache.registry import registered_name
from oxcache.signature import resolved_hints
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
        if inspect.isgeneratorfunction(func) or inspect.isasyncgenfunction(func):
            raise ConfigError(
                f"@cached cannot cache {self.module}.{self.name}: it is a generator function, "
                "whose values are made while the caller iterates. Return a list instead."
            )
        if any(p.kind is p.VAR_POSITIONAL for p in self.signature.parameters.values()):
            raise ConfigError(f"@cached cannot key {self.name}: *args are not supported")
        returns = resolved_hints(func).get("return", Any)
        #: Without an annotation, only values that come back equal from JSON are cached.
        self.json_only = returns is Any
        # The return annotation gives back the same type on a hit (models, dataclasses,
        # dates, tuples...). None: pydantic cannot handle it, and the function runs uncached.
        self.adapter: TypeAdapter[Any] | None
        try:
            self.adapter = TypeAdapter(returns)
        except Exception as exc:
            self.adapter = None
            logger.warning(
                "%s.%s runs uncached: pydantic cannot serialize its return annotation %r "
                "(%s). Annotate it with a type pydantic handles (a model, a dataclass, a "
                "TypedDict, built-in types) to cache it.",
                self.module,
                self.name,
                returns,
                type(exc).__name__,
            )

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

    def generations(self, space: KeySpace, values: dict[str, Any]) -> tuple[str, ...]:
        """The generations of a call's tags (none when a tag cannot be formatted: `save`
        then says why the result is not stored)."""
        try:
            return space.generations([space.tag_index(t.format_map(values)) for t in self.tags])
        except Exception:
            return ()

    async def lookup(
        self, store: Cache, key: str, generations: tuple[str, ...]
    ) -> tuple[bool, Any]:
        assert self.adapter is not None
        entry = await store.entries.read(key, generations)
        if entry is None or entry.expires_ms <= time.time_ns() // 1_000_000:
            return False, None
        try:
            value = self.adapter.validate_json(entry.body)
        except Exception:  # stored by an older version of the function: recompute
            return False, None
        store.counters.hits += 1
        logger.info("KEY_FOUND_IN_CACHE: key=%s", key)
        return True, value

    def refusal(self, result: Any) -> str | None:
        """Why `result` is returned uncached (a hit could not return it as it is), or None."""
        if isinstance(result, (Iterator, AsyncIterator)):
            return (
                f"returned a {type(result).__name__}, an iterator that storing would "
                "consume: it is returned as it is, uncached. Return a list to cache it."
            )
        if self.json_only and not _json_shaped(result):
            return (
                f"returned a {type(result).__name__} without a return annotation, so a "
                "hit would give back its JSON form (a dict, a list, a str) instead: it is "
                f"returned uncached. Annotate the return type (-> {type(result).__name__}) "
                "to cache it."
            )
        return None

    def warn(self, store: Cache, what: str, key: str, message: str) -> None:
        """FAILED_TO_CACHE_KEY: a warning the first time for this function and `what`,
        then at INFO level."""
        text = f"FAILED_TO_CACHE_KEY: key=%s: {self.module}.{self.name} %s"
        if not store.warn_once(f"cached:{what}:{self.module}.{self.name}", text, key, message):
            logger.info(text, key, message)

    async def lease(self, store: Cache, key: str, generations: tuple[str, ...]) -> Lease | None:
        """Taken before the function runs: what its result is stored under."""
        return await store.entries.lease(key, generations, self.ttl_ms)

    async def save(
        self, store: Cache, key: str, values: dict[str, Any], result: Any, lease: Lease | None
    ) -> None:
        assert self.adapter is not None
        reason = self.refusal(result)
        if reason is not None:
            self.warn(store, "value", key, reason)
            return
        try:
            body = self.adapter.dump_json(result)
            indexes = [store.keyspace.tag_index(t.format_map(values)) for t in self.tags]
        except Exception as exc:
            self.warn(
                store,
                "serialize",
                key,
                f"returned a value pydantic cannot serialize ({type(exc).__name__}: {exc}): "
                "it is returned uncached.",
            )
            return
        if lease is None:
            return  # storage could not say what the function read its data under
        now_ms = time.time_ns() // 1_000_000
        data = encode_entry(200, [], body, now_ms, now_ms + self.ttl_ms, lease.stamp)
        await store.entries.write(key, data, self.ttl_ms, indexes, lease=lease)

    def prepare(
        self, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[Cache, str, Any, tuple[str, ...]]:
        """The store, key, argument values and generations of a call."""
        store = self.store or default_store()
        values = self.values(args, kwargs)
        space = store.keyspace
        return store, self.key(space, values), values, self.generations(space, values)


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
    what the miss returned:

    - With a return annotation, the value is decoded through it (a pydantic model comes
      back as that model). An annotation pydantic cannot handle (a plain class, an ORM
      model) makes the function run uncached, with a warning at decoration.
    - Without one (or with `Any`), only JSON-shaped values are cached (dicts with string
      keys, lists, strings, numbers, booleans, None); any other value (a model, a tuple, a
      date) is returned uncached with a warning naming the annotation to add.
    - An iterator (a generator, `map(...)`) is returned as it is, uncached; a generator
      function is refused (`ConfigError`): return a list.
    - Values pydantic cannot serialize are returned uncached.

    Each refusal logs FAILED_TO_CACHE_KEY, as a warning the first time. A sync function is
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
                if function.adapter is None:
                    return await func(*args, **kwargs)
                try:
                    target, key, values, generations = function.prepare(args, kwargs)
                except (KeyBuildError, TypeError) as exc:
                    logger.info("FAILED_TO_CACHE_KEY: %s (%s)", function.name, exc)
                    return await func(*args, **kwargs)
                if not target.enabled:
                    return await func(*args, **kwargs)
                found, value = await function.lookup(target, key, generations)
                if found:
                    return value
                target.counters.misses += 1
                lease = await function.lease(target, key, generations)
                result = await func(*args, **kwargs)
                await function.save(target, key, values, result, lease)
                return result

            async_wrapper.__oxcache__ = function  # type: ignore[attr-defined]
            return cast(F, async_wrapper)

        @functools.wraps(func)
        def sync_wrapper(*args: Any, **kwargs: Any) -> Any:
            if function.adapter is None:
                return func(*args, **kwargs)
            try:
                target, key, values, generations = function.prepare(args, kwargs)
            except (KeyBuildError, TypeError) as exc:
                logger.info("FAILED_TO_CACHE_KEY: %s (%s)", function.name, exc)
                return func(*args, **kwargs)
            if not target.enabled:
                return func(*args, **kwargs)
            try:
                found, value = anyio.from_thread.run(function.lookup, target, key, generations)
            except RuntimeError:  # not in a worker thread of an event loop
                return func(*args, **kwargs)
            if found:
                return value
            target.counters.misses += 1
            lease = anyio.from_thread.run(function.lease, target, key, generations)
            result = func(*args, **kwargs)
            anyio.from_thread.run(function.save, target, key, values, result, lease)
            return result

        sync_wrapper.__oxcache__ = function  # type: ignore[attr-defined]
        return cast(F, sync_wrapper)

    return decorator


def _json_shaped(value: Any, depth: int = 0) -> bool:
    """Whether `value` comes back from JSON equal and of the same types: dicts with string
    keys, lists, strings, ints, finite floats, booleans and None, nested."""
    kind = type(value)
    if value is None or kind in (str, int, bool):
        return True
    if kind is float:
        return math.isfinite(value)
    if depth > 64:
        return False
    if kind is list:
        return all(_json_shaped(item, depth + 1) for item in value)
    if kind is dict:
        return all(type(k) is str and _json_shaped(v, depth + 1) for k, v in value.items())
    return False
