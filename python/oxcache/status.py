"""`Cache-Status` (RFC 9211): on every response of a cached endpoint, what the cache did with
the request. `oxcache; hit; ttl=42` was served from the cache (a negative `ttl`: stale, RFC
5861); `oxcache; fwd=miss; stored` ran the endpoint and stored the answer; `fwd=bypass`,
`fwd=method` and `fwd=request` say why the cache stayed out of it, and `detail` names the
reason, such as `detail=credentials` or a response's own `detail=no-store`.

The cache's name is `Cache(cache_status=...)` ("oxcache"; None sends no header). The `key`
parameter of RFC 9211 is never sent: it would show other users' key material (section 6)."""

from __future__ import annotations

from typing import Any

from starlette.responses import Response

__all__ = [
    "BYPASS",
    "CREDENTIALS",
    "DISABLED",
    "EXPIRE",
    "HEADER",
    "INVALIDATED",
    "KEY",
    "METHOD",
    "MISS",
    "REQUEST",
    "STALE",
    "STREAMING",
    "TAGS",
    "UNAVAILABLE",
    "USER",
    "forwarded",
    "hit",
    "hit_prefix",
    "mark",
]

#: The header's name, as ASGI writes it.
HEADER = b"cache-status"

# Why the request was forwarded to the endpoint (the `fwd` parameter, RFC 9211 section 2.2).
BYPASS = b"bypass"  # the cache was configured not to handle this request
METHOD = b"method"  # the method is not cached
MISS = b"miss"  # no stored response could be used
REQUEST = b"request"  # the request's Cache-Control did not allow a stored response
STALE = b"stale"  # the stored response was stale

# `detail` values of oxcache's own, besides the response directives of `directives.py`.
CREDENTIALS = "credentials"  # Authorization or Cookie, and neither per_user nor shared
USER = "user"  # the per_user dependency returned no usable id
KEY = "key"  # an argument cannot be keyed
EXPIRE = "expire"  # the endpoint says expire=0
DISABLED = "disabled"  # the store is turned off (`Cache(enabled=False)`, `store.disabled()`)
STREAMING = "streaming"  # the body is not known in advance
TAGS = "tags"  # a tag could not be formatted from the arguments
UNAVAILABLE = "unavailable"  # storage did not answer
INVALIDATED = "invalidated"  # an invalidation came while the endpoint ran: not stored


def hit_prefix(name: bytes) -> bytes:
    """What `hit` writes before the seconds (made once per store, for the hit path)."""
    return name + b"; hit; ttl="


def hit(name: bytes, ttl_s: int) -> bytes:
    """A response served from the cache, fresh for `ttl_s` more seconds (negative: stale)."""
    return hit_prefix(name) + str(ttl_s).encode("ascii")


def forwarded(
    name: bytes,
    fwd: bytes,
    *,
    stored: bool = False,
    collapsed: bool = False,
    ttl_s: int | None = None,
    detail: str | None = None,
) -> bytes:
    """A response the endpoint made: why it was forwarded (`fwd`), whether the answer was
    `stored`, whether this request waited for another's run (`collapsed`), and the
    `detail` of a bypass or of a response that may not be stored."""
    value = name + b"; fwd=" + fwd
    if stored:
        value += b"; stored"
    if collapsed:
        value += b"; collapsed"
    if ttl_s is not None:
        value += b"; ttl=" + str(ttl_s).encode("ascii")
    if detail is not None:
        value += b"; detail=" + detail.encode("ascii")
    return value


def mark(result: Any, sub_response: Response | None, value: bytes | None) -> Any:
    """`result` (what the endpoint returned), with `value` as its Cache-Status: on the
    response itself when it is one (FastAPI sends a returned response as it is), else on
    the `Response` FastAPI merges into the one it renders."""
    if value is None:
        return result
    target = result if isinstance(result, Response) else sub_response
    if target is not None:
        raw = target.raw_headers
        if any(n == HEADER for n, _ in raw):
            raw[:] = [(n, v) for n, v in raw if n != HEADER]
        raw.append((HEADER, value))
    return result
