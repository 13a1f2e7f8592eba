"""Where oxcache's log events go when the application has not said.

Every event is on the `oxcache` logger. A library should not configure logging, but a
warning nobody sees is worse: under a plain `uvicorn app:app` only uvicorn's own loggers
have handlers, so a wrong Redis URL, a decorator in the wrong order or a value that cannot
be cached would print nothing. The `oxcache` logger therefore carries one
`ConsoleFallback` handler, which prints a record to stderr (in `logging.basicConfig`'s
format, as the seed printed them) only when no other handler would get it: none on the
`oxcache` logger and none on its ancestors (the root logger) while it propagates. As soon
as the application configures logging (`basicConfig`, `dictConfig`, uvicorn's
`--log-config`, pytest's capture), the fallback falls silent and the application's handlers
print each record once. The level is the logger's: warnings by default (the root logger's
WARNING), every event after `logging.getLogger("oxcache").setLevel(logging.INFO)`.
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

__all__ = ["FORMAT", "LOGGER_NAME", "ConsoleFallback", "install"]

LOGGER_NAME = "oxcache"

#: The seed's format (it called `logging.basicConfig()`): `WARNING:oxcache:CONNECT_FAIL: ...`
FORMAT = logging.BASIC_FORMAT


class ConsoleFallback(logging.StreamHandler):  # type: ignore[type-arg]
    """Prints a record to the current `sys.stderr` when no other handler would handle it
    (as `logging.lastResort` does, but in a readable format and whatever the level)."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter(FORMAT))

    @property
    def stream(self) -> TextIO:
        # The stderr of the moment (pytest and uvicorn may replace it after import).
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        pass  # always the current sys.stderr

    def handle(self, record: logging.LogRecord) -> bool:
        if _handled_elsewhere(logging.getLogger(record.name), self):
            return False
        return bool(super().handle(record))


def _handled_elsewhere(logger: logging.Logger, fallback: logging.Handler) -> bool:
    """Whether a handler other than `fallback` sits on `logger` or, while records
    propagate, on one of its ancestors (the walk `Logger.callHandlers` makes)."""
    current: logging.Logger | None = logger
    while current is not None:
        if any(handler is not fallback for handler in current.handlers):
            return True
        if not current.propagate:
            return False
        current = current.parent
    return False


def install() -> ConsoleFallback:
    """Give the `oxcache` logger its `ConsoleFallback` (once; later calls return it)."""
    logger = logging.getLogger(LOGGER_NAME)
    for handler in logger.handlers:
        if isinstance(handler, ConsoleFallback):
            return handler
    handler = ConsoleFallback()
    logger.addHandler(handler)
    return handler


install()
