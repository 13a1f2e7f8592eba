"""`@cache`: response caching for FastAPI path operations."""

from __future__ import annotations

import functools
import inspect
import logging
import time
from datetime import timedelta
from typing import Any, Callable, TypeVar, Union, cast, overload

from fastapi import Response
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from oxcache._core import (
    KeyBuildError,
    cache_key,
    encode_entry,
    etag,
    if_none_match,
)
from oxcache.errors import ConfigError
from oxcache.http import OWN_HEADERS, cache_headers, request_directives
from oxcache.keys import ALWAYS_IGNORED, is_ignored_annotation, resolved_hints
from oxcache.responses import CachedResponse, render
from oxcache.store import Cache, default_store

logger = logging.getLogger("oxcache")

F = TypeVar("F", bound=Callable[..., Any])
Expire = Union[int, timedelta]

ONE_MINUTE = 60
ONE_HOUR = 3600
ONE_DAY = 86_400
ONE_WEEK = 604_800
ONE_MONTH = 2_592_000  # 30 days, as fastapi-redis-cache
ONE_YEAR = 31_536_000  # 365 days, the "never expires" default

_REQUEST_PARAM = "oxcache_request__"
_RESPONSE_PARAM = "oxcache_response__"
_CACHED_METHODS = frozenset({"GET", "HEAD"})


def _ttl_ms(expire: Expire) -> int:
    if isinstance(expire, bool) or not isinstance(expire, (int, timedelta)):
        raise ConfigError(f"expire must be an int (seconds) or a timedelta, not {expire!r}")
    seconds = expire.total_seconds() if isinstance(expire, timedelta) else expire
    if seconds < 0:
        raise ConfigError(f"expire must not be negative, got {expire!r}")
    return int(seconds * 1000)


def _is_async(func: Callable[..., Any]) -> bool:
    if inspect.iscoroutinefunction(func):
        return True
    call = getattr(func, "__call__", None)  # noqa: B004 - async __call__ on an instance
    return call is not None and inspect.iscoroutinefunction(call)


def _find_param(signature: inspect.Signature, hints: dict[str, Any], cls: type[Any]) -> str | None:
    """The name of the parameter annotated with `cls` (or a subclass), if any."""
    for name in signature.parameters:
        if name in hints and is_ignored_annotation(hints[name], (cls,)):
            return name
    return None


