"""Answering from the cache: a request's fresh hit, its 304, and the stale copy served while
a refresh runs (RFC 5861); anything else is a miss, handed to `fill`. `handle` is the path
of every request FastAPI calls the endpoint for; `answer_early` is `CachedRoute`'s, before
FastAPI solves the parameters."""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fastapi import Response
from starlette.requests import Request

from oxcache import body, observe
from oxcache._core import Entry, EntryHead, KeyBuildError, if_none_match, secret_digest_bytes
from oxcache.directives import own_control, stale_windows, uncovered
from oxcache.early import EARLY_SCOPE_KEY, MEMO_MAX_REQUEST, EarlyState, RouteMemo
from oxcache.endpoint import CachedEndpoint
from oxcache.fill import miss, refresh_later
from oxcache.http import CACHED_METHODS, Replay, request_directives, scan_request
from oxcache.keys import SECRET_HEADERS, normalize_user_id
from oxcache.responses import CachedResponse
from oxcache.status import (
    BYPASS,
    CREDENTIALS,
    DISABLED,
    EXPIRE,
    KEY,
    METHOD,
    REQUEST,
    STALE,
    USER,
    forwarded,
    mark,
)
from oxcache.store import Cache, default_store

__all__ = ["NO_USER", "answer_early", "bypass", "handle", "lookup", "replay_for", "xfetch"]

logger = logging.getLogger("oxcache")

#: `handle(user=...)` for an endpoint without `per_user`.
NO_USER: Any = object()


def xfetch(now_ms: int, expires_ms: int, run_s: float, beta: float) -> bool:
    """XFetch (Vattani, Chierichetti, Lowenstein, VLDB 2015): recompute early when
    `now - delta * beta * ln(U) >= expiry`, U uniform in (0, 1], delta the run time."""
    return now_ms - run_s * 1000.0 * beta * math.log(1.0 - random.random()) >= expires_ms


def replay_for(
    endpoint: CachedEndpoint,
    store: Cache,
    condition: bytes | None,
    private: bool,
    names: tuple[bytes, ...] = (),
) -> Replay:
    """How responses to a request with `If-None-Match: condition`, whose key holds the
    varying headers `names`, are marked (for requests without a condition, the same
    Replay while the store and the varying headers stay the same)."""
    if condition is None:
        memo = endpoint.replay_memo
        if memo is not None and memo[0] is store and memo[1] is private and memo[2] is names:
            replay: Replay = memo[3]
            return replay
    options = endpoint.options
    made = Replay(
        None if condition is None else condition.decode("latin-1"),
        hit_header=store.hit_header,
        weak=not store.strong_etag,
        private=private,
        vary=options.vary_header,
        directives=options.directives,
        browser=options.browser_max_age,
        control=options.control,
        names=names,
        status=store.status_name,
    )
    if condition is None:
        endpoint.replay_memo = (store, private, names, made)
    return made


async def lookup(
    store: Cache,
    key: str,
    replay: Replay,
    now_ms: int,
    max_age_ms: int | None,
    heads: bool = True,
    generations: tuple[str, ...] = (),
) -> CachedResponse | Entry | None:
    """The 304 for a request whose `If-None-Match` matches the entry's ETag (read from the
    entry's head only, when `heads`: the endpoint's stored responses are known to carry no
    header a 304 must repeat), else the entry under `key` (None when there is none, or when
    it was built under other tokens of `generations` than those storage has now)."""
    if replay.condition is not None and heads:
        head: EntryHead | Entry | None = await store.entries.read_head(key, generations)
        if (
            head is not None
            and head.expires_ms > now_ms
            and (max_age_ms is None or now_ms - head.created_ms <= max_age_ms)
            and if_none_match(replay.condition, head.etag)
        ):
            logger.info("KEY_FOUND_IN_CACHE: key=%s", key)
            store.counters.hits += 1
            return CachedResponse(304, replay.headers(head, now_ms, hit=True), b"")
    return await store.entries.read(key, generations)


