"""Filling the cache on a miss: one endpoint run for all the concurrent misses of a key in
this process (and, with `lock_timeout`, across workers), the response rendered as FastAPI
would, stored when it may be, and stale-if-error and background refreshes. Every run takes
its lease before it reads its data (`Entries.lease`) and stores only under it, so what it
read before an invalidation is never stored after."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any

from fastapi import Response
from starlette.background import BackgroundTask
from starlette.requests import Request

from oxcache import observe
from oxcache._core import encode_entry, etag, if_none_match
from oxcache.directives import judge, own_control, stale_windows, with_private
from oxcache.endpoint import CachedEndpoint
from oxcache.entries import Lease
from oxcache.http import COMPUTED_HEADERS, FRESHNESS_HEADERS, Replay, scan_request
from oxcache.responses import render
from oxcache.status import INVALIDATED, STALE, STREAMING, TAGS, UNAVAILABLE, forwarded, mark
from oxcache.store import Cache

__all__ = ["Stored", "miss", "refresh", "refresh_later", "run", "store_response"]

logger = logging.getLogger("oxcache")


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class Stored:
    """What a miss stored, shaped like a decoded `Entry` for the requests that waited."""

    __slots__ = (
        "body",
        "created_ms",
        "etag",
        "expires_ms",
        "headers",
        "refused",
        "status",
        "written",
    )

    def __init__(
        self,
        status: int,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        etag: str,
        created_ms: int,
        expires_ms: int,
    ) -> None:
        self.status = status
        self.headers = headers
        self.body = body
        self.etag = etag
        self.created_ms = created_ms
        self.expires_ms = expires_ms
        #: Whether the store took it (the waiting requests get it either way), and whether
        #: it refused it because an invalidation deleted the run's lease meanwhile.
        self.written = True
        self.refused = False


def _shared_hit(store: Cache, replay: Replay, entry: Any, collapsed: bool = True) -> Any:
    """A run's entry as the answer of a request that waited for it (None when the entry's
    `Vary` names a header this request's key did not hold: it runs the endpoint itself)."""
    name = store.status_name
    status = None
    if collapsed and name is not None:
        status = forwarded(name, replay.fwd, collapsed=True)
    response = replay.replay(entry, _now_ms(), status)
    if response is not None:
        store.counters.hits += 1
        store.counters.coalesced += 1
        if collapsed:
            observe.note(observe.HIT, observe.COALESCED)
    return response


async def miss(
    endpoint: CachedEndpoint,
    store: Cache,
    request: Request,
    sub_response: Response | None,
    kwargs: dict[str, Any],
    key: str,
    uid: str | None,
    replay: Replay,
    stale: Any,
    read_at: float | None = None,
    generations: tuple[str, ...] = (),
) -> Any:
    """Run the endpoint once for all concurrent misses of `key` in this process (and, with
    `lock_timeout`, across workers), store the result, and answer.

    `read_at` is when this request started reading the store: a run of `key` that stored
    its entry after that raced our read, so the entry is read again instead of running the
    endpoint a second time. `generations` are those of the entry's indexes: the run's
    lease holds their tokens, which stamp what it stores."""
    flights = store.flights
    found = await _landed(store, key, replay, read_at, generations)
    if found is not None:
        return found
    args = (endpoint, store, request, sub_response, kwargs, key, uid, replay, stale)
    # The lease first: a run in progress is joined only if it read under the same
    # invalidations as this request would (see `Flights`).
    finished = store.invalidations.finished
    lease = await _lease(endpoint, store, key, generations)
    # A run that was in progress may have stored its entry and ended while the lease was
    # read: its entry, not a second run (on a loaded machine this window is wide).
    found = await _landed(store, key, replay, read_at, generations)
    if found is not None:
        return found
    basis = (None if lease is None else lease.basis, finished)
    flight = flights.running(key, basis)
    if flight is not None:
        shared = await asyncio.shield(flight)
        found = None if shared is None else _shared_hit(store, replay, shared)
        if found is not None:
            return found
        # The run we waited for failed, was not cacheable, or varies on a header our key
        # does not hold: run it as the route would.
        return (await run(*args, lease))[0]
    flight = flights.start(key, basis)
    stored: Any = None
    token = b""
    try:
        if store.flights.lock_ms > 0 and lease is not None:
            token = uuid.uuid4().bytes + lease.mark
            if not await flights.acquire(key, token):
                token = b""
                # Another worker is computing: wait for its entry if it computes under
                # the lease we found (else it read its data before an invalidation that
                # we saw, and its entry will never be stored: run it ourselves).
                holder = await flights.holder(key)
                if holder is None or holder[16:] == lease.mark:
                    stored = await _wait_for_entry(store, key, generations)
                    found = None if stored is None else _shared_hit(store, replay, stored)
                    if found is not None:
                        return found
        response, stored = await run(*args, lease)
        return response
    finally:
        flights.finish(key, flight, stored)
        if token:
            await flights.release(key, token)


