"""Observers: what the cache did with each request of a cached endpoint, reported to
whoever asked (metrics, traces, a custom counter).

A store's `observers` list is empty by default, and then the request path pays one truth
test for it. When it holds observers, `serve` runs each request under `run`, which
times it and reports one `CacheEvent` to every observer: the endpoint, the outcome (`hit`,
`stale`, `miss`, `bypass`, `error`), the reason when there is one, and the seconds the
request took. The outcome is noted (`note`) where the request path decides it, on every
path but the hit's: a request nothing noted and that got a response was a hit, so a hit
carries no reporting code at all. Storage failures are reported as they happen
(`Observer.storage_error`), per store.

`oxcache.otel` turns events into OpenTelemetry metrics and spans, `oxcache.prometheus` into
a Prometheus collector; any `Observer` subclass can count what it likes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Iterable
from contextvars import ContextVar
from typing import Any, Protocol, TypeVar

from oxcache.logs import LOGGER_NAME

__all__ = [
    "BYPASS",
    "COALESCED",
    "DURATION_BUCKETS",
    "ERROR",
    "HIT",
    "MISS",
    "NOT_MODIFIED",
    "OUTCOMES",
    "STALE",
    "STALE_IF_ERROR",
    "STALE_WHILE_REVALIDATE",
    "CacheEvent",
    "Named",
    "Observer",
    "Observers",
    "active",
    "note",
    "run",
]

logger = logging.getLogger(LOGGER_NAME)

#: Bucket boundaries (seconds) for a request's duration, shared by the OpenTelemetry and
#: Prometheus exporters: hits take well under a millisecond, misses as long as their endpoint.
DURATION_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)

T = TypeVar("T")

# Outcomes: what the cache did with a request.
HIT = "hit"  # served from the cache (a 304 too)
STALE = "stale"  # a stale copy served (RFC 5861)
MISS = "miss"  # the endpoint ran for the cache, and its response was stored if it could be
BYPASS = "bypass"  # the cache stayed out of a request it could have served
ERROR = "error"  # the request raised (the endpoint, or storage with on_error="raise")
OUTCOMES = (HIT, STALE, MISS, BYPASS, ERROR)

# Reasons besides a bypass's and a miss's that was not stored (the `detail` of its
# Cache-Status: `credentials`, `no-store`, `status`, ...) and an error's (the exception's
# class name).
NOT_MODIFIED = "not-modified"  # a hit answered 304
COALESCED = "coalesced"  # a hit that waited for a concurrent miss's run
STALE_WHILE_REVALIDATE = "stale-while-revalidate"
STALE_IF_ERROR = "stale-if-error"


class CacheEvent:
    """One request of a cached endpoint, as observers get it.

    Attributes:
        endpoint: `module.function`, as keys and the CLI name the endpoint.
        outcome: `hit`, `stale`, `miss`, `bypass` or `error`.
        reason: Why, when it says more than the outcome (see docs/observability.md): a
            bypass's `no-store`, `no-cache`, `credentials`, `user`, `key` or `expire`; a
            hit's `not-modified` or `coalesced`; why a miss's response was not stored
            (`status`, `no-store`, `private`, `set-cookie`, ...: its Cache-Status `detail`);
            a stale copy's `stale-while-revalidate` or `stale-if-error`; an error's
            exception class.
        seconds: How long oxcache took to answer (a miss's endpoint run included).
    """

    __slots__ = ("endpoint", "outcome", "reason", "seconds")

    def __init__(self, endpoint: str, outcome: str, reason: str | None, seconds: float) -> None:
        self.endpoint = endpoint
        self.outcome = outcome
        self.reason = reason
        self.seconds = seconds

    def __repr__(self) -> str:
        return (
            f"CacheEvent({self.endpoint!r}, {self.outcome!r}, {self.reason!r}, {self.seconds:.6f})"
        )


class Observer:
    """What a store reports to: subclass it, override what you need, and register an
    instance with `Cache(observers=[...])` or `store.observers.append(...)`.

    Both methods run inline on the request's event loop: keep them quick and never block
    (hand slow work to a queue). An exception they raise is logged once per observer and
    otherwise ignored: observing never fails a request."""

    def request(self, event: CacheEvent) -> None:
        """One request of a cached endpoint was answered (or raised)."""

    def storage_error(self, store: str, error: BaseException) -> None:
        """A call to the store's backend failed (`store` names it as the logs do; the
        request goes on uncached)."""


class Named(Protocol):
    """What an event needs of an endpoint (`CachedEndpoint` is one)."""

    module: str
    name: str


class Observers(list[Observer]):
    """A store's observers (`store.observers`), a list: append and remove at will. Empty
    (the default), the request path skips observing with one truth test."""

    __slots__ = ("failed",)

    def __init__(self, observers: Iterable[Observer] = ()) -> None:
        super().__init__(observers)
        #: The observers whose failure was logged already.
        self.failed: set[int] = set()

    def request(self, endpoint: Named, outcome: str, reason: str | None, seconds: float) -> None:
        """Report one request to every observer."""
        event = CacheEvent(f"{endpoint.module}.{endpoint.name}", outcome, reason, seconds)
        for observer in self:
            try:
                observer.request(event)
            except Exception as exc:
                self._failed(observer, exc)

    def storage_error(self, store: str, error: BaseException) -> None:
        """Report a failed backend call to every observer."""
        for observer in self:
            try:
                observer.storage_error(store, error)
            except Exception as exc:
                self._failed(observer, exc)

    def _failed(self, observer: Observer, exc: Exception) -> None:
        if id(observer) not in self.failed:
            self.failed.add(id(observer))
            logger.warning(
                "observer %r failed (%s: %s); requests are served regardless",
                observer,
                type(exc).__name__,
                exc,
            )


class _Noted:
    """The outcome the request path noted for the request being observed."""

    __slots__ = ("outcome", "reason")

    def __init__(self) -> None:
        self.outcome: str | None = None
        self.reason: str | None = None


_noted: ContextVar[_Noted | None] = ContextVar("oxcache_observed", default=None)


def active() -> bool:
    """Whether the current request is being observed already (`run` is running)."""
    return _noted.get() is not None


def note(outcome: str, reason: str | None = None) -> None:
    """The request path decided `outcome` for the current request (no-op when nobody
    observes it). Hits are not noted: see the module docstring."""
    noted = _noted.get()
    if noted is not None:
        noted.outcome = outcome
        noted.reason = reason


async def run(observers: Observers, endpoint: Named, answer: Awaitable[T]) -> T:
    """Await `answer` (the request path for one request) and report the request to
    `observers`. A request nothing noted is a hit when it got a response (a 304 says
    `not-modified`) and is not reported when it got None (`CachedRoute` left it to
    FastAPI's path, which reports it). One that raises is an error, unless it raised an
    HTTP error below 500: after an outcome was noted, that outcome (an endpoint's 404: a
    miss whose response was not stored, or a bypass), and before, nothing (a guard of
    `CachedRoute` refused the request, as FastAPI would have without the cache)."""
    noted = _Noted()
    token = _noted.set(noted)
    began = time.perf_counter()
    try:
        result = await answer
    except Exception as exc:
        _noted.reset(token)
        status = getattr(exc, "status_code", 500)
        if not isinstance(status, int) or status >= 500:
            noted.outcome, noted.reason = ERROR, type(exc).__name__
        elif noted.outcome is None:
            raise  # refused before the cache took part (`CachedRoute`'s guards): not reported
        elif noted.outcome == MISS:
            noted.reason = "status"  # an answer such as a 404, which is never stored
        observers.request(endpoint, noted.outcome, noted.reason, time.perf_counter() - began)
        raise
    _noted.reset(token)
    if noted.outcome is None:
        if result is None:
            return result
        noted.outcome = HIT
        noted.reason = NOT_MODIFIED if _status(result) == 304 else None
    observers.request(endpoint, noted.outcome, noted.reason, time.perf_counter() - began)
    return result


def _status(result: Any) -> Any:
    return getattr(result, "status_code", None)