async def bypass(
    endpoint: CachedEndpoint,
    store: Cache,
    kwargs: dict[str, Any],
    sub_response: Response | None,
    fwd: bytes,
    detail: str | None = None,
) -> Any:
    """Serve a request without the cache, its Cache-Status saying why (`fwd`, `detail`)."""
    result = await endpoint.bypass(store, kwargs, detail)
    name = store.status_name
    return mark(result, sub_response, None if name is None else forwarded(name, fwd, detail=detail))


def _usable(
    endpoint: CachedEndpoint, replay: Replay, entry: Any, now_ms: int
) -> CachedResponse | None:
    """`entry` as this request's hit, or None when its own `Vary` names a header the key
    did not hold: then the endpoint learns it, and the request is a miss."""
    if endpoint.own_headers is None:
        endpoint.saw_entry(entry.headers)
    response = replay.replay(entry, now_ms)
    if response is None:
        _refused(endpoint, replay, entry)
    return response


def _refused(endpoint: CachedEndpoint, replay: Replay, entry: Any) -> None:
    """The entry's `Vary` names headers the key did not hold: key them from now on."""
    endpoint.learn_vary(uncovered(entry.headers, replay.names) or ())


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
    scope = request.scope
    name = store.status_name
    if scope["method"] not in endpoint.methods:
        result = await endpoint.call(kwargs)
        return mark(result, sub_response, None if name is None else forwarded(name, METHOD))
    if not store.enabled:
        result = await endpoint.call(kwargs)
        status = None if name is None else forwarded(name, BYPASS, detail=DISABLED)
        return mark(result, sub_response, status)
    if store.observers and not observe.active():
        # Observed: this request again, timed and reported (one truth test when not).
        return await observe.run(
            store.observers, endpoint, handle(endpoint, request, sub_response, kwargs, user)
        )
    if endpoint.ttl_ms <= 0:
        return await bypass(endpoint, store, kwargs, sub_response, BYPASS, EXPIRE)
    names = endpoint.vary_names
    cache_control, pragma, condition, credentials, varied, host = scan_request(scope, names)
    directives = (
        None
        if cache_control is None and pragma is None
        else request_directives(cache_control, pragma)
    )
    force = False
    if directives is not None and (directives.no_store or directives.no_cache):
        refresh = endpoint.options.refresh_on_no_cache
        if refresh is None:
            refresh = store.refresh_on_no_cache
        if directives.no_store or not refresh:
            # The seed's behaviour: no caching at all.
            reason = "no-store" if directives.no_store else "no-cache"
            return await bypass(endpoint, store, kwargs, sub_response, REQUEST, reason)
        force = True  # run the endpoint and store its fresh result (opt-in)

    uid: str | None = None
    if endpoint.per_user is not None:
        try:
            uid = normalize_user_id(user)
        except TypeError as exc:
            endpoint.warn_once(store, "user", "%s is served uncached: %s", endpoint.name, exc)
            return await bypass(endpoint, store, kwargs, sub_response, BYPASS, USER)
    elif credentials is not None and not endpoint.shared:
        endpoint.warn_once(
            store,
            "credentials",
            "%s is served uncached to requests with Authorization or Cookie: its response "
            "may depend on the user. Use @cache(per_user=<dependency returning the user "
            "id>) to cache it per user, or @cache(shared=True) if it is the same for everyone.",
            endpoint.name,
        )
        return await bypass(endpoint, store, kwargs, sub_response, BYPASS, CREDENTIALS)
    if endpoint.keys_body and scope["method"] == "POST":  # opted in: keyed by its body
        if not await body.read(request):
            endpoint.warn_once(
                store,
                "body",
                "%s is served uncached to POST requests whose body FastAPI parsed as a form "
                "(it cannot be read again to key the request)",
                endpoint.name,
            )
            return await bypass(endpoint, store, kwargs, sub_response, BYPASS, body.UNREADABLE)
        condition = None  # FastAPI ignores If-None-Match on a POST: no 304 from the cache

    deferred = endpoint.deferred
    if deferred is not None and deferred.keyed(store.keyspace.ignored):
        kwargs = await endpoint.solve(kwargs)  # this store keys their values
    try:
        key = endpoint.request_key(store.keyspace, kwargs, uid, names, varied, scope, host)
    except KeyBuildError as exc:
        endpoint.warn_once(store, "key", "%s is served uncached: %s", endpoint.name, exc)
        return await bypass(endpoint, store, kwargs, sub_response, BYPASS, KEY)

    generations = endpoint.generations(store.keyspace, kwargs, uid, key)
    early: EarlyState | None = scope.get(EARLY_SCOPE_KEY)
    if early is not None and (early.memo.endpoint is not endpoint or uid != early.user):
        early = None  # the raw request's signature does not hold this key's user
    if early is not None:
        early.learn(store, key, names, generations)
    now_ms = time.time_ns() // 1_000_000
    max_age_ms = (
        None if directives is None or directives.max_age is None else directives.max_age * 1000
    )
    replay = replay_for(endpoint, store, condition, uid is not None, names)
    if force:
        replay = replay.forwarded(REQUEST)
        request_args = (endpoint, store, request, sub_response, kwargs, key, uid, replay)
        return await miss(*request_args, None, None, generations)
    refresh_due: bool | None = None  # XFetch's draw, when CachedRoute made it
    if early is not None and early.read_key == key and early.store is store:
        # `CachedRoute` read this entry already, and left the request to this path.
        entry, read_at, refresh_due = early.entry, early.read_at, early.refresh_due
    else:
        read_at = time.monotonic()
        heads = endpoint.own_headers is False
        found = await lookup(store, key, replay, now_ms, max_age_ms, heads, generations)
        if isinstance(found, CachedResponse):
            return found
        entry = found
    if entry is not None:
        if entry.expires_ms > now_ms and (
            max_age_ms is None or now_ms - entry.created_ms <= max_age_ms
        ):
            if endpoint.own_headers is None:
                endpoint.saw_entry(entry.headers)
            response = replay.replay(entry, now_ms)
            if response is None:
                _refused(endpoint, replay, entry)
                entry = None  # stored for other varying headers: a miss
            else:
                logger.info("KEY_FOUND_IN_CACHE: key=%s", key)
                store.counters.hits += 1
                if refresh_due is None:
                    beta = endpoint.options.beta
                    refresh_due = bool(beta) and xfetch(
                        now_ms, entry.expires_ms, endpoint.run_s, beta
                    )
                if refresh_due:
                    refresh_later(endpoint, store, request, kwargs, key, uid, response)
                return response
        elif max_age_ms is None:
            options = endpoint.options
            swr_ms = stale_windows(
                own_control(entry.headers), options.swr_ms, options.sie_ms, uid is not None
            )[0]
            if now_ms < entry.expires_ms + swr_ms:
                # RFC 5861 stale-while-revalidate: serve at once, refresh after the response
                # (as a background task, while the request's dependencies are still open).
                response = _usable(endpoint, replay, entry, now_ms)
                if response is not None:
                    store.counters.stale += 1
                    observe.note(observe.STALE, observe.STALE_WHILE_REVALIDATE)
                    logger.info("KEY_FOUND_IN_CACHE: key=%s (stale, revalidating)", key)
                    refresh_later(endpoint, store, request, kwargs, key, uid, response)
                    return response
                entry = None
            else:
                replay = replay.forwarded(STALE)
        else:  # too old for the request's max-age, or stale
            replay = replay.forwarded(REQUEST if entry.expires_ms > now_ms else STALE)
    request_args = (endpoint, store, request, sub_response, kwargs, key, uid, replay)
    return await miss(*request_args, entry, read_at, generations)


