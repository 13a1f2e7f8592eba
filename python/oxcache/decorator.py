"""`@cache`: response caching for FastAPI path operations. The decorator checks its options,
builds the endpoint's `CachedEndpoint`, and returns the wrapper FastAPI calls, which hands
each request to `serve.handle`."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import timedelta
from typing import Any, Callable, TypeVar, cast, overload

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from oxcache.body import cached_methods
from oxcache.deferred import PENDING_PARAM
from oxcache.early import EARLY_SCOPE_KEY
from oxcache.endpoint import REQUEST_PARAM, RESPONSE_PARAM, USER_PARAM, CachedEndpoint
from oxcache.options import (
    ONE_DAY,
    ONE_HOUR,
    ONE_MINUTE,
    ONE_MONTH,
    ONE_WEEK,
    ONE_YEAR,
    Expire,
    Options,
    compress_threshold,
    ttl_ms,
)
from oxcache.route import adopt
from oxcache.serve import NO_USER, handle
from oxcache.store import Cache

__all__ = [
    "cache",
    "cache_one_day",
    "cache_one_hour",
    "cache_one_minute",
    "cache_one_month",
    "cache_one_week",
    "cache_one_year",
]

F = TypeVar("F", bound=Callable[..., Any])


@overload
def cache(expire: F) -> F: ...


@overload
def cache(
    expire: Expire = ONE_YEAR,
    *,
    store: Cache | None = None,
    per_user: Callable[..., Any] | None = None,
    vary: Sequence[str] | None = None,
    tags: Sequence[str] | None = None,
    shared: bool = False,
    stale_while_revalidate: Expire = 0,
    stale_if_error: Expire = 0,
    name: str | None = None,
    max_age: Expire | None = None,
    cache_control: str | None = None,
    refresh_on_no_cache: bool | None = None,
    early_recompute: float = 0.0,
    compress: bool | int | None = None,
    methods: Sequence[str] | None = None,
) -> Callable[[F], F]: ...


def cache(
    expire: Any = ONE_YEAR,
    *,
    store: Cache | None = None,
    per_user: Callable[..., Any] | None = None,
    vary: Sequence[str] | None = None,
    tags: Sequence[str] | None = None,
    shared: bool = False,
    stale_while_revalidate: Expire = 0,
    stale_if_error: Expire = 0,
    name: str | None = None,
    max_age: Expire | None = None,
    cache_control: str | None = None,
    refresh_on_no_cache: bool | None = None,
    early_recompute: float = 0.0,
    compress: bool | int | None = None,
    methods: Sequence[str] | None = None,
) -> Any:
    """Cache a FastAPI path operation's responses.

    Place it *below* the route decorator::

        @app.get("/items/{id}")
        @cache(expire=60)
        async def item(id: int): ...

    Only GET and HEAD requests (and POST, opted in with `methods=`) with a 2xx response
    are cached; the key is built from the
    endpoint's arguments (`prefix:module.function(name=value,...)`). Hits and misses carry
    `Cache-Control`, `Expires`, `ETag` and the hit/miss header; `If-None-Match` gives 304.
    A request with `Cache-Control: no-cache` or `no-store` bypasses the cache entirely.

    Args:
        expire: Seconds (int) or a timedelta; default one year. 0 means "do not store".
        store: The `Cache` to use; by default the one configured by
            `FastApiRedisCache().init(...)` or last entered, else an in-memory store.
        per_user: A FastAPI dependency (sync or async) returning the user's stable id
            (str, int or UUID). FastAPI resolves it with the endpoint's dependencies (once
            per request, shared with a `Depends` of the same callable); the id goes into
            the key, responses say `Cache-Control: private`, and
            `store.invalidate_user(id)` deletes that user's entries. If the dependency
            raises (401, 403), nothing is read or stored.
        vary: Request header names whose values go into the key (absent and empty are
            different; credential headers are hashed); responses carry `Vary` with them.
        tags: Tags for `store.invalidate_tag`, formatted from the endpoint's arguments:
            `tags=["items", "item:{id}"]`.
        shared: The response is the same for every caller. Without it (and without
            `per_user`), a request carrying `Authorization` or a cookie bypasses the cache
            and a warning is logged once per endpoint, so one user's data never reaches
            another.
        stale_while_revalidate: Seconds after expiry during which the stale entry is
            served at once while one background run refreshes it (RFC 5861).
        stale_if_error: Seconds after expiry during which the stale entry is served if
            the endpoint raises or answers 5xx (RFC 5861).
        name: The function-name part of keys (default: the function's `__name__`); give
            endpoints built by one factory distinct names.
        max_age: Browser freshness apart from the server TTL: `expire=3600, max_age=60`
            keeps the entry an hour and tells clients 60 seconds (from delivery, no `Age`);
            `max_age=0` sends `no-cache`, so clients revalidate and get 304s.
        cache_control: The whole response Cache-Control value, verbatim (for example
            `"public, s-maxage=600"`); no `Expires` or `Age` is added.
        refresh_on_no_cache: When a request says `Cache-Control: no-cache` (or `Pragma:
            no-cache`), run the endpoint and store the fresh result instead of bypassing the
            cache. Default: the store's setting (off, the seed's behaviour).
        early_recompute: XFetch's beta (Vattani et al., VLDB 2015), 0 (off) by default, 1
            usual: a hit close to expiry refreshes the entry early in the background with
            probability rising as expiry nears (sooner for endpoints that take longer to
            run), so a hot key is recomputed before it expires instead of by a stampede.
            The hit itself is served from the entry, as with stale_while_revalidate.
        compress: LZ4 compression of this endpoint's entries, over the store's
            `compress_over`: None (the default) follows the store; True compresses entries
            of 1 KiB and more, a number of bytes sets that threshold, False never
            compresses. An entry is stored compressed only when that makes it smaller;
            reading needs no setting.
        methods: The request methods cached: GET and HEAD by default; `["GET", "POST"]`
            (or `["POST"]`) also caches POST requests, for query endpoints (search,
            GraphQL) whose POST changes nothing. A POST's key adds the XXH3-128 digest of
            its raw body; it never gets a 304. Never opt in an endpoint with side effects:
            a hit skips them. See docs/decorator.md, "POST queries".
    """
    if callable(expire) and not isinstance(expire, (int, timedelta)):
        return cache()(expire)  # bare @cache
    expire_ms = ttl_ms(expire)
    compress_threshold(compress)  # a bad value fails here, not at the first request
    cached_methods(methods)

    def decorator(func: F) -> F:
        options = Options(
            expire_ms,
            per_user=per_user,
            vary=vary,
            tags=tags,
            shared=shared,
            stale_while_revalidate=stale_while_revalidate,
            stale_if_error=stale_if_error,
            name=name,
            max_age=max_age,
            cache_control=cache_control,
            refresh_on_no_cache=refresh_on_no_cache,
            early_recompute=early_recompute,
            compress=compress,
            methods=methods,
        )
        return _wrap(func, CachedEndpoint(func, options, store))

    return decorator


def _wrap(func: F, endpoint: CachedEndpoint) -> F:
    """The function FastAPI registers: `func`'s name and docs, the endpoint's signature."""
    request_param = endpoint.request_param
    response_param = endpoint.response_param
    has_user = endpoint.per_user is not None
    user_param = endpoint.user_param
    own_user = user_param != USER_PARAM  # the endpoint's own parameter: left in its kwargs
    deferred = endpoint.deferred is not None

    @functools.wraps(func)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        request = (
            kwargs.pop(REQUEST_PARAM, None) if request_param is None else kwargs.get(request_param)
        )
        sub_response = (
            kwargs.pop(RESPONSE_PARAM, None)
            if response_param is None
            else kwargs.get(response_param)
        )
        if not has_user:
            user = NO_USER
        elif own_user:
            user = kwargs.get(user_param, NO_USER)
        else:
            user = kwargs.pop(USER_PARAM, NO_USER)
        if args or not isinstance(request, Request):
            # Called directly, not by FastAPI: behave like the undecorated function.
            if endpoint.is_async:
                return await func(*args, **kwargs)
            return await run_in_threadpool(func, *args, **kwargs)
        if EARLY_SCOPE_KEY not in request.scope:  # a route not answering hits early (yet)
            adopt(endpoint, request.scope)
        if deferred:  # the dependencies a hit does not need: solved when the endpoint runs
            kwargs[PENDING_PARAM] = endpoint.pending(request, sub_response)
        return await handle(endpoint, request, sub_response, kwargs, user)

    wrapper.__signature__ = endpoint.signature  # type: ignore[attr-defined]
    wrapper.__oxcache__ = endpoint  # type: ignore[attr-defined]
    endpoint.wrapper = wrapper
    del wrapper.__wrapped__  # FastAPI must read our signature, not the original's
    return cast(F, wrapper)


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
