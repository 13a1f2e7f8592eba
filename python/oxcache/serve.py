"""Answering from the cache: a request's fresh hit, its 304, and the stale copy served while
a refresh runs (RFC 5861); anything else is a miss, handed to `fill`. `handle` is the path
of every request FastAPI calls the endpoint for; `answer_early` is `CachedRoute`'s, before
FastAPI solves the parameters."""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import MutableMapping
from typing import Any

from fastapi import Response
from starlette.requests import Request

from oxcache._core import Entry, EntryHead, KeyBuildError, if_none_match, secret_digest_bytes
from oxcache.early import EARLY_SCOPE_KEY, MEMO_MAX_REQUEST, EarlyState, RouteMemo
from oxcache.endpoint import CachedEndpoint
from oxcache.fill import miss, refresh_later
from oxcache.http import CACHED_METHODS, Replay, request_directives, scan_request
from oxcache.keys import SECRET_HEADERS, call_parts, normalize_user_id
from oxcache.responses import CachedResponse
from oxcache.store import Cache, default_store

__all__ = ["NO_USER", "answer_early", "handle", "lookup", "replay_for", "xfetch"]

logger = logging.getLogger("oxcache")

#: `handle(user=...)` for an endpoint without `per_user`.
NO_USER: Any = object()


def xfetch(now_ms: int, expires_ms: int, run_s: float, beta: float) -> bool:
    """XFetch (Vattani, Chierichetti, Lowenstein, VLDB 2015): recompute early when
    `now - delta * beta * ln(U) >= expiry`, U uniform in (0, 1], delta the run time."""
    return now_ms - run_s * 1000.0 * beta * math.log(1.0 - random.random()) >= expires_ms


def replay_for(
    endpoint: CachedEndpoint, store: Cache, condition: bytes | None, private: bool
) -> Replay:
    """How responses to a request with `If-None-Match: condition` are marked."""
    options = endpoint.options
    return Replay(
        None if condition is None else condition.decode("latin-1"),
        hit_header=store.hit_header,
        weak=not store.strong_etag,
        private=private,
        vary=options.vary_header,
        directives=options.directives,
        browser=options.browser_max_age,
        control=options.control,
    )


async def lookup(
    store: Cache, key: str, replay: Replay, now_ms: int, max_age_ms: int | None
) -> CachedResponse | Entry | None:
    """The 304 for a request whose `If-None-Match` matches the entry's ETag (read from the
    entry's head only), else the entry under `key` (None when there is none)."""
    if replay.condition is not None:
        head: EntryHead | Entry | None = await store.entries.read_head(key)
        if (
            head is not None
            and head.expires_ms > now_ms
            and (max_age_ms is None or now_ms - head.created_ms <= max_age_ms)
            and if_none_match(replay.condition, head.etag)
        ):
            logger.info("KEY_FOUND_IN_CACHE: key=%s", key)
            store.counters.hits += 1
            return CachedResponse(304, replay.headers(head, now_ms, hit=True), b"")
    return await store.entries.read(key)


