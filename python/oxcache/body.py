"""POST queries: the request methods an endpoint caches, and a request body as a key part.

`@cache(methods=["POST"])` opts an endpoint's POST requests in (search and GraphQL
endpoints, whose POST is a query that changes nothing). Their key holds, after everything a
GET's holds, `@body`: the XXH3-128 digest of the raw body (`secret_digest_bytes`, so the
body never appears in a key in clear). The body is the one FastAPI read to solve the
endpoint's parameters (Starlette keeps it on the request), or read here, in which case the
endpoint's own `await request.body()` gets the same bytes. A body FastAPI parsed as a form
cannot be read again: such a request is served uncached.
"""

from __future__ import annotations

from collections.abc import MutableMapping, Sequence
from typing import Any

from starlette.requests import ClientDisconnect, Request

from oxcache._core import secret_digest_bytes
from oxcache.errors import ConfigError

__all__ = [
    "BODY_PART",
    "BODY_SCOPE_KEY",
    "DEFAULT_METHODS",
    "UNREADABLE",
    "body_part",
    "cached_methods",
    "read",
]

#: What `@cache` caches without `methods=`: the safe methods whose responses HTTP reuses.
DEFAULT_METHODS = frozenset({"GET", "HEAD"})
#: The name of the body's part in a key (no Python parameter can have it).
BODY_PART = "@body"
#: The ASGI scope key under which `read` leaves the body's digest for `body_part`.
BODY_SCOPE_KEY = "oxcache.body"
#: The Cache-Status `detail` (and observers' reason) of a POST served uncached because its
#: body could not be read again.
UNREADABLE = "body"

_CACHEABLE = ("GET", "HEAD", "POST")


def cached_methods(methods: Sequence[str] | None) -> frozenset[str]:
    """The request methods `@cache(methods=...)` caches, checked: GET, HEAD and POST (GET
    brings HEAD, whose responses are GET's without the body); None: GET and HEAD."""
    if methods is None:
        return DEFAULT_METHODS
    if isinstance(methods, str) or not all(isinstance(m, str) for m in methods):
        raise ConfigError('methods takes a list of method names, such as ["GET", "POST"]')
    found = {m.upper() for m in methods}
    other = sorted(found.difference(_CACHEABLE))
    if other:
        raise ConfigError(
            f"@cache caches GET, HEAD and (opted in) POST requests, not {', '.join(other)}: "
            "those methods change what they address, so their responses are never reused "
            "(invalidate what they change instead: store.invalidate(...))"
        )
    if not found:
        raise ConfigError("methods names no method: leave it out for GET and HEAD")
    if "GET" in found:
        found.add("HEAD")
    return frozenset(found)


async def read(request: Request) -> bool:
    """Read the request's body for its key (`body_part`); False when it cannot be read
    again, because FastAPI parsed it as a form (the request is then served uncached)."""
    try:
        body = await request.body()
    except (RuntimeError, ClientDisconnect):  # "Stream consumed": a parsed form
        return False
    request.scope[BODY_SCOPE_KEY] = secret_digest_bytes(body)
    return True


def body_part(scope: MutableMapping[str, Any]) -> tuple[str, str] | None:
    """The `@body` part of the key of the request `scope` (None when `read` did not read
    its body: a GET, or an endpoint that does not cache POST)."""
    digest = scope.get(BODY_SCOPE_KEY)
    return None if digest is None else (BODY_PART, digest)