class CachedEndpoint:
    """What `@cache` knows about one endpoint; the wrapper FastAPI calls delegates here."""

    def __init__(self, func: Callable[..., Any], ttl_ms: int, store: Cache | None) -> None:
        self.func = func
        self.ttl_ms = ttl_ms
        self.store = store
        self.is_async = _is_async(func)
        self.module = getattr(func, "__module__", None) or "__main__"
        self.name = getattr(func, "__name__", None) or type(func).__name__
        signature = inspect.signature(func)
        hints = resolved_hints(func)
        self.hints = hints
        self.params = list(signature.parameters.values())
        if any(p.kind is p.VAR_POSITIONAL for p in self.params):
            raise ConfigError(f"@cache cannot key {self.name}: *args parameters are not supported")

        self.request_param = _find_param(signature, hints, Request)
        self.response_param = _find_param(signature, hints, Response)
        extra: list[inspect.Parameter] = []
        if self.request_param is None:
            extra.append(
                inspect.Parameter(
                    _REQUEST_PARAM, inspect.Parameter.KEYWORD_ONLY, annotation=Request
                )
            )
        if self.response_param is None:
            extra.append(
                inspect.Parameter(
                    _RESPONSE_PARAM, inspect.Parameter.KEYWORD_ONLY, annotation=Response
                )
            )
        params = list(self.params)
        var_kw = [p for p in params if p.kind is p.VAR_KEYWORD]
        params = [p for p in params if p.kind is not p.VAR_KEYWORD] + extra + var_kw
        # FastAPI reads the wrapper's signature; evaluated hints keep string annotations working.
        self.signature = signature.replace(
            parameters=[p.replace(annotation=hints.get(p.name, p.annotation)) for p in params],
            return_annotation=hints.get("return", signature.return_annotation),
        )
        self._key_names: dict[tuple[type[Any], ...], tuple[str, ...]] = {}

    # -- keys ------------------------------------------------------------------------------

    def key_names(self, ignored: tuple[type[Any], ...]) -> tuple[str, ...]:
        """Parameters whose annotation does not exclude them from the key, in signature order."""
        names = self._key_names.get(ignored)
        if names is None:
            skip = ALWAYS_IGNORED + ignored
            names = tuple(
                p.name
                for p in self.params
                if p.kind is not p.VAR_KEYWORD
                and not is_ignored_annotation(self.hints.get(p.name), skip)
            )
            self._key_names[ignored] = names
        return names

    def key(self, store: Cache, values: dict[str, Any]) -> str:
        ignored = store.ignore_arg_types
        skip = ALWAYS_IGNORED + ignored if ignored else ALWAYS_IGNORED
        args = [
            (name, values[name])
            for name in self.key_names(ignored)
            if name in values and not isinstance(values[name], skip)
        ]
        return cache_key(store.prefix, self.module, self.name, args)

    def key_for_call(self, store: Cache, args: dict[str, Any]) -> str:
        """The key of a call with `args`, defaults filled in as FastAPI would."""
        values: dict[str, Any] = {}
        for param in self.params:
            if param.name in args:
                values[param.name] = args[param.name]
            elif param.default is not inspect.Parameter.empty:
                default = param.default
                values[param.name] = getattr(default, "default", default)
        unknown = set(args) - {p.name for p in self.params}
        if unknown:
            raise ConfigError(f"{self.name} has no parameters named {sorted(unknown)}")
        return self.key(store, values)

    # -- requests --------------------------------------------------------------------------

    async def call(self, kwargs: dict[str, Any]) -> Any:
        if self.is_async:
            return await self.func(**kwargs)
        return await run_in_threadpool(self.func, **kwargs)

    async def handle(
        self, request: Request, sub_response: Response | None, kwargs: dict[str, Any]
    ) -> Any:
        if request.scope["method"] not in _CACHED_METHODS or self.ttl_ms <= 0:
            return await self.call(kwargs)
        headers = request.headers
        directives = request_directives(headers)
        if directives is not None and (directives.no_store or directives.no_cache):
            return await self.call(kwargs)  # the seed's behaviour: no caching at all
        store = self.store or default_store()
        try:
            key = self.key(store, kwargs)
        except KeyBuildError as exc:
            store._warn_once(
                "key:" + self.module + "." + self.name, "%s is served uncached: %s", self.name, exc
            )
            return await self.call(kwargs)

        now_ms = time.time_ns() // 1_000_000
        max_age_ms = (
            None if directives is None or directives.max_age is None else directives.max_age * 1000
        )
        condition = headers.get("if-none-match")
        weak = not store.strong_etag
        if condition is not None:
            head = await store.read_head(key)
            if (
                head is not None
                and head.expires_ms > now_ms
                and (max_age_ms is None or now_ms - head.created_ms <= max_age_ms)
                and if_none_match(condition, head.etag)
            ):
                logger.info("KEY_FOUND_IN_CACHE: key=%s", key)
                return CachedResponse(
                    304,
                    cache_headers(
                        etag=head.etag,
                        created_ms=head.created_ms,
                        expires_ms=head.expires_ms,
                        now_ms=now_ms,
                        hit=True,
                        hit_header=store.hit_header,
                        weak=weak,
                    ),
                    b"",
                )
        entry = await store.read(key)
        if (
            entry is not None
            and entry.expires_ms > now_ms
            and (max_age_ms is None or now_ms - entry.created_ms <= max_age_ms)
        ):
            logger.info("KEY_FOUND_IN_CACHE: key=%s", key)
            body = entry.body
            raw = [(b"content-length", str(len(body)).encode("ascii")), *entry.headers]
            raw += cache_headers(
                etag=entry.etag,
                created_ms=entry.created_ms,
                expires_ms=entry.expires_ms,
                now_ms=now_ms,
                hit=True,
                hit_header=store.hit_header,
                weak=weak,
            )
            return CachedResponse(entry.status, raw, body)

        result = await self.call(kwargs)
        try:
            response = await render(request, result, sub_response, self.func, self.is_async)
        except Exception as exc:
            # The uncached route would fail the same way; nothing is stored.
            logger.info("FAILED_TO_CACHE_KEY: key=%s (%s)", key, type(exc).__name__)
            raise
        rendered = getattr(response, "body", None)
        if not isinstance(rendered, bytes):
            store._warn_once(
                "stream:" + self.name,
                "%s returned a %s, which is never cached (its body is not known in advance)",
                self.name,
                type(response).__name__,
            )
            return response
        status = response.status_code
        if not 200 <= status < 300 or any(
            name == b"set-cookie" or (name == b"cache-control" and _forbids_store(value))
            for name, value in response.raw_headers
        ):
            return response

        tag = etag(rendered)
        stored = [
            (n, v)
            for n, v in response.raw_headers
            if n not in OWN_HEADERS and n != store.hit_header
        ]
        expires_ms = now_ms + self.ttl_ms
        await store.write(
            key, encode_entry(status, stored, rendered, now_ms, expires_ms), self.ttl_ms
        )
        own = cache_headers(
            etag=tag,
            created_ms=now_ms,
            expires_ms=expires_ms,
            now_ms=now_ms,
            hit=False,
            hit_header=store.hit_header,
            weak=weak,
        )
        if condition is not None and if_none_match(condition, tag):
            return CachedResponse(304, own, b"")
        response.raw_headers = [
            (n, v)
            for n, v in response.raw_headers
            if n not in OWN_HEADERS or n == b"content-length"
        ] + own
        return response


