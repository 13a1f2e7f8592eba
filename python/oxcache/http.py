"""HTTP semantics: which requests may use the cache, and the headers a cached response carries.

Rules and their RFC text: RFC 9110 (conditional requests, 304), RFC 9111 (Cache-Control, Age,
Expires). Parsing itself is done by the Rust core.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from email.utils import formatdate
from typing import Any

from oxcache._core import RequestCacheControl, if_none_match, parse_cache_control
from oxcache.responses import CachedResponse

__all__ = [
    "CACHED_METHODS",
    "OWN_HEADERS",
    "Replay",
    "cache_headers",
    "forbids_store",
    "http_date",
    "request_directives",
    "scan_request",
]

#: The request methods whose responses are cached.
CACHED_METHODS = frozenset({"GET", "HEAD"})
_CREDENTIAL_HEADERS = (b"authorization", b"cookie")

#: Response headers oxcache computes itself; the endpoint's own values are not stored.
OWN_HEADERS = frozenset(
    {b"content-length", b"cache-control", b"expires", b"etag", b"age", b"date", b"set-cookie"}
)

_date_memo: tuple[int, bytes] = (-1, b"")
#: 9999-12-31T23:59:59Z, the last instant an IMF-fixdate (a four-digit year) can write.
_LAST_DATE_S = 253_402_300_799


def http_date(seconds: int) -> bytes:
    """Format a Unix time as an IMF-fixdate (RFC 9110 section 5.6.7), memoized per second.
    Times past the year 9999 (an entry may hold any u64) are written as its last second."""
    global _date_memo
    memo = _date_memo
    if memo[0] == seconds:
        return memo[1]
    value = formatdate(min(max(seconds, 0), _LAST_DATE_S), usegmt=True).encode("ascii")
    _date_memo = (seconds, value)
    return value


def request_directives(
    cache_control: bytes | None, pragma: bytes | None
) -> RequestCacheControl | None:
    """Parse the request's Cache-Control, or treat `Pragma: no-cache` as `no-cache`.

    Takes the raw header values (several lines already joined by `, `). RFC 9111 section
    5.4: Pragma is only looked at when Cache-Control is absent. Returns None when the
    request says nothing about caching (the common case).
    """
    if cache_control is not None:
        return parse_cache_control(cache_control.decode("latin-1"))
    if pragma is not None and b"no-cache" in pragma.lower():
        return parse_cache_control("no-cache")
    return None


def cache_headers(
    *,
    etag: str,
    created_ms: int,
    expires_ms: int,
    now_ms: int,
    hit: bool,
    hit_header: bytes,
    weak: bool,
    private: bool = False,
    vary: bytes | None = None,
    directives: bytes = b"",
    browser_max_age: int | None = None,
    control: bytes | None = None,
) -> list[tuple[bytes, bytes]]:
    """The validator and freshness headers of a cached response (miss, hit or 304).

    By default `max-age` is the entry's whole lifetime and `Age` the time since it was
    stored, so any RFC 9111 cache downstream computes the remaining freshness as
    max-age - Age, which is exactly the seconds left; `Expires` gives the same instant for
    HTTP/1.0 caches.

    `browser_max_age` (`@cache(max_age=N)`) sets browser freshness apart from the server TTL:
    `max-age=N` from delivery (`Expires` = now + N, no `Age`); 0 sends `no-cache`, so clients
    revalidate every time and get 304s. `control` (`@cache(cache_control=...)`) is sent as
    the whole Cache-Control value, with no `Expires` and no `Age`.
    """
    tag = (b"W/" + etag.encode("ascii")) if weak else etag.encode("ascii")
    if control is not None:
        headers = [(b"cache-control", control), (b"etag", tag)]
    elif browser_max_age is not None:
        scope = b"private, " if private else b""
        value = (
            scope + b"no-cache"
            if browser_max_age == 0
            else scope + b"max-age=" + str(browser_max_age).encode("ascii") + directives
        )
        headers = [
            (b"cache-control", value),
            (b"expires", http_date(now_ms // 1000 + browser_max_age)),
            (b"etag", tag),
        ]
    else:
        lifetime = max((expires_ms - created_ms) // 1000, 0)
        directive = b"private, max-age=" if private else b"max-age="
        headers = [
            (b"cache-control", directive + str(lifetime).encode("ascii") + directives),
            (b"expires", http_date(expires_ms // 1000)),
            (b"etag", tag),
        ]
        if hit:
            age = max((now_ms - created_ms) // 1000, 0)
            headers.append((b"age", str(age).encode("ascii")))
    if vary is not None:
        headers.append((b"vary", vary))
    headers.append((hit_header, b"Hit" if hit else b"Miss"))
    return headers


def scan_request(
    scope: MutableMapping[str, Any], vary_names: tuple[bytes, ...]
) -> tuple[bytes | None, bytes | None, bytes | None, bytes | None, dict[bytes, bytes] | None]:
    """One pass over the raw request headers finds everything the cache looks at:
    Cache-Control, Pragma, If-None-Match, a credential header (not among `vary_names`), and
    the `vary` headers' values (None when there are no `vary_names`). Repeated lines are
    joined with `, `."""
    cache_control = pragma = condition = None
    credentials: bytes | None = None
    varied: dict[bytes, bytes] | None = {} if vary_names else None
    for name, value in scope["headers"]:
        if name == b"cache-control":
            cache_control = value if cache_control is None else cache_control + b", " + value
        elif name == b"if-none-match":
            condition = value if condition is None else condition + b", " + value
        elif name == b"pragma":
            pragma = value
        elif name in _CREDENTIAL_HEADERS and name not in vary_names:
            credentials = name
        if varied is not None and name in vary_names:
            seen = varied.get(name)
            varied[name] = value if seen is None else seen + b", " + value
    return cache_control, pragma, condition, credentials, varied


def forbids_store(value: bytes) -> bool:
    """RFC 9111 section 3: a shared cache must not store `no-store` or `private` responses."""
    lowered = value.lower()
    return b"no-store" in lowered or b"private" in lowered


class Replay:
    """How the responses to one request are marked: the request's `If-None-Match`, and the
    endpoint's `private`, `Vary` and extra Cache-Control directives; `replay` turns a stored
    entry into the hit (or 304) it answers."""

    __slots__ = (
        "browser",
        "condition",
        "control",
        "directives",
        "hit_header",
        "private",
        "vary",
        "weak",
    )

    def __init__(
        self,
        condition: str | None,
        *,
        hit_header: bytes,
        weak: bool,
        private: bool,
        vary: bytes | None,
        directives: bytes,
        browser: int | None = None,
        control: bytes | None = None,
    ) -> None:
        self.condition = condition
        self.hit_header = hit_header
        self.weak = weak
        self.private = private
        self.vary = vary
        self.directives = directives
        self.browser = browser
        self.control = control

    def headers(self, entry: Any, now_ms: int, hit: bool = True) -> list[tuple[bytes, bytes]]:
        """The cache headers of a response made from `entry` (see `cache_headers`)."""
        return cache_headers(
            etag=entry.etag,
            created_ms=entry.created_ms,
            expires_ms=entry.expires_ms,
            now_ms=now_ms,
            hit=hit,
            hit_header=self.hit_header,
            weak=self.weak,
            private=self.private,
            vary=self.vary,
            directives=self.directives,
            browser_max_age=self.browser,
            control=self.control,
        )

    def replay(self, entry: Any, now_ms: int) -> CachedResponse:
        """A stored entry as a hit: a 304 if the request's `If-None-Match` matches it."""
        if self.condition is not None and if_none_match(self.condition, entry.etag):
            return CachedResponse(304, self.headers(entry, now_ms), b"")
        body = entry.body
        raw = [(b"content-length", str(len(body)).encode("ascii")), *entry.headers]
        raw += self.headers(entry, now_ms)
        return CachedResponse(entry.status, raw, body)
