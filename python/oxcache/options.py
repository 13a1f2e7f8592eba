"""What `@cache(...)` and `Cache(...)` accept, checked once: TTLs, compression, browser
freshness, stale windows, `vary`, `per_user`/`shared`, names, the store's sources and
timeouts. A bad value raises `ConfigError` when the app is built, never at a request."""

from __future__ import annotations

import enum
import re
from collections.abc import Sequence
from datetime import timedelta
from typing import Any, Callable, Union

from oxcache.body import cached_methods
from oxcache.errors import ConfigError

__all__ = [
    "DEFAULT_COMPRESS_OVER",
    "ONE_DAY",
    "ONE_HOUR",
    "ONE_MINUTE",
    "ONE_MONTH",
    "ONE_WEEK",
    "ONE_YEAR",
    "STORE_SETTING",
    "Expire",
    "Options",
    "StoreSetting",
    "check_store_options",
    "compress_threshold",
    "ttl_ms",
]

Expire = Union[int, timedelta]
"""A duration as `@cache` takes it: seconds (int) or a timedelta."""

ONE_MINUTE = 60
ONE_HOUR = 3600
ONE_DAY = 86_400
ONE_WEEK = 604_800
ONE_MONTH = 2_592_000  # 30 days, as fastapi-redis-cache
ONE_YEAR = 31_536_000  # 365 days, the "never expires" default

#: `@cache(compress=True)`: entries from this size on are stored LZ4-compressed.
DEFAULT_COMPRESS_OVER = 1024

_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
#: A Cache-Status cache name written as a structured-field token (RFC 8941 section 3.3.4).
_CACHE_NAME = re.compile(r"^[A-Za-z*][!#$%&'*+\-.^_`|~0-9A-Za-z:/]*$")


class StoreSetting(enum.Enum):
    """`Cache.write(compress_over=STORE_SETTING)`: the store's own `compress_over`."""

    STORE = "store"


STORE_SETTING = StoreSetting.STORE


def ttl_ms(expire: Expire) -> int:
    """`expire` (seconds or a timedelta) in milliseconds; ConfigError if it is not one."""
    if isinstance(expire, bool) or not isinstance(expire, (int, timedelta)):
        raise ConfigError(f"expire must be an int (seconds) or a timedelta, not {expire!r}")
    seconds = expire.total_seconds() if isinstance(expire, timedelta) else expire
    if seconds < 0:
        raise ConfigError(f"expire must not be negative, got {expire!r}")
    return int(seconds * 1000)


def compress_threshold(compress: bool | int | None) -> int | StoreSetting | None:
    """`@cache(compress=...)` as the threshold `Cache.write` takes (`STORE_SETTING`: the
    store's own `compress_over`)."""
    if compress is None:
        return STORE_SETTING
    if compress is True:
        return DEFAULT_COMPRESS_OVER
    if compress is False:
        return None
    if isinstance(compress, int) and compress >= 0:
        return compress
    raise ConfigError(f"compress must be None, True, False or a number of bytes, not {compress!r}")


def _header_value(cache_control: str) -> bytes:
    if not isinstance(cache_control, str) or not cache_control.strip():
        raise ConfigError("cache_control must be a non-empty header value")
    try:
        value = cache_control.strip().encode("ascii")
    except UnicodeEncodeError:
        raise ConfigError("cache_control must be ASCII") from None
    if any(c in cache_control for c in "\r\n\0"):
        raise ConfigError("cache_control must be one header line")
    return value


class Options:
    """The checked options of one `@cache` endpoint, in the forms the request path uses
    (milliseconds, header bytes, lower-cased header names)."""

    def __init__(
        self,
        expire_ms: int,
        *,
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
    ) -> None:
        self.ttl_ms = expire_ms
        #: The request methods cached (`oxcache.body`): GET and HEAD unless POST is opted in.
        self.methods = cached_methods(methods)
        self.compress_over = compress_threshold(compress)
        if not isinstance(early_recompute, (int, float)) or not 0 <= early_recompute < 1e6:
            raise ConfigError("early_recompute must be a number >= 0 (XFetch's beta; 1 is usual)")
        #: XFetch's beta (0: off).
        self.beta = float(early_recompute)
        if max_age is not None and cache_control is not None:
            raise ConfigError("give max_age or cache_control, not both")
        self.browser_max_age = None if max_age is None else ttl_ms(max_age) // 1000
        self.control = None if cache_control is None else _header_value(cache_control)
        self.refresh_on_no_cache = refresh_on_no_cache
        if name is not None and (not isinstance(name, str) or not name or "(" in name):
            raise ConfigError(f"name must be a non-empty string without '(', not {name!r}")
        self.name = name
        self.swr_ms = ttl_ms(stale_while_revalidate)
        self.sie_ms = ttl_ms(stale_if_error)
        #: How long past its freshness an entry is kept, for a stale copy to be served.
        self.stale_ms = max(self.swr_ms, self.sie_ms)
        #: The stale windows as Cache-Control directives (RFC 5861), appended to max-age.
        self.directives = b"".join(
            f", {directive}={ms // 1000}".encode("ascii")
            for directive, ms in (
                ("stale-while-revalidate", self.swr_ms),
                ("stale-if-error", self.sie_ms),
            )
            if ms
        )
        if per_user is not None and not callable(per_user):
            raise ConfigError("per_user must be a FastAPI dependency (a callable)")
        if per_user is not None and shared:
            raise ConfigError("per_user and shared=True contradict each other")
        self.per_user = per_user
        self.shared = shared
        if isinstance(vary, str) or isinstance(tags, str):
            raise ConfigError("vary and tags take a list of strings, not one string")
        names = [str(v).strip() for v in vary or ()]
        for header in names:
            if not _TOKEN.match(header):
                raise ConfigError(f"vary: {header!r} is not a header name")
        #: The `vary` headers as ASGI names (lower-case bytes), in order, without repeats.
        self.vary_names = tuple(dict.fromkeys(n.lower().encode("latin-1") for n in names))
        #: The response's `Vary` value, or None.
        self.vary_header = ", ".join(dict.fromkeys(names)).encode("latin-1") if names else None
        self.tags = tuple(tags or ())


def check_store_options(
    *,
    sources: tuple[Any, ...],
    sentinel: Any,
    service_name: str | None,
    cluster: bool,
    url: str | None,
    timeout: float,
    retry_after: float,
    lock_timeout: float,
    on_error: str,
    compress_over: int | None,
    cache_status: str | None = None,
) -> None:
    """Check the arguments of `Cache(...)` (`sources`: url, backend, client, sentinel)."""
    if cache_status is not None and (
        not isinstance(cache_status, str) or not _CACHE_NAME.match(cache_status)
    ):
        raise ConfigError(
            f"cache_status must be None or a name such as 'oxcache' (a letter, then letters, "
            f"digits and !#$%&'*+-.^_`|~:/), not {cache_status!r}"
        )
    if compress_over is not None and compress_over < 0:
        raise ConfigError("compress_over must be None or a number of bytes, not negative")
    if sum(x is not None for x in sources) > 1:
        raise ConfigError("give at most one of url=, client=, sentinel= and backend=")
    if (sentinel is None) != (service_name is None):
        raise ConfigError("sentinel= and service_name= go together")
    if cluster and url is None:
        raise ConfigError("cluster=True needs url= (or pass a RedisCluster as client=)")
    if timeout <= 0 or retry_after < 0 or lock_timeout < 0:
        raise ConfigError("timeout must be positive, retry_after and lock_timeout not negative")
    if on_error not in ("open", "raise"):
        raise ConfigError(f'on_error must be "open" or "raise", not {on_error!r}')