async def _landed(
    store: Cache, key: str, replay: Replay, read_at: float | None, generations: tuple[str, ...]
) -> Any:
    """The entry a run of `key` stored since `read_at` (this request's read), as this
    request's answer; None if none landed since, or it is gone, expired or refused."""
    if read_at is None or not store.flights.landed_since(key, read_at):
        return None
    entry = await store.entries.read(key, generations)
    if entry is None or entry.expires_ms <= _now_ms():
        return None
    return _shared_hit(store, replay, entry, collapsed=False)


async def _lease(
    endpoint: CachedEndpoint, store: Cache, key: str, generations: tuple[str, ...]
) -> Lease | None:
    """The lease a run of `key` stores under (None: storage could not give one, and the
    run stores nothing)."""
    options = endpoint.options
    return await store.entries.lease(key, generations, options.ttl_ms + options.stale_ms)


async def _wait_for_entry(store: Cache, key: str, generations: tuple[str, ...]) -> Any:
    """Poll for the entry another worker is computing, at most `lock_timeout`."""
    deadline = time.monotonic() + store.flights.lock_ms / 1000
    delay = 0.005
    while time.monotonic() < deadline:
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.05)
        entry = await store.entries.read(key, generations)
        if entry is not None and entry.expires_ms > _now_ms():
            return entry
    return None


async def run(
    endpoint: CachedEndpoint,
    store: Cache,
    request: Request,
    sub_response: Response | None,
    kwargs: dict[str, Any],
    key: str,
    uid: str | None,
    replay: Replay,
    stale: Any,
    lease: Lease | None,
) -> tuple[Any, Stored | None]:
    """Run the endpoint, store a cacheable result under `lease` (None: not written); serve
    `stale` if it fails and stale-if-error allows. Returns the response and what was
    stored (or None)."""
    store.counters.misses += 1
    observe.note(observe.MISS)
    per_user = uid is not None
    try:
        result = await endpoint.call(kwargs)
    except Exception as exc:
        if _stale_if_error(endpoint, stale, exc, per_user):
            served = _serve_stale(store, replay, stale)
            if served is not None:
                logger.warning(
                    "%s failed (%s); serving the stale entry %s (stale-if-error)",
                    endpoint.name,
                    type(exc).__name__,
                    key,
                )
                return served, None
        raise
    try:
        response = await render(request, result, sub_response, endpoint.func, endpoint.is_async)
    except Exception as exc:
        # The uncached route would fail the same way; nothing is stored.
        logger.info("FAILED_TO_CACHE_KEY: key=%s (%s)", key, type(exc).__name__)
        raise
    if response.status_code >= 500 and _stale_if_error(endpoint, stale, None, per_user):
        served = _serve_stale(store, replay, stale)
        if served is not None:
            return served, None
    stored = await store_response(endpoint, store, response, kwargs, key, uid, request, lease)
    name = store.status_name
    if isinstance(stored, str):
        observe.note(observe.MISS, stored)  # why it was not stored
        status = None if name is None else forwarded(name, replay.fwd, detail=stored)
        return mark(response, None, status), None
    if not stored.written:
        observe.note(observe.MISS, UNAVAILABLE)
    status = None
    if name is not None:
        written = stored.written
        detail = None if written else INVALIDATED if stored.refused else UNAVAILABLE
        status = forwarded(name, replay.fwd, stored=written, detail=detail)
    own = any(n == b"cache-control" for n, _ in stored.headers)
    created = stored.created_ms
    if replay.condition is not None and if_none_match(replay.condition, stored.etag):
        return replay.replay(stored, created, status, False, own), stored
    # The miss sends what a hit will: the stored headers and the cache's own; the response
    # object stays (a background task the endpoint attached runs after it).
    length = [(n, v) for n, v in response.raw_headers if n == b"content-length"]
    cache = replay.headers(stored, created, False, own, status)
    response.raw_headers = length + stored.headers + cache
    return response, stored


def _serve_stale(store: Cache, replay: Replay, stale: Any) -> Any:
    """The stale entry served because the endpoint failed (RFC 5861 stale-if-error)."""
    now_ms = _now_ms()
    name = store.status_name
    status = None
    if name is not None:
        ttl_s = (stale.expires_ms - now_ms) // 1000
        status = forwarded(name, STALE, ttl_s=ttl_s, detail="stale-if-error")
    served = replay.replay(stale, now_ms, status)
    if served is not None:
        store.counters.stale += 1
        observe.note(observe.STALE, observe.STALE_IF_ERROR)
    return served


def _stale_if_error(
    endpoint: CachedEndpoint, stale: Any, exc: Exception | None, per_user: bool
) -> bool:
    if stale is None:
        return False
    options = endpoint.options
    sie_ms = stale_windows(own_control(stale.headers), options.swr_ms, options.sie_ms, per_user)[1]
    if not sie_ms:
        return False
    if exc is not None and getattr(exc, "status_code", 500) < 500:
        return False  # an HTTPException(404) is an answer, not an error
    return bool(_now_ms() < stale.expires_ms + sie_ms)