async def handle(
    endpoint: CachedEndpoint,
    request: Request,
    sub_response: Response | None,
    kwargs: dict[str, Any],
    user: Any = NO_USER,
) -> Any:
    """Answer one request for `endpoint`, called with `kwargs`: from the cache when it may
    (a fresh hit, a 304, a stale copy within stale-while-revalidate), else by a miss."""
    store = endpoint.store or default_store()
    if request.scope["method"] not in CACHED_METHODS or endpoint.ttl_ms <= 0 or not store.enabled:
        return await endpoint.call(kwargs)
    cache_control, pragma, condition, credentials, varied = scan_request(
        request.scope, endpoint.vary_names
    )
    directives = request_directives(cache_control, pragma)
    force = False
    if directives is not None and (directives.no_store or directives.no_cache):
        refresh = endpoint.options.refresh_on_no_cache
        if refresh is None:
            refresh = store.refresh_on_no_cache
        if directives.no_store or not refresh:
            return await endpoint.bypass(store, kwargs)  # the seed's behaviour: no caching
        force = True  # run the endpoint and store its fresh result (opt-in)

    uid: str | None = None
    if endpoint.per_user is not None:
        try:
            uid = normalize_user_id(user)
        except TypeError as exc:
            endpoint.warn_once(store, "user", "%s is served uncached: %s", endpoint.name, exc)
            return await endpoint.bypass(store, kwargs)
    elif credentials is not None and not endpoint.shared:
        endpoint.warn_once(
            store,
            "credentials",
            "%s is served uncached to requests with Authorization or Cookie: its response "
            "may depend on the user. Use @cache(per_user=<dependency returning the user "
            "id>) to cache it per user, or @cache(shared=True) if it is the same for everyone.",
            endpoint.name,
        )
        return await endpoint.bypass(store, kwargs)

    try:
        key = endpoint.keys.key(
            store.keyspace, kwargs, call_parts(uid, endpoint.vary_names, varied)
        )
    except KeyBuildError as exc:
        endpoint.warn_once(store, "key", "%s is served uncached: %s", endpoint.name, exc)
        return await endpoint.bypass(store, kwargs)

    early: EarlyState | None = request.scope.get(EARLY_SCOPE_KEY)
    if early is not None and (early.memo.endpoint is not endpoint or uid is not None):
        early = None
    if early is not None:
        early.learn(store, key)
    now_ms = time.time_ns() // 1_000_000
    max_age_ms = (
        None if directives is None or directives.max_age is None else directives.max_age * 1000
    )
    replay = replay_for(endpoint, store, condition, uid is not None)
    if force:
        return await miss(endpoint, store, request, sub_response, kwargs, key, uid, replay, None)
    refresh_due: bool | None = None  # XFetch's draw, when CachedRoute made it
    if early is not None and early.read_key == key and early.store is store:
        # `CachedRoute` read this entry already, and left the request to this path.
        entry, read_at, refresh_due = early.entry, early.read_at, early.refresh_due
    else:
        read_at = time.monotonic()
        found = await lookup(store, key, replay, now_ms, max_age_ms)
        if isinstance(found, CachedResponse):
            return found
        entry = found
    if entry is not None:
        if entry.expires_ms > now_ms and (
            max_age_ms is None or now_ms - entry.created_ms <= max_age_ms
        ):
            logger.info("KEY_FOUND_IN_CACHE: key=%s", key)
            store.counters.hits += 1
            response = replay.replay(entry, now_ms)
            if refresh_due is None:
                beta = endpoint.options.beta
                refresh_due = bool(beta) and xfetch(now_ms, entry.expires_ms, endpoint.run_s, beta)
            if refresh_due:
                refresh_later(endpoint, store, request, kwargs, key, uid, response)
            return response
        if (
            max_age_ms is None
            and entry.expires_ms <= now_ms < entry.expires_ms + endpoint.options.swr_ms
        ):
            # RFC 5861 stale-while-revalidate: serve at once, refresh after the response
            # (as a background task, while the request's dependencies are still open).
            store.counters.stale += 1
            logger.info("KEY_FOUND_IN_CACHE: key=%s (stale, revalidating)", key)
            response = replay.replay(entry, now_ms)
            refresh_later(endpoint, store, request, kwargs, key, uid, response)
            return response
    return await miss(
        endpoint, store, request, sub_response, kwargs, key, uid, replay, entry, read_at
    )


async def answer_early(
    endpoint: CachedEndpoint, scope: MutableMapping[str, Any], memo: RouteMemo
) -> Response | None:
    """`CachedRoute`'s hit before FastAPI solves the parameters: the response when this raw
    request's key is known and its entry is fresh (or a 304), else None (after leaving what
    it read in the scope for `handle`)."""
    if scope["method"] not in CACHED_METHODS or endpoint.ttl_ms <= 0:
        return None
    if not (endpoint.store or default_store()).enabled:
        return None  # `handle` runs the endpoint
    vary_names = endpoint.vary_names
    cache_control, pragma, condition, credentials, varied = scan_request(scope, vary_names)
    if cache_control is not None or pragma is not None:
        return None  # request directives: `handle` applies them
    if credentials is not None and not endpoint.shared:
        return None  # `handle` decides (served uncached, with a warning)
    # Everything such a route's key depends on (FastAPI takes path parameters from the
    # path after root_path); credential headers only as their hash, as in keys.
    path, query = scope["path"], scope["query_string"]
    size = len(path) + len(query)
    signature: tuple[Any, ...]
    if varied is None:
        signature = (scope.get("root_path", ""), path, query)
    else:
        parts: list[bytes | str | None] = []
        for name in vary_names:
            raw = varied.get(name)
            if raw is not None:
                size += len(raw)
                if name in SECRET_HEADERS:
                    parts.append(secret_digest_bytes(raw))
                    continue
            parts.append(raw)
        signature = (scope.get("root_path", ""), path, query, *parts)
    state = EarlyState(memo, signature, learn=size <= MEMO_MAX_REQUEST)
    scope[EARLY_SCOPE_KEY] = state
    known = memo.keys.get(signature)
    if known is None:
        return None
    store, key = known
    if store is not (endpoint.store or default_store()):
        return None  # the store was replaced since: learn again
    now_ms = time.time_ns() // 1_000_000
    replay = replay_for(endpoint, store, condition, False)
    read_at = time.monotonic()
    found = await lookup(store, key, replay, now_ms, None)
    if isinstance(found, CachedResponse):
        return found
    if found is not None and found.expires_ms > now_ms:
        beta = endpoint.options.beta
        if not (beta and xfetch(now_ms, found.expires_ms, endpoint.run_s, beta)):
            logger.info("KEY_FOUND_IN_CACHE: key=%s", key)
            store.counters.hits += 1
            return replay.replay(found, now_ms)
        state.refresh_due = True  # `handle` refreshes it: the draw is made once
    # Missing, stale or due for an early refresh: FastAPI's path, without reading again.
    state.store, state.read_key, state.entry, state.read_at = store, key, found, read_at
    return None
