"""What `CachedRoute` remembers: per route, which raw request (origin, path, query string,
the varying headers' values) gave which key, and per request what it read before leaving the
request to FastAPI's path (so that path does not read it again)."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

__all__ = ["EARLY_SCOPE_KEY", "MEMO_LIMIT", "MEMO_MAX_REQUEST", "EarlyState", "RouteMemo"]

#: The ASGI scope key under which `CachedRoute` leaves a request's `EarlyState`.
EARLY_SCOPE_KEY = "oxcache.early"
#: Raw requests remembered per route, the oldest forgotten first.
MEMO_LIMIT = 10_000
#: Bytes of path, query and `vary` values past which a request is not remembered.
MEMO_MAX_REQUEST = 2048


class RouteMemo:
    """What `CachedRoute` learned for one route: raw request -> (store, key, the
    generations the key's entry is read under), the oldest forgotten first past
    `MEMO_LIMIT` requests. `endpoint` is the route's `CachedEndpoint`;
    `names` the varying headers its keys held when they were learned."""

    __slots__ = ("__weakref__", "endpoint", "keys", "limit", "names")

    def __init__(self, endpoint: Any, limit: int | None = None) -> None:
        self.endpoint = endpoint
        self.limit = MEMO_LIMIT if limit is None else limit
        self.keys: OrderedDict[tuple[Any, ...], tuple[Any, str, tuple[str, ...]]] = OrderedDict()
        self.names: tuple[bytes, ...] = getattr(endpoint, "vary_names", ())

    def check(self, names: tuple[bytes, ...]) -> None:
        """Forget every key when the endpoint's varying headers changed (it learned one from
        a response's `Vary`): a raw request no longer shows everything its key holds."""
        if names is not self.names:
            self.keys.clear()
            self.names = names


class EarlyState:
    """One request as `CachedRoute` saw it: its raw signature, and the entry it read when it
    did not answer (so FastAPI's path does not read it again)."""

    __slots__ = (
        "entry",
        "learns",
        "memo",
        "names",
        "read_at",
        "read_key",
        "refresh_due",
        "signature",
        "store",
        "user",
    )

    def __init__(
        self,
        memo: RouteMemo,
        signature: tuple[Any, ...],
        names: tuple[bytes, ...] = (),
        learn: bool = True,
        user: str | None = None,
    ) -> None:
        self.memo = memo
        #: The user id the signature holds (a per-user endpoint's), or None.
        self.user = user
        self.signature = signature
        self.names = names
        self.learns = learn  # False for a request too large to remember
        self.store: Any = None
        self.read_key: str | None = None
        self.entry: Any = None
        self.read_at = 0.0
        self.refresh_due: bool | None = None

    def learn(
        self,
        store: Any,
        key: str,
        names: tuple[bytes, ...] = (),
        generations: tuple[str, ...] = (),
    ) -> None:
        """FastAPI's path computed `key`, holding the varying headers `names` and read under
        `generations`, for this raw request (not remembered if the varying headers changed
        in between)."""
        if not self.learns or names is not self.names or names is not self.memo.names:
            return
        keys = self.memo.keys
        if self.signature not in keys and len(keys) >= self.memo.limit:
            keys.popitem(last=False)  # the oldest
        keys[self.signature] = (store, key, generations)