async def store_response(
    endpoint: CachedEndpoint,
    store: Cache,
    response: Response,
    kwargs: dict[str, Any],
    key: str,
    uid: str | None,
    request: Request,
    lease: Lease | None,
) -> Stored | str:
    """Store a rendered response if its own headers allow it (`directives.judge`): what was
    stored, or why not (a Cache-Status `detail`). A response whose `Vary` names a header
    `key` does not hold is stored under the key that holds it, which the endpoint learns.
    It is written under `lease`, taken before the endpoint ran (None, or a lease of another
    key: not written), so nothing read before an invalidation is written after it."""
    rendered = getattr(response, "body", None)
    if not isinstance(rendered, bytes):
        endpoint.warn_once(
            store,
            "stream",
            "%s returned a %s, which is never cached (its body is not known in advance)",
            endpoint.name,
            type(response).__name__,
        )
        return STREAMING
    now_ms = _now_ms()
    per_user = uid is not None
    verdict = judge(response.status_code, response.raw_headers, per_user=per_user, now_ms=now_ms)
    if verdict.reason is not None:
        return verdict.reason
    space = store.keyspace
    if verdict.vary:
        endpoint.learn_vary(verdict.vary)
        names = endpoint.vary_names
        scan = scan_request(request.scope, names)
        learned = endpoint.request_key(space, kwargs, uid, names, scan[4], request.scope, scan[5])
        if learned != key:
            key = learned
            if lease is not None:
                # The run's lease is the old key's: take one for the key that holds the
                # learned header, and write only if no invalidation of the entry's indexes
                # (its call's variants, its user, its tags) came since the run's lease.
                again = await _lease(endpoint, store, key, endpoint.generations(space, kwargs, uid))
                lease = again if again is not None and again.stamp == lease.stamp else None
    try:
        indexes = endpoint.indexes(space, kwargs, uid)
    except Exception as exc:  # a tag that cannot be formatted from these arguments
        logger.info("FAILED_TO_CACHE_KEY: key=%s (tags: %s)", key, exc)
        return TAGS
    options = endpoint.options
    # The endpoint's own Cache-Control is kept, unless `@cache` sets the header itself.
    own = verdict.control if options.control is None and options.browser_max_age is None else None
    skip = COMPUTED_HEADERS if own is not None else COMPUTED_HEADERS | FRESHNESS_HEADERS
    hit_header = store.hit_header
    stored_headers = [(n, v) for n, v in response.raw_headers if n not in skip and n != hit_header]
    if own is not None and per_user and not own.private:
        stored_headers = with_private(stored_headers)
    endpoint.saw_entry(stored_headers)
    lifetime_ms = options.ttl_ms
    if verdict.lifetime_ms is not None:  # the endpoint's own, when shorter (directives.judge)
        lifetime_ms = min(lifetime_ms, verdict.lifetime_ms)
    expires_ms = now_ms + lifetime_ms
    stored = Stored(
        response.status_code, stored_headers, rendered, etag(rendered), now_ms, expires_ms
    )
    stored.written = False
    if lease is not None:
        data = encode_entry(
            response.status_code, stored_headers, rendered, now_ms, expires_ms, lease.stamp
        )
        # Kept past its freshness for as long as a stale copy may still be served.
        keep_ms = lifetime_ms + max(stale_windows(own, options.swr_ms, options.sie_ms, per_user))
        written = await store.entries.write(
            key, data, keep_ms, indexes, options.compress_over, lease
        )
        stored.written = written
        stored.refused = not written and store.health.healthy
    return stored


def refresh_later(
    endpoint: CachedEndpoint,
    store: Cache,
    request: Request,
    kwargs: dict[str, Any],
    key: str,
    uid: str | None,
    response: Any,
) -> None:
    """Refresh `key` after `response` is sent, unless a refresh of it is running."""
    if store.flights.begin_refresh(key):
        response.background = BackgroundTask(refresh, endpoint, store, request, kwargs, key, uid)


async def refresh(
    endpoint: CachedEndpoint,
    store: Cache,
    request: Request,
    kwargs: dict[str, Any],
    key: str,
    uid: str | None,
) -> None:
    """Background revalidation of a stale entry (after its stale copy was sent)."""
    try:
        generations = endpoint.generations(store.keyspace, kwargs, uid)
        lease = await _lease(endpoint, store, key, generations)
        fresh = dict(kwargs)
        sub_response = Response()
        del sub_response.headers["content-length"]
        sub_response.status_code = None  # type: ignore[assignment]
        if endpoint.response_param is not None:
            fresh[endpoint.response_param] = sub_response
        result = await endpoint.call(fresh, after=sub_response)
        response = await render(request, result, sub_response, endpoint.func, endpoint.is_async)
        await store_response(endpoint, store, response, fresh, key, uid, request, lease)
    except Exception as exc:  # the stale copy stays until it runs out
        logger.warning("refreshing %s failed (%s: %s)", key, type(exc).__name__, exc)
    finally:
        store.flights.end_refresh(key)
