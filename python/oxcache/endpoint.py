"""What `@cache` knows about one endpoint: its checked options, the signature FastAPI reads
from the wrapper, how its calls are keyed (with what it learned from its responses: the
headers their `Vary` names), and how it is called."""

from __future__ import annotations

import inspect
import re
import string
import time
from collections.abc import Iterable, MutableMapping
from contextlib import AsyncExitStack
from typing import Any, Callable

from fastapi import Depends, Response, params
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from oxcache.body import body_part
from oxcache.deferred import PENDING_PARAM, Deferred, Pending, defer, depends_of
from oxcache.errors import ConfigError
from oxcache.http import NOT_MODIFIED_HEADERS
from oxcache.keys import EndpointKeys, KeySpace, call_parts, origin_part, undeclared_query
from oxcache.observe import BYPASS, note
from oxcache.options import Options
from oxcache.registry import registered_name
from oxcache.signature import annotation_types, is_ignored_annotation, resolved_hints
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


def _query_names(route: Any) -> frozenset[str]:
    """The query parameters a FastAPI route declares for its endpoint, by the names the
    request uses (aliases; a pydantic model's fields for `Annotated[Model, Query()]`)."""
    names: set[str] = set()
    for field in getattr(getattr(route, "dependant", None), "query_params", None) or ():
        annotation = getattr(getattr(field, "field_info", None), "annotation", None)
        models = [c for c in annotation_types(annotation) if issubclass(c, BaseModel)]
        if not models:
            names.add(str(getattr(field, "alias", None) or getattr(field, "name", "")))
        for model in models:  # FastAPI reads a query model's fields, not its own name
            for name, info in model.model_fields.items():
                names.add(info.alias or name)
    return frozenset(names)


def _find_param(signature: inspect.Signature, hints: dict[str, Any], cls: type[Any]) -> str | None:
    """The name of the parameter annotated with `cls` (or a subclass), if any."""
    for name in signature.parameters:
        if name in hints and is_ignored_annotation(hints[name], (cls,)):
            return name
    return None


def _own_user_param(
    parameters: list[inspect.Parameter], hints: dict[str, Any], per_user: Any
) -> str | None:
    """The endpoint's own parameter that FastAPI solves with the `per_user` dependency itself
    (`user: str = Depends(current_user)` with `per_user=current_user`), if any: its value is
    the one FastAPI would give the wrapper's own `Depends(per_user)` (its dependency cache
    shares one value per callable), so the wrapper needs none, and FastAPI solves the
    dependency's parameters once instead of twice."""
    if per_user is None:
        return None
    for param in parameters:
        if param.kind is param.VAR_KEYWORD:
            continue
        depends = depends_of(param, hints.get(param.name))
        if (
            type(depends) is params.Depends  # not Security: its scopes key another value
            and depends.dependency is per_user
            and getattr(depends, "scope", None) is None
        ):
            return param.name
    return None


#: Keys whose generations an endpoint remembers before it starts over.
_GENERATIONS_MEMO = 10_000


