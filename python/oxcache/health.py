"""The store's rules for a backend that fails: count the failure, log the outage once and
its end once, and leave the backend alone for `retry_after` seconds (a circuit breaker), so
a dead or slow Redis costs requests at most one timeout now and then, never an error."""

from __future__ import annotations

import logging
import time
from typing import Any

from oxcache.errors import CacheUnavailable
from oxcache.observe import Observers

__all__ = ["Health", "Stats"]

logger = logging.getLogger("oxcache")


class Stats:
    """The counters behind `Cache.stats()`."""

    __slots__ = (
        "bypasses",
        "bytes_read",
        "bytes_written",
        "coalesced",
        "errors",
        "hits",
        "l1_hits",
        "misses",
        "stale",
    )

    def __init__(self) -> None:
        self.hits = self.misses = self.stale = self.coalesced = self.l1_hits = 0
        self.bypasses = self.errors = self.bytes_read = self.bytes_written = 0


class Health:
    """Whether the backend named `name` may be used now. `on_error="raise"` turns every
    failure, and every request while the circuit is open, into `CacheUnavailable`."""

    __slots__ = (
        "counters",
        "down_until",
        "healthy",
        "name",
        "observers",
        "on_error",
        "retry_after",
        "warned",
    )

    def __init__(
        self,
        name: str,
        retry_after: float,
        on_error: str,
        counters: Stats,
        observers: Observers | None = None,
    ) -> None:
        self.name = name
        self.retry_after = retry_after
        self.on_error = on_error
        self.counters = counters
        #: Told of every failure (the store's `observers`).
        self.observers = Observers() if observers is None else observers
        #: `time.monotonic()` until which the backend is left alone (0: not failed).
        self.down_until = 0.0
        #: False from a failure until the backend answers again.
        self.healthy = True
        #: The tags `warn_once` has logged.
        self.warned: set[str] = set()

    def warn_once(self, tag: str, message: str, *args: Any) -> bool:
        """Log a warning once per `tag` for the life of the store; True when it logged."""
        if tag in self.warned or len(self.warned) > 10_000:
            return False
        self.warned.add(tag)
        logger.warning(message, *args)
        return True

    def available(self) -> bool:
        """Whether to use the backend now (False while the circuit is open)."""
        if self.down_until == 0.0 or time.monotonic() >= self.down_until:
            return True
        if self.on_error == "raise":
            raise CacheUnavailable(f"{self.name} is unavailable (circuit open)")
        return False

    def failed(self, exc: BaseException) -> None:
        """A backend call failed: open the circuit, log CONNECT_FAIL once per outage."""
        self.counters.errors += 1
        if self.observers:
            self.observers.storage_error(self.name, exc)
        self.down_until = time.monotonic() + self.retry_after
        if self.healthy:
            self.healthy = False
            logger.warning(
                "CONNECT_FAIL: %s failed (%s: %s); serving uncached until it answers.",
                self.name,
                type(exc).__name__,
                exc,
            )
        if self.on_error == "raise":
            raise CacheUnavailable(f"{self.name} failed: {exc}") from exc

    def succeeded(self) -> None:
        """A backend call worked: close the circuit, log the end of an outage once."""
        self.down_until = 0.0
        if not self.healthy:
            self.healthy = True
            logger.info("CONNECT_SUCCESS: %s answers again; caching resumed.", self.name)

    def connected(self) -> None:
        """`Cache.connect()` reached the backend."""
        self.healthy = True
        self.down_until = 0.0