async def answer_early(
    endpoint: CachedEndpoint,
    scope: MutableMapping[str, Any],
    memo: RouteMemo,
    solve: Callable[[Cache], Awaitable[tuple[str | None, tuple[Any, ...]] | None]] | None = None,
) -> Response | None:
    """`CachedRoute`'s hit before FastAPI solves the parameters: the response when this raw
    request's key is known and its entry is fresh (or a 304), else None (after leaving what
    it read in the scope for `handle`). For a route with dependencies, `solve` runs them
    once the request may be answered early: the user id and the values the key holds, which
    the raw request's signature adds (None: not answered early)."""
    if scope["method"] not in CACHED_METHODS or endpoint.ttl_ms <= 0:
        return None
    own = endpoint.store or default_store()
    if not own.enabled:
        return None  # `handle` runs the endpoint
    if own.observers and not observe.active():
        answer = answer_early(endpoint, scope, memo, solve)
        return await observe.run(own.observers, endpoint, answer)
    names = endpoint.vary_names
    cache_control, pragma, condition, credentials, varied, host = scan_request(scope, names)
    if cache_control is not None or pragma is not None:
        return None  # request directives: `handle` applies them
    if credentials is not None and not endpoint.shared and endpoint.per_user is None:
        return None  # `handle` decides (served uncached, with a warning)
    user = None
    if solve is not None:
        solved = await solve(own)  # the guards: a refusal raises here, as in FastAPI
        if solved is None:
            return None
        user, parts = solved
    # Everything such a route's key can depend on: the origin (scheme, Host, root path),
    # the path (FastAPI takes path parameters from it), the whole query string, and the
    # varying headers (credential headers only as their hash, as in keys).
    path, query = scope["path"], scope["query_string"]
    size = len(path) + len(query) + (0 if host is None else len(host))
    origin = host if host is not None else scope.get("server")
    signature: tuple[Any, ...]
    if varied is None:
        signature = (scope.get("scheme"), origin, scope.get("root_path", ""), path, query)
    else:
        varying: list[bytes | str | None] = []
        for name in names:
            raw = varied.get(name)
            if raw is not None:
                size += len(raw)
                if name in SECRET_HEADERS:
                    varying.append(secret_digest_bytes(raw))
                    continue
            varying.append(raw)
        base = (scope.get("scheme"), origin, scope.get("root_path", ""), path, query)
        signature = (*base, *varying)
    if solve is not None:
        signature = (*signature, parts)
    if names is not memo.names:
        memo.check(names)  # keys learned under other varying headers are forgotten
    state = EarlyState(memo, signature, names, learn=size <= MEMO_MAX_REQUEST, user=user)
    scope[EARLY_SCOPE_KEY] = state
    known = memo.keys.get(signature)
    if known is None:
        return None
    store, key, generations = known
    if store is not own:
        return None  # the store was replaced since: learn again
    now_ms = time.time_ns() // 1_000_000
    replay = replay_for(endpoint, store, condition, user is not None, names)
    read_at = time.monotonic()
    heads = endpoint.own_headers is False
    found = await lookup(store, key, replay, now_ms, None, heads, generations)
    if isinstance(found, CachedResponse):
        return found
    if found is not None and found.expires_ms > now_ms:
        beta = endpoint.options.beta
        if not (beta and xfetch(now_ms, found.expires_ms, endpoint.run_s, beta)):
            if endpoint.own_headers is None:
                endpoint.saw_entry(found.headers)
            response = replay.replay(found, now_ms)
            if response is not None:
                logger.info("KEY_FOUND_IN_CACHE: key=%s", key)
                store.counters.hits += 1
                return response
            _refused(endpoint, replay, found)
            return None  # `handle` misses with the key that holds the learned header
        state.refresh_due = True  # `handle` refreshes it: the draw is made once
    # Missing, stale or due for an early refresh: FastAPI's path, without reading again.
    state.store, state.read_key, state.entry, state.read_at = store, key, found, read_at
    return None