def _forbids_store(value: bytes) -> bool:
    """RFC 9111 section 3: a shared cache must not store `no-store` or `private` responses."""
    lowered = value.lower()
    return b"no-store" in lowered or b"private" in lowered


@overload
def cache(expire: F) -> F: ...


@overload
def cache(expire: Expire = ONE_YEAR, *, store: Cache | None = None) -> Callable[[F], F]: ...


def cache(expire: Any = ONE_YEAR, *, store: Cache | None = None) -> Any:
    """Cache a FastAPI path operation's responses.

    Place it *below* the route decorator::

        @app.get("/items/{id}")
        @cache(expire=60)
        async def item(id: int): ...

    Only GET and HEAD requests with a 2xx response are cached; the key is built from the
    endpoint's arguments (`prefix:module.function(name=value,...)`). Hits and misses carry
    `Cache-Control`, `Expires`, `ETag` and the hit/miss header; `If-None-Match` gives 304.
    A request with `Cache-Control: no-cache` or `no-store` bypasses the cache entirely.

    Args:
        expire: Seconds (int) or a timedelta; default one year. 0 means "do not store".
        store: The `Cache` to use; by default the one configured by
            `FastApiRedisCache().init(...)` or last entered, else an in-memory store.
    """
    if callable(expire) and not isinstance(expire, (int, timedelta)):
        return cache()(expire)  # bare @cache
    ttl_ms = _ttl_ms(expire)

    def decorator(func: F) -> F:
        endpoint = CachedEndpoint(func, ttl_ms, store)
        request_param = endpoint.request_param
        response_param = endpoint.response_param

        @functools.wraps(func)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            request = (
                kwargs.pop(_REQUEST_PARAM, None)
                if request_param is None
                else kwargs.get(request_param)
            )
            sub_response = (
                kwargs.pop(_RESPONSE_PARAM, None)
                if response_param is None
                else kwargs.get(response_param)
            )
            if args or not isinstance(request, Request):
                # Called directly, not by FastAPI: behave like the undecorated function.
                if endpoint.is_async:
                    return await func(*args, **kwargs)
                return await run_in_threadpool(func, *args, **kwargs)
            return await endpoint.handle(request, sub_response, kwargs)

        wrapper.__signature__ = endpoint.signature  # type: ignore[attr-defined]
        wrapper.__oxcache__ = endpoint  # type: ignore[attr-defined]
        del wrapper.__wrapped__  # FastAPI must read our signature, not the original's
        return cast(F, wrapper)

    return decorator


def _shortcut(seconds: int, name: str) -> Callable[..., Callable[[F], F]]:
    shortcut = functools.partial(cache, expire=seconds)
    functools.update_wrapper(shortcut, cache)
    shortcut.__name__ = name  # type: ignore[attr-defined]
    shortcut.__qualname__ = name  # type: ignore[attr-defined]
    shortcut.__doc__ = f"`@cache` with `expire={seconds}` seconds."
    return cast(Callable[..., Callable[[F], F]], shortcut)


cache_one_minute = _shortcut(ONE_MINUTE, "cache_one_minute")
cache_one_hour = _shortcut(ONE_HOUR, "cache_one_hour")
cache_one_day = _shortcut(ONE_DAY, "cache_one_day")
cache_one_week = _shortcut(ONE_WEEK, "cache_one_week")
cache_one_month = _shortcut(ONE_MONTH, "cache_one_month")
cache_one_year = _shortcut(ONE_YEAR, "cache_one_year")
