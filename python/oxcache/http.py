"""HTTP semantics: which requests may use the cache, and the headers a cached response carries.

Rules and their RFC text: RFC 9110 (conditional requests, 304), RFC 9111 (Cache-Control, Age,
Expires). Parsing itself is done by the Rust core.
"""

from __future__ import annotations

from email.utils import formatdate

from oxcache._core import RequestCacheControl, parse_cache_control

#: Response headers oxcache computes itself; the endpoint's own values are not stored.
OWN_HEADERS = frozenset(
    {b"content-length", b"cache-control", b"expires", b"etag", b"age", b"date", b"set-cookie"}
)

_date_memo: tuple[int, bytes] = (-1, b"")


def http_date(seconds: int) -> bytes:
    """Format a Unix time as an IMF-fixdate (RFC 9110 section 5.6.7), memoized per second."""
    global _date_memo
    memo = _date_memo
    if memo[0] == seconds:
        return memo[1]
    value = formatdate(seconds, usegmt=True).encode("ascii")
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
