"""Filling the cache on a miss: one endpoint run for all the concurrent misses of a key in
this process (and, with `lock_timeout`, across workers), the response rendered as FastAPI
would, stored when it may be, and stale-if-error and background refreshes."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any

from fastapi import Response
from starlette.background import BackgroundTask
from starlette.requests import Request

from oxcache._core import encode_entry, etag, if_none_match
from oxcache.endpoint import CachedEndpoint
from oxcache.http import OWN_HEADERS, Replay, forbids_store
from oxcache.observe import COALESCED, HIT, MISS, NOT_STORED, STALE, STALE_IF_ERROR, note
from oxcache.responses import CachedResponse, render
from oxcache.store import Cache

__all__ = ["Stored", "miss", "refresh", "refresh_later", "run", "store_response"]

logger = logging.getLogger("oxcache")


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class Stored:
    """What a miss stored, shaped like a decoded `Entry` for the requests that waited."""

    __slots__ = ("body", "created_ms", "etag", "expires_ms", "headers", "status")

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


def _shared_hit(store: Cache, replay: Replay, entry: Any) -> CachedResponse:
    store.counters.hits += 1
    store.counters.coalesced += 1
    note(HIT, COALESCED)
    return replay.replay(entry, _now_ms())


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
) -> Any:
    """Run the endpoint once for all concurrent misses of `key` in this process (and, with
    `lock_timeout`, across workers), store the result, and answer.

    `read_at` is when this request started reading the store: a run of `key` that stored
    its entry after that raced our read, so the entry is read again instead of running the
    endpoint a second time."""
    flights = store.flights
    if read_at is not None and flights.landed_since(key, read_at):
        entry = await store.entries.read(key)
        if entry is not None and entry.expires_ms > _now_ms():
            return _shared_hit(store, replay, entry)
    flight = flights.running(key)
    if flight is not None:
        shared = await asyncio.shield(flight)
        if shared is not None:
            return _shared_hit(store, replay, shared)
        # The run we waited for failed or was not cacheable: run it as the route would.
        args = (endpoint, store, request, sub_response, kwargs, key, uid, replay, stale)
        return (await run(*args))[0]
    flight = flights.start(key)
    stored: Any = None
    token = b""
    try:
        if store.flights.lock_ms > 0:
            token = uuid.uuid4().bytes
            if not await flights.acquire(key, token):
                token = b""
                stored = await _wait_for_entry(store, key)
                if stored is not None:
                    return _shared_hit(store, replay, stored)
        args = (endpoint, store, request, sub_response, kwargs, key, uid, replay, stale)
        response, stored = await run(*args)
        return response
    finally:
        flights.finish(key, flight, stored)
        if token:
            await flights.release(key, token)


async def _wait_for_entry(store: Cache, key: str) -> Any:
    """Poll for the entry another worker is computing, at most `lock_timeout`."""
    deadline = time.monotonic() + store.flights.lock_ms / 1000
    delay = 0.005
    while time.monotonic() < deadline:
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.05)
        entry = await store.entries.read(key)
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
) -> tuple[Any, Stored | None]:
    """Run the endpoint, store a cacheable result; serve `stale` if it fails and
    stale-if-error allows. Returns the response and what was stored (or None)."""
    store.counters.misses += 1
    note(MISS)
    try:
        result = await endpoint.call(kwargs)
    except Exception as exc:
        if _stale_if_error(endpoint, stale, exc):
            store.counters.stale += 1
            note(STALE, STALE_IF_ERROR)
            logger.warning(
                "%s failed (%s); serving the stale entry %s (stale-if-error)",
                endpoint.name,
                type(exc).__name__,
                key,
            )
            return replay.replay(stale, _now_ms()), None
        raise
    try:
        response = await render(request, result, sub_response, endpoint.func, endpoint.is_async)
    except Exception as exc:
        # The uncached route would fail the same way; nothing is stored.
        logger.info("FAILED_TO_CACHE_KEY: key=%s (%s)", key, type(exc).__name__)
        raise
    if response.status_code >= 500 and _stale_if_error(endpoint, stale, None):
        store.counters.stale += 1
        note(STALE, STALE_IF_ERROR)
        return replay.replay(stale, _now_ms()), None
    stored = await store_response(endpoint, store, response, kwargs, key, uid)
    if stored is None:
        note(MISS, NOT_STORED)
        return response, None
    if replay.condition is not None and if_none_match(replay.condition, stored.etag):
        return CachedResponse(
            304, replay.headers(stored, stored.created_ms, hit=False), b""
        ), stored
    response.raw_headers = [
        (n, v) for n, v in response.raw_headers if n not in OWN_HEADERS or n == b"content-length"
    ] + replay.headers(stored, stored.created_ms, hit=False)
    return response, stored


def _stale_if_error(endpoint: CachedEndpoint, stale: Any, exc: Exception | None) -> bool:
    sie_ms = endpoint.options.sie_ms
    if stale is None or not sie_ms:
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
) -> Stored | None:
    """Store a rendered response if it may be cached; what was stored, or None."""
    rendered = getattr(response, "body", None)
    if not isinstance(rendered, bytes):
        endpoint.warn_once(
            store,
            "stream",
            "%s returned a %s, which is never cached (its body is not known in advance)",
            endpoint.name,
            type(response).__name__,
        )
        return None
    status = response.status_code
    if not 200 <= status < 300 or any(
        name == b"set-cookie" or (name == b"cache-control" and forbids_store(value))
        for name, value in response.raw_headers
    ):
        return None
    try:
        indexes = endpoint.keys.indexes(store.keyspace, kwargs, uid)
    except Exception as exc:  # a tag that cannot be formatted from these arguments
        logger.info("FAILED_TO_CACHE_KEY: key=%s (tags: %s)", key, exc)
        return None
    stored_headers = [
        (n, v) for n, v in response.raw_headers if n not in OWN_HEADERS and n != store.hit_header
    ]
    options = endpoint.options
    now_ms = _now_ms()
    expires_ms = now_ms + options.ttl_ms
    data = encode_entry(status, stored_headers, rendered, now_ms, expires_ms)
    # Kept past its freshness for as long as a stale copy may still be served.
    await store.entries.write(
        key, data, options.ttl_ms + options.stale_ms, indexes, options.compress_over
    )
    return Stored(status, stored_headers, rendered, etag(rendered), now_ms, expires_ms)


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
        fresh = dict(kwargs)
        sub_response = Response()
        del sub_response.headers["content-length"]
        sub_response.status_code = None  # type: ignore[assignment]
        if endpoint.response_param is not None:
            fresh[endpoint.response_param] = sub_response
        result = await endpoint.call(fresh)
        response = await render(request, result, sub_response, endpoint.func, endpoint.is_async)
        await store_response(endpoint, store, response, fresh, key, uid)
    except Exception as exc:  # the stale copy stays until it runs out
        logger.warning("refreshing %s failed (%s: %s)", key, type(exc).__name__, exc)
    finally:
        store.flights.end_refresh(key)