class CachedEndpoint:
    """One `@cache` endpoint: `func`, its `Options`, its `EndpointKeys` and the signature
    of the wrapper FastAPI calls (the endpoint's own parameters, plus the `Request`, the
    `Response` and the `per_user` dependency when it does not take them). `store` is the
    `Cache` it names, or None for the default store at request time."""

    def __init__(self, func: Callable[..., Any], options: Options, store: Cache | None) -> None:
        self.func = func
        #: The function FastAPI is given for it (the `@cache` wrapper, set by `_wrap`): a
        #: route whose endpoint is another (a decorator above `@cache`) is never answered
        #: early, since what that decorator does would be skipped.
        self.wrapper: Callable[..., Any] | None = None
        self.options = options
        #: The request methods it caches (the store's lifespan warns about a route with none).
        self.methods = options.methods
        #: Whether its POST requests are cached, keyed by their body (`oxcache.body`).
        self.keys_body = "POST" in self.methods
        self.ttl_ms = options.ttl_ms
        self.per_user = options.per_user
        self.shared = options.shared
        #: The varying request headers a key holds: the `vary=` names, then (sorted) the
        #: ones this process learned from the `Vary` of the endpoint's responses.
        self.vary_names = options.vary_names
        #: Whether this process has seen a stored response of this endpoint with headers
        #: a 304 must repeat (its own Cache-Control, Expires, Vary or Content-Location;
        #: None: no stored response seen yet). Until it knows there are none, a conditional
        #: request reads the whole entry, not only its head, so its 304 repeats them.
        self.own_headers: bool | None = None
        self._query_names: dict[int, tuple[Any, frozenset[str]]] = {}
        #: `serve.replay_for`'s last marking of unconditional requests: (store, private,
        #: varying headers, Replay), reused while they stay the same.
        self.replay_memo: tuple[Any, bool, tuple[bytes, ...], Any] | None = None
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
        self.keys = EndpointKeys(self.module, self.name, self.params, hints, options.tags)
        #: key -> the generations its entry is read under (see `generations`), and the
        #: parameters the tags are formatted from.
        self._generations: dict[str, tuple[str, ...]] = {}
        self._tag_roots = frozenset(
            re.split(r"[.\[]", field, maxsplit=1)[0]
            for template in options.tags
            for _, field, _, _ in string.Formatter().parse(template)
            if field
        )
        self.deps = self.keys.deps
        #: The parameter the `per_user` id arrives in: the endpoint's own `Depends` of it,
        #: else the one the wrapper adds (`USER_PARAM`).
        self.user_param = _own_user_param(self.params, hints, self.per_user) or USER_PARAM
        self.request_param = _find_param(signature, hints, Request)
        self.response_param = _find_param(signature, hints, Response)
        #: The dependency parameters a hit does not solve (a database session), if any.
        self.deferred: Deferred | None = defer(
            self.params, hints, () if self.per_user is None else (self.per_user,)
        )
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
        if self.per_user is not None and self.user_param == USER_PARAM:
            # FastAPI resolves it with the endpoint's own dependencies, once per request
            # (its dependency cache shares it with a `Depends` of the same callable).
            extra.append(
                inspect.Parameter(
                    USER_PARAM, keyword, default=Depends(self.per_user), annotation=Any
                )
            )
        params = list(self.params)
        if self.deferred is not None:  # solved by `call`, when the endpoint runs
            params = [p for p in params if p.name not in self.deferred.names]
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

    # -- keys ----------------------------------------------------------------------------

    def request_key(
        self,
        space: KeySpace,
        kwargs: dict[str, Any],
        user: str | None,
        names: tuple[bytes, ...],
        varied: dict[bytes, bytes] | None,
        scope: MutableMapping[str, Any],
        host: bytes | None,
    ) -> str:
        """The key of one request: its arguments `kwargs`, its `user`, the values `varied`
        of the varying headers `names`, the query parameters it does not declare (when it
        takes the `Request`) and, on a `per_host` store, its origin."""
        extra = origin_part(scope, host) if space.per_host else None
        query = None
        if self.request_param is not None:
            query = undeclared_query(
                scope.get("query_string", b""),
                self.declared_query(scope.get("route")),
                scope.get("path_params") or (),
            )
        if user is not None or varied is not None or query is not None:
            origin = None if extra is None else extra[0][1]
            extra = call_parts(user, names, varied, query, origin)
        if self.keys_body:
            part = body_part(scope)  # a POST's body, read by `serve.handle`
            if part is not None:
                extra = [*(extra or ()), part]
        return self.keys.key(space, kwargs, extra)

    def indexes(self, space: KeySpace, kwargs: dict[str, Any], user: str | None) -> list[str]:
        """The indexes an entry of this call is listed in: its user's, its tags, and the
        variants of its base key when its key holds more than the arguments (a user, an
        origin, varying headers, an undeclared query)."""
        variant = space.per_host or user is not None or bool(self.vary_names)
        variant = variant or self.request_param is not None or self.keys_body
        return self.keys.indexes(space, kwargs, user, variant)

    def generations(
        self, space: KeySpace, kwargs: dict[str, Any], user: str | None, key: str | None = None
    ) -> tuple[str, ...]:
        """The generations an entry of this call is read and written under: those of its
        `indexes` (`KeySpace.generation`); none when a tag cannot be formatted from the
        arguments (such a call is never stored: `fill` says why). With its `key`,
        remembered: the key holds every input of the indexes (the arguments, the user)
        unless a tag is formatted from a parameter the key leaves out, and a hit then costs
        a dictionary lookup."""
        if key is not None:
            found = self._generations.get(key)
            if found is not None:
                return found
        try:
            made = space.generations(self.indexes(space, kwargs, user))
        except Exception:
            return ()
        if key is not None and self._tag_roots.issubset(self.keys.names(space.ignored)):
            if len(self._generations) >= _GENERATIONS_MEMO:
                self._generations.clear()
            self._generations[key] = made
        return made

    def declared_query(self, route: Any) -> frozenset[str]:
        """The query parameters `route` declares for this endpoint (none without a route:
        then every query parameter is keyed)."""
        if route is None:
            return frozenset()
        known = self._query_names.get(id(route))
        if known is None or known[0] is not route:
            known = (route, _query_names(route))
            self._query_names[id(route)] = known
        return known[1]

    def learn_vary(self, names: Iterable[bytes]) -> bool:
        """Add header names a response's `Vary` listed to the ones keys hold; True when
        that changed them (a worker that had not learned them misses once)."""
        new = {n for n in names if n not in self.vary_names}
        if not new:
            return False
        declared = self.options.vary_names
        learned = set(self.vary_names[len(declared) :]) | new
        self.vary_names = declared + tuple(sorted(learned))
        return True

    def saw_entry(self, headers: Iterable[tuple[bytes, bytes]]) -> None:
        """Note whether a stored response of this endpoint carries headers a 304 repeats."""
        if self.own_headers is not True:
            self.own_headers = any(name in NOT_MODIFIED_HEADERS for name, _ in headers)

    # -- keys (the interface `Cache.key_for` and `Cache.invalidate` use) -------------------

    def key_for_call(self, space: KeySpace, args: dict[str, Any], origin: str | None = None) -> str:
        """The key of a call with `args` (see `EndpointKeys.key_for_call`)."""
        return self.keys.key_for_call(space, args, origin)

    def invalidation(self, space: KeySpace, args: dict[str, Any]) -> tuple[list[str], list[str]]:
        """The indexes and keys `store.invalidate(endpoint, **args)` deletes."""
        return self.keys.invalidation(space, args)

    # -- calls ---------------------------------------------------------------------------

    def pending(self, request: Request, response: Response | None) -> Pending | None:
        """The deferred dependencies of one request, for `call` to solve (None: none)."""
        if self.deferred is None:
            return None
        return Pending(self.deferred, request, response, f"{self.module}.{self.name}")

    async def solve(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """`kwargs` with the deferred dependencies solved (itself when there are none)."""
        pending: Pending | None = kwargs.get(PENDING_PARAM)
        return kwargs if pending is None else await pending.solve(kwargs)

    async def call(self, kwargs: dict[str, Any], after: Response | None = None) -> Any:
        """Run the endpoint (a sync one in the threadpool, as FastAPI does), timing it for
        XFetch when `early_recompute` is on. The dependencies a hit did not need are solved
        first; for a run `after` the request's response (a refresh, given its own
        `Response`), they are closed when the run ends."""
        pending: Pending | None = kwargs.get(PENDING_PARAM)
        if pending is not None:
            if after is not None:
                async with AsyncExitStack() as stack:
                    return await self.call(await pending.solve(kwargs, stack, after))
            kwargs = await pending.solve(kwargs)
        began = time.monotonic()
        if self.is_async:
            result = await self.func(**kwargs)
        else:
            result = await run_in_threadpool(self.func, **kwargs)
        if self.options.beta:  # XFetch's delta
            took = time.monotonic() - began
            self.run_s = took if not self.run_s else 0.8 * self.run_s + 0.2 * took
        return result

    async def bypass(self, store: Cache, kwargs: dict[str, Any], reason: str | None) -> Any:
        """Serve a cacheable request without the cache (counted in `stats()`, and reported
        to the store's observers with `reason`)."""
        store.counters.bypasses += 1
        note(BYPASS, reason)
        return await self.call(kwargs)

    def warn_once(self, store: Cache, what: str, message: str, *args: Any) -> None:
        """Log `message` once per endpoint, store and `what`."""
        store.warn_once(f"{what}:{self.module}.{self.name}", message, *args)
