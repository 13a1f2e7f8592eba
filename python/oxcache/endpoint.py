"""What `@cache` knows about one endpoint: its checked options, the signature FastAPI reads
from the wrapper, how its calls are keyed, and how it is called."""

from __future__ import annotations

import inspect
import time
from typing import Any, Callable

from fastapi import Depends, Response
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from oxcache.errors import ConfigError
from oxcache.http import CACHED_METHODS
from oxcache.keys import EndpointKeys, KeySpace, is_ignored_annotation, resolved_hints
from oxcache.options import Options
from oxcache.registry import registered_name
from oxcache.store import Cache, default_store

__all__ = ["REQUEST_PARAM", "RESPONSE_PARAM", "USER_PARAM", "CachedEndpoint"]

#: The keyword parameters the wrapper adds when the endpoint does not take them itself.
REQUEST_PARAM = "oxcache_request__"
RESPONSE_PARAM = "oxcache_response__"
USER_PARAM = "oxcache_user__"


def _is_async(func: Callable[..., Any]) -> bool:
    if inspect.iscoroutinefunction(func):
        return True
    call = getattr(func, "__call__", None)  # noqa: B004 - async __call__ on an instance
    return call is not None and inspect.iscoroutinefunction(call)


def _find_param(signature: inspect.Signature, hints: dict[str, Any], cls: type[Any]) -> str | None:
    """The name of the parameter annotated with `cls` (or a subclass), if any."""
    for name in signature.parameters:
        if name in hints and is_ignored_annotation(hints[name], (cls,)):
            return name
    return None


class CachedEndpoint:
    """One `@cache` endpoint: `func`, its `Options`, its `EndpointKeys` and the signature
    of the wrapper FastAPI calls (the endpoint's own parameters, plus the `Request`, the
    `Response` and the `per_user` dependency when it does not take them). `store` is the
    `Cache` it names, or None for the default store at request time."""

    #: The request methods it caches (the store's lifespan warns about a route with none).
    methods = CACHED_METHODS

    def __init__(self, func: Callable[..., Any], options: Options, store: Cache | None) -> None:
        self.func = func
        self.options = options
        self.ttl_ms = options.ttl_ms
        self.per_user = options.per_user
        self.shared = options.shared
        self.vary_names = options.vary_names
        self.store = store
        #: XFetch's delta: how long a run of this endpoint takes (a moving average, seconds).
        self.run_s = 0.0
        self.is_async = _is_async(func)
        self.module = getattr(func, "__module__", None) or "__main__"
        self.name = options.name or registered_name(func, self.module, store)
        signature = inspect.signature(func)
        hints = resolved_hints(func)
        self.params = list(signature.parameters.values())
        if any(p.kind is p.VAR_POSITIONAL for p in self.params):
            raise ConfigError(f"@cache cannot key {self.name}: *args parameters are not supported")
        self.keys = EndpointKeys(
            self.module,
            self.name,
            self.params,
            hints,
            options.tags,
            has_variants=options.per_user is not None or bool(options.vary_names),
        )
        self.deps = self.keys.deps
        self.request_param = _find_param(signature, hints, Request)
        self.response_param = _find_param(signature, hints, Response)
        self.signature = self._wrapper_signature(signature, hints)

    def _wrapper_signature(
        self, signature: inspect.Signature, hints: dict[str, Any]
    ) -> inspect.Signature:
        extra: list[inspect.Parameter] = []
        keyword = inspect.Parameter.KEYWORD_ONLY
        if self.request_param is None:
            extra.append(inspect.Parameter(REQUEST_PARAM, keyword, annotation=Request))
        if self.response_param is None:
            extra.append(inspect.Parameter(RESPONSE_PARAM, keyword, annotation=Response))
        if self.per_user is not None:
            # FastAPI resolves it with the endpoint's own dependencies, once per request
            # (its dependency cache shares it with a `Depends` of the same callable).
            extra.append(
                inspect.Parameter(
                    USER_PARAM, keyword, default=Depends(self.per_user), annotation=Any
                )
            )
        params = list(self.params)
        var_kw = [p for p in params if p.kind is p.VAR_KEYWORD]
        params = [p for p in params if p.kind is not p.VAR_KEYWORD] + extra + var_kw
        # FastAPI reads the wrapper's signature; evaluated hints keep string annotations working.
        return signature.replace(
            parameters=[p.replace(annotation=hints.get(p.name, p.annotation)) for p in params],
            return_annotation=hints.get("return", signature.return_annotation),
        )

    def resolve_store(self) -> Cache:
        """The store this endpoint uses now: its own, else the default store."""
        return self.store or default_store()

    # -- keys (the interface `Cache.key_for` and `Cache.invalidate` use) -------------------

    def key_for_call(self, space: KeySpace, args: dict[str, Any]) -> str:
        """The key of a call with `args` (for a shared entry with no `vary`)."""
        return self.keys.key_for_call(space, args)

    def invalidation(self, space: KeySpace, args: dict[str, Any]) -> tuple[list[str], list[str]]:
        """The indexes and keys `store.invalidate(endpoint, **args)` deletes."""
        return self.keys.invalidation(space, args)

    # -- calls ---------------------------------------------------------------------------

    async def call(self, kwargs: dict[str, Any]) -> Any:
        """Run the endpoint (a sync one in the threadpool, as FastAPI does), timing it for
        XFetch when `early_recompute` is on."""
        began = time.monotonic()
        if self.is_async:
            result = await self.func(**kwargs)
        else:
            result = await run_in_threadpool(self.func, **kwargs)
        if self.options.beta:  # XFetch's delta
            took = time.monotonic() - began
            self.run_s = took if not self.run_s else 0.8 * self.run_s + 0.2 * took
        return result

    async def bypass(self, store: Cache, kwargs: dict[str, Any]) -> Any:
        """Serve a cacheable request without the cache (counted in `stats()`)."""
        store.counters.bypasses += 1
        return await self.call(kwargs)

    def warn_once(self, store: Cache, what: str, message: str, *args: Any) -> None:
        """Log `message` once per endpoint, store and `what`."""
        store.warn_once(f"{what}:{self.module}.{self.name}", message, *args)
