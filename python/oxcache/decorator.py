"""`@cache`: response caching for FastAPI path operations."""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import math
import random
import re
import string
import threading
import time
import typing
import uuid
import weakref
from collections import OrderedDict
from collections.abc import MutableMapping, Sequence
from datetime import timedelta
from typing import Any, Callable, TypeVar, Union, cast, overload

from fastapi import Depends, Response
from fastapi.params import Depends as DependsParam
from pydantic import SecretBytes, SecretStr
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from oxcache._core import (
    KeyBuildError,
    cache_key,
    encode_entry,
    etag,
    if_none_match,
)
from oxcache.errors import ConfigError
from oxcache.http import OWN_HEADERS, cache_headers, request_directives
from oxcache.keys import (
    ALWAYS_IGNORED,
    annotation_types,
    is_ignored_annotation,
    resolved_hints,
)
from oxcache.responses import CachedResponse, render
from oxcache.store import (
    DEFAULT_COMPRESS_OVER,
    STORE_SETTING,
    Cache,
    StoreSetting,
    default_store,
    normalize_user_id,
)

logger = logging.getLogger("oxcache")

F = TypeVar("F", bound=Callable[..., Any])
Expire = Union[int, timedelta]

ONE_MINUTE = 60
ONE_HOUR = 3600
ONE_DAY = 86_400
ONE_WEEK = 604_800
ONE_MONTH = 2_592_000  # 30 days, as fastapi-redis-cache
ONE_YEAR = 31_536_000  # 365 days, the "never expires" default

_REQUEST_PARAM = "oxcache_request__"
_RESPONSE_PARAM = "oxcache_response__"
_USER_PARAM = "oxcache_user__"
_CACHED_METHODS = frozenset({"GET", "HEAD"})
_NO_USER: Any = object()
_FAST = "oxcache.early"  # scope key: the `EarlyState` of a request `CachedRoute` saw first
_ROUTE_MEMO_LIMIT = 10_000  # raw requests remembered per route
_ROUTE_MEMO_MAX_REQUEST = 2048  # bytes of path, query and vary values; longer: not remembered
_REFRESH_GIVE_UP_S = 60.0
_MAX_LANDED = 10_000  # keys remembered by Cache._landed before it starts over
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
#: Request headers whose values are credentials: a key holds their hash, never the value.
_SECRET_HEADERS = frozenset({b"authorization", b"proxy-authorization", b"cookie", b"x-api-key"})
_CREDENTIAL_HEADERS = (b"authorization", b"cookie")
#: Parameters keyed by hash, never in clear: passwords, tokens, keys, secrets, sessions.
_SECRET_NAME = re.compile(
    r"(?:^|_)(?:password|passwd|pwd|passphrase|secret|token|apikey|api_key|credentials?|"
    r"authorization|cookie|session_?id|private_key)(?:_|$)",
    re.IGNORECASE,
)


class Secret:
    """A secret argument's stand-in in a key: `Secret("#<xxh3-128 of its canonical form>")`."""

    __slots__ = ("digest",)

    def __init__(self, digest: str) -> None:
        self.digest = digest

    def __cache_key__(self) -> str:
        return self.digest


def _hashed(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, (SecretStr, SecretBytes)):
        value = value.get_secret_value()
    canonical = cache_key(None, "", "", [("", value)])
    return Secret("#" + etag(canonical.encode("utf-8"))[1:-1])


def _ttl_ms(expire: Expire) -> int:
    if isinstance(expire, bool) or not isinstance(expire, (int, timedelta)):
        raise ConfigError(f"expire must be an int (seconds) or a timedelta, not {expire!r}")
    seconds = expire.total_seconds() if isinstance(expire, timedelta) else expire
    if seconds < 0:
        raise ConfigError(f"expire must not be negative, got {expire!r}")
    return int(seconds * 1000)


def _compress_over(compress: bool | int | None) -> int | StoreSetting | None:
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


def _is_async(func: Callable[..., Any]) -> bool:
    if inspect.iscoroutinefunction(func):
        return True
    call = getattr(func, "__call__", None)  # noqa: B004 - async __call__ on an instance
    return call is not None and inspect.iscoroutinefunction(call)


# (store, module, qualname) -> the live functions decorated under it, in decoration order.
_registry: dict[tuple[int, str, str], list[weakref.ref[Any]]] = {}
_registry_lock = threading.Lock()


def _registered_name(func: Callable[..., Any], module: str, store: Cache | None) -> str:
    """The function-name part of the keys of `func`.

    Route factories build several endpoints from one `def`: same module, same `__name__`,
    different behaviour (the peer study's `/orders` served `/users` data). The first live
    function decorated under a module and qualified name (for one `store=`, or for the
    default store) keeps its plain name, as the seed
    documents; the n-th gets `name#n` and a warning suggesting `@cache(name=...)`, which
    pins a name that does not depend on decoration order.
    """
    plain = getattr(func, "__name__", None) or type(func).__name__
    qualname = getattr(func, "__qualname__", None) or plain
    with _registry_lock:
        slot = (0 if store is None else id(store), module, qualname)
        live = [r for r in _registry.get(slot, []) if r() is not None]
        try:
            live.append(weakref.ref(func))
        except TypeError:  # not weak-referenceable (a callable instance with __slots__)
            return plain
        _registry[slot] = live
        position = len(live)
    if position == 1:
        return plain
    logger.warning(
        "%s.%s is decorated with @cache %d times (a route factory?); its keys are %s#%d so "
        "the endpoints never share entries. Pass @cache(name=...) to pin a stable name.",
        module,
        qualname,
        position,
        plain,
        position,
    )
    return f"{plain}#{position}"


def misplaced_endpoints(app: Any) -> list[Callable[..., Any]]:
    """Functions decorated with `@cache` that a route of `app` calls undecorated: `@cache`
    was written above `@app.get(...)`, so the route registered the plain function."""
    decorated: dict[int, Callable[..., Any]] = {}
    with _registry_lock:
        for refs in _registry.values():
            for ref in refs:
                func = ref()
                if func is not None:
                    decorated[id(func)] = func
    found: list[Callable[..., Any]] = []
    seen: set[int] = set()

    def walk(routes: Any) -> None:
        if id(routes) in seen or not isinstance(routes, list):
            return
        seen.add(id(routes))
        for route in routes:
            endpoint = getattr(route, "endpoint", None)
            if endpoint is not None and id(endpoint) in decorated:
                found.append(endpoint)
            for attr in ("original_router", "router"):  # included routers (FastAPI 0.16x)
                walk(getattr(getattr(route, attr, None), "routes", None))
            walk(getattr(route, "routes", None))  # Mount, APIRouter

    walk(getattr(getattr(app, "router", app), "routes", None))
    return found


def _annotated_metadata(annotation: Any) -> tuple[Any, ...]:
    if typing.get_origin(annotation) is typing.Annotated:
        return tuple(typing.get_args(annotation)[1:])
    return ()


def _find_param(signature: inspect.Signature, hints: dict[str, Any], cls: type[Any]) -> str | None:
    """The name of the parameter annotated with `cls` (or a subclass), if any."""
    for name in signature.parameters:
        if name in hints and is_ignored_annotation(hints[name], (cls,)):
            return name
    return None


class CachedEndpoint:
    """What `@cache` knows about one endpoint; the wrapper FastAPI calls delegates here."""

    def __init__(
        self,
        func: Callable[..., Any],
        ttl_ms: int,
        store: Cache | None,
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
    ) -> None:
        self.compress_over = _compress_over(compress)
        if not isinstance(early_recompute, (int, float)) or not 0 <= early_recompute < 1e6:
            raise ConfigError("early_recompute must be a number >= 0 (XFetch's beta; 1 is usual)")
        self.beta = float(early_recompute)
        # XFetch's delta: how long a run of this endpoint takes (a moving average, seconds).
        self.run_s = 0.0
        if max_age is not None and cache_control is not None:
            raise ConfigError("give max_age or cache_control, not both")
        self.browser_max_age = None if max_age is None else _ttl_ms(max_age) // 1000
        if cache_control is not None:
            if not isinstance(cache_control, str) or not cache_control.strip():
                raise ConfigError("cache_control must be a non-empty header value")
            try:
                self.control: bytes | None = cache_control.strip().encode("ascii")
            except UnicodeEncodeError:
                raise ConfigError("cache_control must be ASCII") from None
            if any(c in cache_control for c in "\r\n\0"):
                raise ConfigError("cache_control must be one header line")
        else:
            self.control = None
        self.refresh_on_no_cache = refresh_on_no_cache
        if name is not None and (not isinstance(name, str) or not name or "(" in name):
            raise ConfigError(f"name must be a non-empty string without '(', not {name!r}")
        self.func = func
        self.ttl_ms = ttl_ms
        self.store = store
        self.swr_ms = _ttl_ms(stale_while_revalidate)
        self.sie_ms = _ttl_ms(stale_if_error)
        self.stale_ms = max(self.swr_ms, self.sie_ms)
        self.directives = b"".join(
            f", {name}={ms // 1000}".encode("ascii")
            for name, ms in (
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
        for name in names:
            if not _TOKEN.match(name):
                raise ConfigError(f"vary: {name!r} is not a header name")
        self.vary_names = tuple(dict.fromkeys(n.lower().encode("latin-1") for n in names))
        self.vary_header = ", ".join(dict.fromkeys(names)).encode("latin-1") if names else None
        self.is_async = _is_async(func)
        self.module = getattr(func, "__module__", None) or "__main__"
        self.name = name or _registered_name(func, self.module, store)
        signature = inspect.signature(func)
        hints = resolved_hints(func)
        self.hints = hints
        self.params = list(signature.parameters.values())
        if any(p.kind is p.VAR_POSITIONAL for p in self.params):
            raise ConfigError(f"@cache cannot key {self.name}: *args parameters are not supported")

        self.tags = tuple(tags or ())
        known = {p.name for p in self.params}
        for template in self.tags:
            for _, field, _, _ in string.Formatter().parse(template):
                root = re.split(r"[.\[]", field, maxsplit=1)[0] if field else field
                if field is not None and root not in known:
                    raise ConfigError(
                        f"tag {template!r} of {self.name} names {field!r}, which is not one "
                        f"of its parameters {sorted(known)}"
                    )

        self.request_param = _find_param(signature, hints, Request)
        self.response_param = _find_param(signature, hints, Response)
        extra: list[inspect.Parameter] = []
        if self.request_param is None:
            extra.append(
                inspect.Parameter(
                    _REQUEST_PARAM, inspect.Parameter.KEYWORD_ONLY, annotation=Request
                )
            )
        if self.response_param is None:
            extra.append(
                inspect.Parameter(
                    _RESPONSE_PARAM, inspect.Parameter.KEYWORD_ONLY, annotation=Response
                )
            )
        if per_user is not None:
            # FastAPI resolves it with the endpoint's own dependencies, once per request
            # (its dependency cache shares it with a `Depends` of the same callable).
            extra.append(
                inspect.Parameter(
                    _USER_PARAM,
                    inspect.Parameter.KEYWORD_ONLY,
                    default=Depends(per_user),
                    annotation=Any,
                )
            )
        params = list(self.params)
        var_kw = [p for p in params if p.kind is p.VAR_KEYWORD]
        params = [p for p in params if p.kind is not p.VAR_KEYWORD] + extra + var_kw
        # FastAPI reads the wrapper's signature; evaluated hints keep string annotations working.
        self.signature = signature.replace(
            parameters=[p.replace(annotation=hints.get(p.name, p.annotation)) for p in params],
            return_annotation=hints.get("return", signature.return_annotation),
        )
        self._key_names: dict[tuple[type[Any], ...], tuple[str, ...]] = {}
        # Parameters FastAPI fills from dependencies: a caller of `store.invalidate` may not
        # know their values, so every variant of a call is listed under its other arguments.
        self.deps = frozenset(
            p.name
            for p in self.params
            if isinstance(p.default, DependsParam)
            or any(isinstance(m, DependsParam) for m in _annotated_metadata(hints.get(p.name)))
        )
        self.secret_params = frozenset(
            p.name
            for p in self.params
            if _SECRET_NAME.search(p.name)
            or any(
                issubclass(t, (SecretStr, SecretBytes))
                for t in annotation_types(hints.get(p.name))
                if isinstance(t, type)
            )
        )
        self.has_variants = bool(self.deps or per_user is not None or self.vary_names)

    # -- keys ------------------------------------------------------------------------------

    def key_names(self, ignored: tuple[type[Any], ...]) -> tuple[str, ...]:
        """Parameters whose annotation does not exclude them from the key, in signature order."""
        names = self._key_names.get(ignored)
        if names is None:
            skip = ALWAYS_IGNORED + ignored
            names = tuple(
                p.name
                for p in self.params
                if p.kind is not p.VAR_KEYWORD
                and not is_ignored_annotation(self.hints.get(p.name), skip)
            )
            self._key_names[ignored] = names
        return names

    def key(
        self, store: Cache, values: dict[str, Any], extra: list[tuple[str, Any]] | None = None
    ) -> str:
        """The key of a call; `extra` holds the per-user and `vary` parts, whose names
        (`@user`, `@vary:<header>`) no Python parameter can have."""
        ignored = store.ignore_arg_types
        skip = ALWAYS_IGNORED + ignored if ignored else ALWAYS_IGNORED
        args = [
            (name, values[name])
            for name in self.key_names(ignored)
            if name in values and not isinstance(values[name], skip)
        ]
        if self.secret_params:
            args = [(n, _hashed(v) if n in self.secret_params else v) for n, v in args]
        if extra:
            args += extra
        return cache_key(store.prefix, self.module, self.name, args)

    def indexes(self, store: Cache, values: dict[str, Any], user: str | None) -> list[str]:
        """The indexes a new entry is listed in: its user's, its base entry's variants (for
        `invalidate(endpoint, **args)`), and its tags."""
        found: list[str] = []
        if user is not None:
            found.append(store.user_index(user))
        if self.has_variants:
            found.append(store.variants_index(self.base_key(store, values)))
        for template in self.tags:
            found.append(store.tag_index(template.format_map(values)))
        return found

    def call_values(self, args: dict[str, Any]) -> dict[str, Any]:
        """`args` with defaults filled in as FastAPI would (dependencies are not filled)."""
        values: dict[str, Any] = {}
        for param in self.params:
            if param.name in args:
                values[param.name] = args[param.name]
            elif param.default is not inspect.Parameter.empty and param.name not in self.deps:
                default = param.default
                values[param.name] = getattr(default, "default", default)
        unknown = set(args) - {p.name for p in self.params}
        if unknown:
            raise ConfigError(f"{self.name} has no parameters named {sorted(unknown)}")
        return values

    def key_for_call(self, store: Cache, args: dict[str, Any]) -> str:
        """The key of a call with `args` (for a shared entry with no `vary`)."""
        return self.key(store, self.call_values(args))

    def base_key(self, store: Cache, values: dict[str, Any]) -> str:
        """The key over the arguments that are not dependencies: the name of the index
        that lists every variant (users, `vary` values, dependency values) of a call."""
        if not self.deps:
            return self.key(store, values)
        return self.key(store, {k: v for k, v in values.items() if k not in self.deps})

    def invalidation(self, store: Cache, args: dict[str, Any]) -> tuple[list[str], list[str]]:
        """The indexes and keys `store.invalidate(endpoint, **args)` deletes."""
        values = self.call_values(args)
        base = self.base_key(store, values)
        keys = [base]
        if self.deps and self.deps <= values.keys():
            keys.append(self.key(store, values))
        return ([store.variants_index(base)] if self.has_variants else []), keys

    # -- requests --------------------------------------------------------------------------

    async def call(self, kwargs: dict[str, Any]) -> Any:
        began = time.monotonic()
        if self.is_async:
            result = await self.func(**kwargs)
        else:
            result = await run_in_threadpool(self.func, **kwargs)
        if self.beta:  # XFetch's delta
            took = time.monotonic() - began
            self.run_s = took if not self.run_s else 0.8 * self.run_s + 0.2 * took
        return result

    async def _bypass(self, store: Cache, kwargs: dict[str, Any]) -> Any:
        """Serve a cacheable request without the cache (counted in `stats()`)."""
        store.counters.bypasses += 1
        return await self.call(kwargs)

    async def handle(
        self,
        request: Request,
        sub_response: Response | None,
        kwargs: dict[str, Any],
        user: Any = _NO_USER,
    ) -> Any:
        if request.scope["method"] not in _CACHED_METHODS or self.ttl_ms <= 0:
            return await self.call(kwargs)
        cache_control, pragma, condition_raw, credentials, varied = self._scan(request.scope)
        vary_names = self.vary_names
        directives = request_directives(cache_control, pragma)
        store = self.store or default_store()
        force = False
        if directives is not None and (directives.no_store or directives.no_cache):
            refresh = (
                store.refresh_on_no_cache
                if self.refresh_on_no_cache is None
                else self.refresh_on_no_cache
            )
            if directives.no_store or not refresh:
                return await self._bypass(store, kwargs)  # the seed's behaviour: no caching
            force = True  # run the endpoint and store its fresh result (opt-in)

        uid: str | None = None
        if self.per_user is not None:
            try:
                uid = normalize_user_id(user)
            except TypeError as exc:
                store._warn_once(
                    "user:" + self.module + "." + self.name,
                    "%s is served uncached: %s",
                    self.name,
                    exc,
                )
                return await self._bypass(store, kwargs)
        elif credentials is not None and not self.shared:
            store._warn_once(
                "credentials:" + self.module + "." + self.name,
                "%s is served uncached to requests with Authorization or Cookie: its "
                "response may depend on the user. Use @cache(per_user=<dependency returning "
                "the user id>) to cache it per user, or @cache(shared=True) if it is the "
                "same for everyone.",
                self.name,
            )
            return await self._bypass(store, kwargs)

        extra: list[tuple[str, Any]] | None = None
        if uid is not None or varied is not None:
            extra = []
            if uid is not None:
                extra.append(("@user", uid))
            if varied is not None:
                for name in vary_names:
                    raw = varied.get(name)
                    part: str | None
                    if raw is not None and name in _SECRET_HEADERS:
                        part = "#" + etag(raw)[1:-1]
                    else:
                        part = None if raw is None else raw.decode("latin-1").strip()
                    extra.append(("@vary:" + name.decode("latin-1"), part))
        try:
            key = self.key(store, kwargs, extra)
        except KeyBuildError as exc:
            store._warn_once(
                "key:" + self.module + "." + self.name, "%s is served uncached: %s", self.name, exc
            )
            return await self._bypass(store, kwargs)

        fast = request.scope.get(_FAST)
        if fast is not None and (fast.memo.endpoint is not self or uid is not None):
            fast = None
        if fast is not None:
            fast.learn(store, key)
        now_ms = time.time_ns() // 1_000_000
        max_age_ms = (
            None if directives is None or directives.max_age is None else directives.max_age * 1000
        )
        reply = _Reply(
            store,
            None if condition_raw is None else condition_raw.decode("latin-1"),
            uid is not None,
            self.vary_header,
            self.directives,
            self.browser_max_age,
            self.control,
        )
        if force:
            return await self._miss(store, request, sub_response, kwargs, key, uid, reply, None)
        refresh_due: bool | None = None  # XFetch's draw, when CachedRoute made it
        if fast is not None and fast.read_key == key and fast.store is store:
            # `CachedRoute` read this entry already, and left the request to this path.
            entry, read_at, refresh_due = fast.entry, fast.read_at, fast.refresh_due
        else:
            read_at = time.monotonic()
            found = await _lookup(store, key, reply, now_ms, max_age_ms)
            if isinstance(found, CachedResponse):
                return found
            entry = found
        if entry is not None:
            if entry.expires_ms > now_ms and (
                max_age_ms is None or now_ms - entry.created_ms <= max_age_ms
            ):
                logger.info("KEY_FOUND_IN_CACHE: key=%s", key)
                store.counters.hits += 1
                response = reply.replay(entry, now_ms)
                if refresh_due is None:
                    refresh_due = bool(self.beta) and _xfetch(
                        now_ms, entry.expires_ms, self.run_s, self.beta
                    )
                if refresh_due:
                    self._refresh_later(store, request, kwargs, key, uid, response)
                return response
            if max_age_ms is None and entry.expires_ms <= now_ms < entry.expires_ms + self.swr_ms:
                # RFC 5861 stale-while-revalidate: serve at once, refresh after the response
                # (as a background task, while the request's dependencies are still open).
                store.counters.stale += 1
                logger.info("KEY_FOUND_IN_CACHE: key=%s (stale, revalidating)", key)
                response = reply.replay(entry, now_ms)
                self._refresh_later(store, request, kwargs, key, uid, response)
                return response
        return await self._miss(
            store, request, sub_response, kwargs, key, uid, reply, entry, read_at
        )

    def _scan(
        self, scope: MutableMapping[str, Any]
    ) -> tuple[bytes | None, bytes | None, bytes | None, bytes | None, dict[bytes, bytes] | None]:
        """One pass over the raw request headers finds everything the cache looks at:
        Cache-Control, Pragma, If-None-Match, a credential header (not among `vary`), and
        the `vary` headers' values (None when the endpoint has no `vary`)."""
        cache_control = pragma = condition_raw = None
        credentials: bytes | None = None
        vary_names = self.vary_names
        varied: dict[bytes, bytes] | None = {} if vary_names else None
        for name, value in scope["headers"]:
            if name == b"cache-control":
                cache_control = value if cache_control is None else cache_control + b", " + value
            elif name == b"if-none-match":
                condition_raw = value if condition_raw is None else condition_raw + b", " + value
            elif name == b"pragma":
                pragma = value
            elif name in _CREDENTIAL_HEADERS and name not in vary_names:
                credentials = name
            if varied is not None and name in vary_names:
                seen = varied.get(name)
                varied[name] = value if seen is None else seen + b", " + value
        return cache_control, pragma, condition_raw, credentials, varied

    async def answer_early(
        self, scope: MutableMapping[str, Any], memo: RouteMemo
    ) -> Response | None:
        """`CachedRoute`'s hit before FastAPI solves the parameters: the response when this
        raw request's key is known and its entry is fresh (or a 304), else None (after
        leaving what it read in the scope for `handle`)."""
        if scope["method"] not in _CACHED_METHODS or self.ttl_ms <= 0:
            return None
        cache_control, pragma, condition_raw, credentials, varied = self._scan(scope)
        if cache_control is not None or pragma is not None:
            return None  # request directives: `handle` applies them
        if credentials is not None and not self.shared:
            return None  # `handle` decides (served uncached, with a warning)
        vary_names = self.vary_names
        # Everything such a route's key depends on (FastAPI takes path parameters from the
        # path after root_path); credential headers only as their hash, as in keys.
        path, query = scope["path"], scope["query_string"]
        size = len(path) + len(query)
        signature: tuple[Any, ...]
        if varied is None:
            signature = (scope.get("root_path", ""), path, query)
        else:
            parts: list[bytes | str | None] = []
            for name in vary_names:
                raw = varied.get(name)
                if raw is not None:
                    size += len(raw)
                    if name in _SECRET_HEADERS:
                        parts.append(etag(raw))
                        continue
                parts.append(raw)
            signature = (scope.get("root_path", ""), path, query, *parts)
        state = EarlyState(memo, signature, learn=size <= _ROUTE_MEMO_MAX_REQUEST)
        scope[_FAST] = state
        known = memo.keys.get(signature)
        if known is None:
            return None
        store, key = known
        if store is not (self.store or default_store()):
            return None  # the store was replaced since: learn again
        now_ms = time.time_ns() // 1_000_000
        reply = _Reply(
            store,
            None if condition_raw is None else condition_raw.decode("latin-1"),
            False,
            self.vary_header,
            self.directives,
            self.browser_max_age,
            self.control,
        )
        read_at = time.monotonic()
        found = await _lookup(store, key, reply, now_ms, None)
        if isinstance(found, CachedResponse):
            return found
        if found is not None and found.expires_ms > now_ms:
            if not (self.beta and _xfetch(now_ms, found.expires_ms, self.run_s, self.beta)):
                logger.info("KEY_FOUND_IN_CACHE: key=%s", key)
                store.counters.hits += 1
                return reply.replay(found, now_ms)
            state.refresh_due = True  # `handle` refreshes it: the draw is made once
        # Missing, stale or due for an early refresh: FastAPI's path, without reading again.
        state.store, state.read_key, state.entry, state.read_at = store, key, found, read_at
        return None

    # -- misses --------------------------------------------------------------------------

    async def _miss(
        self,
        store: Cache,
        request: Request,
        sub_response: Response | None,
        kwargs: dict[str, Any],
        key: str,
        uid: str | None,
        reply: _Reply,
        stale: Any,
        read_at: float | None = None,
    ) -> Any:
        """Run the endpoint once for all concurrent misses of `key` in this process (and,
        with `lock_timeout`, across workers), store the result, and answer.

        `read_at` is when this request started reading the store: a run of `key` that
        stored its entry after that raced our read, so the entry is read again instead of
        running the endpoint a second time."""
        loop = asyncio.get_running_loop()
        landed = store._landed.get(key)
        if read_at is not None and landed is not None and landed >= read_at:
            entry = await store.read(key)
            now_ms = time.time_ns() // 1_000_000
            if entry is not None and entry.expires_ms > now_ms:
                store.counters.hits += 1
                store.counters.coalesced += 1
                return reply.replay(entry, now_ms)
        flight = store._inflight.get(key)
        if flight is not None and flight.get_loop() is loop:
            shared = await asyncio.shield(flight)
            if shared is not None:
                store.counters.hits += 1
                store.counters.coalesced += 1
                return reply.replay(shared, time.time_ns() // 1_000_000)
            # The run we waited for failed or was not cacheable: run it as the route would.
            return (await self._run(store, request, sub_response, kwargs, key, uid, reply, stale))[
                0
            ]
        flight = loop.create_future()
        store._inflight[key] = flight
        token = b""
        try:
            if store.lock_ms > 0:
                token = uuid.uuid4().bytes
                if not await store.acquire(key, token):
                    token = b""
                    waited = await self._wait_for_entry(store, key)
                    if waited is not None:
                        flight.set_result(waited)
                        store.counters.hits += 1
                        store.counters.coalesced += 1
                        return reply.replay(waited, time.time_ns() // 1_000_000)
            response, stored = await self._run(
                store, request, sub_response, kwargs, key, uid, reply, stale
            )
            flight.set_result(stored)
            if stored is not None:
                if len(store._landed) >= _MAX_LANDED:
                    store._landed.clear()
                store._landed[key] = time.monotonic()
            return response
        finally:
            if store._inflight.get(key) is flight:
                del store._inflight[key]
            if not flight.done():
                flight.set_result(None)
            if token:
                await store.release(key, token)

    async def _wait_for_entry(self, store: Cache, key: str) -> Any:
        """Poll for the entry another worker is computing, at most `lock_timeout`."""
        deadline = time.monotonic() + store.lock_ms / 1000
        delay = 0.005
        while time.monotonic() < deadline:
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)
            entry = await store.read(key)
            if entry is not None and entry.expires_ms > time.time_ns() // 1_000_000:
                return entry
        return None

    async def _run(
        self,
        store: Cache,
        request: Request,
        sub_response: Response | None,
        kwargs: dict[str, Any],
        key: str,
        uid: str | None,
        reply: _Reply,
        stale: Any,
    ) -> tuple[Any, _Stored | None]:
        """Run the endpoint, store a cacheable result; serve `stale` if it fails and
        stale-if-error allows. Returns the response and what was stored (or None)."""
        store.counters.misses += 1
        try:
            result = await self.call(kwargs)
        except Exception as exc:
            if self._stale_if_error(stale, exc):
                store.counters.stale += 1
                logger.warning(
                    "%s failed (%s); serving the stale entry %s (stale-if-error)",
                    self.name,
                    type(exc).__name__,
                    key,
                )
                return reply.replay(stale, time.time_ns() // 1_000_000), None
            raise
        try:
            response = await render(request, result, sub_response, self.func, self.is_async)
        except Exception as exc:
            # The uncached route would fail the same way; nothing is stored.
            logger.info("FAILED_TO_CACHE_KEY: key=%s (%s)", key, type(exc).__name__)
            raise
        if response.status_code >= 500 and self._stale_if_error(stale, None):
            store.counters.stale += 1
            return reply.replay(stale, time.time_ns() // 1_000_000), None
        stored = await self._store(store, response, kwargs, key, uid)
        if stored is None:
            return response, None
        if reply.condition is not None and if_none_match(reply.condition, stored.etag):
            miss = reply.headers(stored, stored.created_ms, hit=False)
            return CachedResponse(304, miss, b""), stored
        response.raw_headers = [
            (n, v)
            for n, v in response.raw_headers
            if n not in OWN_HEADERS or n == b"content-length"
        ] + reply.headers(stored, stored.created_ms, hit=False)
        return response, stored

    def _stale_if_error(self, stale: Any, exc: Exception | None) -> bool:
        if stale is None or not self.sie_ms:
            return False
        if exc is not None and getattr(exc, "status_code", 500) < 500:
            return False  # an HTTPException(404) is an answer, not an error
        return bool(time.time_ns() // 1_000_000 < stale.expires_ms + self.sie_ms)

    async def _store(
        self, store: Cache, response: Response, kwargs: dict[str, Any], key: str, uid: str | None
    ) -> _Stored | None:
        """Store a rendered response if it may be cached; what was stored, or None."""
        rendered = getattr(response, "body", None)
        if not isinstance(rendered, bytes):
            store._warn_once(
                "stream:" + self.name,
                "%s returned a %s, which is never cached (its body is not known in advance)",
                self.name,
                type(response).__name__,
            )
            return None
        status = response.status_code
        if not 200 <= status < 300 or any(
            name == b"set-cookie" or (name == b"cache-control" and _forbids_store(value))
            for name, value in response.raw_headers
        ):
            return None
        try:
            indexes = self.indexes(store, kwargs, uid)
        except Exception as exc:  # a tag that cannot be formatted from these arguments
            logger.info("FAILED_TO_CACHE_KEY: key=%s (tags: %s)", key, exc)
            return None
        stored_headers = [
            (n, v)
            for n, v in response.raw_headers
            if n not in OWN_HEADERS and n != store.hit_header
        ]
        now_ms = time.time_ns() // 1_000_000
        expires_ms = now_ms + self.ttl_ms
        data = encode_entry(status, stored_headers, rendered, now_ms, expires_ms)
        # Kept past its freshness for as long as a stale copy may still be served.
        await store.write(key, data, self.ttl_ms + self.stale_ms, indexes, self.compress_over)
        return _Stored(status, stored_headers, rendered, etag(rendered), now_ms, expires_ms)

    def _refresh_later(
        self,
        store: Cache,
        request: Request,
        kwargs: dict[str, Any],
        key: str,
        uid: str | None,
        response: Any,
    ) -> None:
        """Refresh `key` after `response` is sent, unless a refresh of it is running."""
        started = store._refreshing.get(key)
        if started is None or started < time.monotonic() - _REFRESH_GIVE_UP_S:
            # (A refresh that never ran, say the client left before the background task,
            # is given up after a while rather than blocking refreshes forever.)
            if len(store._refreshing) > 10_000:
                store._refreshing.clear()
            store._refreshing[key] = time.monotonic()
            response.background = BackgroundTask(self._refresh, store, request, kwargs, key, uid)

    async def _refresh(
        self, store: Cache, request: Request, kwargs: dict[str, Any], key: str, uid: str | None
    ) -> None:
        """Background revalidation of a stale entry (after its stale copy was sent)."""
        try:
            fresh = dict(kwargs)
            sub_response = Response()
            del sub_response.headers["content-length"]
            sub_response.status_code = None  # type: ignore[assignment]
            if self.response_param is not None:
                fresh[self.response_param] = sub_response
            result = await self.call(fresh)
            response = await render(request, result, sub_response, self.func, self.is_async)
            await self._store(store, response, fresh, key, uid)
        except Exception as exc:  # the stale copy stays until it runs out
            logger.warning("refreshing %s failed (%s: %s)", key, type(exc).__name__, exc)
        finally:
            store._refreshing.pop(key, None)


async def _lookup(
    store: Cache, key: str, reply: _Reply, now_ms: int, max_age_ms: int | None
) -> Any:
    """The 304 for a request whose `If-None-Match` matches the entry's ETag (read from the
    entry's head only), else the entry under `key` (None when there is none)."""
    if reply.condition is not None:
        head = await store.read_head(key)
        if (
            head is not None
            and head.expires_ms > now_ms
            and (max_age_ms is None or now_ms - head.created_ms <= max_age_ms)
            and if_none_match(reply.condition, head.etag)
        ):
            logger.info("KEY_FOUND_IN_CACHE: key=%s", key)
            store.counters.hits += 1
            return CachedResponse(304, reply.headers(head, now_ms, hit=True), b"")
    return await store.read(key)


class RouteMemo:
    """What `CachedRoute` learned for one route: raw request -> (store, key), the oldest
    forgotten first past `_ROUTE_MEMO_LIMIT` requests."""

    __slots__ = ("__weakref__", "endpoint", "keys")

    def __init__(self, endpoint: CachedEndpoint) -> None:
        self.endpoint = endpoint
        self.keys: OrderedDict[tuple[Any, ...], tuple[Cache, str]] = OrderedDict()


class EarlyState:
    """One request as `CachedRoute` saw it: its raw signature, and the entry it read when it
    did not answer (so FastAPI's path does not read it again)."""

    __slots__ = (
        "entry",
        "learns",
        "memo",
        "read_at",
        "read_key",
        "refresh_due",
        "signature",
        "store",
    )

    def __init__(self, memo: RouteMemo, signature: tuple[Any, ...], learn: bool = True) -> None:
        self.memo = memo
        self.signature = signature
        self.learns = learn  # False for a request too large to remember
        self.store: Cache | None = None
        self.read_key: str | None = None
        self.entry: Any = None
        self.read_at = 0.0
        self.refresh_due: bool | None = None

    def learn(self, store: Cache, key: str) -> None:
        """FastAPI's path computed `key` for this raw request."""
        if not self.learns:
            return
        keys = self.memo.keys
        if self.signature not in keys and len(keys) >= _ROUTE_MEMO_LIMIT:
            keys.popitem(last=False)  # the oldest
        keys[self.signature] = (store, key)


class _Stored:
    """What a miss stored, shaped like a decoded `Entry` for the requests that waited."""

    __slots__ = ("body", "created_ms", "etag", "expires_ms", "headers", "status")

    def __init__(
        self,
        status: int,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        etag: str,
        created_ms: int,
        expires_ms: int,
    ) -> None:
        self.status = status
        self.headers = headers
        self.body = body
        self.etag = etag
        self.created_ms = created_ms
        self.expires_ms = expires_ms


class _Reply:
    """How responses to one request are marked: the request's `If-None-Match`, and the
    endpoint's `private`, `Vary` and extra Cache-Control directives."""

    __slots__ = ("browser", "condition", "control", "directives", "private", "store", "vary")

    def __init__(
        self,
        store: Cache,
        condition: str | None,
        private: bool,
        vary: bytes | None,
        directives: bytes,
        browser: int | None = None,
        control: bytes | None = None,
    ) -> None:
        self.store = store
        self.condition = condition
        self.private = private
        self.vary = vary
        self.directives = directives
        self.browser = browser
        self.control = control

    def headers(self, entry: Any, now_ms: int, hit: bool = True) -> list[tuple[bytes, bytes]]:
        store = self.store
        return cache_headers(
            etag=entry.etag,
            created_ms=entry.created_ms,
            expires_ms=entry.expires_ms,
            now_ms=now_ms,
            hit=hit,
            hit_header=store.hit_header,
            weak=not store.strong_etag,
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


def _xfetch(now_ms: int, expires_ms: int, run_s: float, beta: float) -> bool:
    """XFetch (Vattani, Chierichetti, Lowenstein, VLDB 2015): recompute early when
    `now - delta * beta * ln(U) >= expiry`, U uniform in (0, 1], delta the run time."""
    return now_ms - run_s * 1000.0 * beta * math.log(1.0 - random.random()) >= expires_ms


def _forbids_store(value: bytes) -> bool:
    """RFC 9111 section 3: a shared cache must not store `no-store` or `private` responses."""
    lowered = value.lower()
    return b"no-store" in lowered or b"private" in lowered


@overload
def cache(expire: F) -> F: ...


@overload
def cache(
    expire: Expire = ONE_YEAR,
    *,
    store: Cache | None = None,
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
) -> Callable[[F], F]: ...


def cache(
    expire: Any = ONE_YEAR,
    *,
    store: Cache | None = None,
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
) -> Any:
    """Cache a FastAPI path operation's responses.

    Place it *below* the route decorator::

        @app.get("/items/{id}")
        @cache(expire=60)
        async def item(id: int): ...

    Only GET and HEAD requests with a 2xx response are cached; the key is built from the
    endpoint's arguments (`prefix:module.function(name=value,...)`). Hits and misses carry
    `Cache-Control`, `Expires`, `ETag` and the hit/miss header; `If-None-Match` gives 304.
    A request with `Cache-Control: no-cache` or `no-store` bypasses the cache entirely.

    Args:
        expire: Seconds (int) or a timedelta; default one year. 0 means "do not store".
        store: The `Cache` to use; by default the one configured by
            `FastApiRedisCache().init(...)` or last entered, else an in-memory store.
        per_user: A FastAPI dependency (sync or async) returning the user's stable id
            (str, int or UUID). FastAPI resolves it with the endpoint's dependencies (once
            per request, shared with a `Depends` of the same callable); the id goes into
            the key, responses say `Cache-Control: private`, and
            `store.invalidate_user(id)` deletes that user's entries. If the dependency
            raises (401, 403), nothing is read or stored.
        vary: Request header names whose values go into the key (absent and empty are
            different; credential headers are hashed); responses carry `Vary` with them.
        tags: Tags for `store.invalidate_tag`, formatted from the endpoint's arguments:
            `tags=["items", "item:{id}"]`.
        shared: The response is the same for every caller. Without it (and without
            `per_user`), a request carrying `Authorization` or a cookie bypasses the cache
            and a warning is logged once per endpoint, so one user's data never reaches
            another.
        stale_while_revalidate: Seconds after expiry during which the stale entry is
            served at once while one background run refreshes it (RFC 5861).
        stale_if_error: Seconds after expiry during which the stale entry is served if
            the endpoint raises or answers 5xx (RFC 5861).
        name: The function-name part of keys (default: the function's `__name__`); give
            endpoints built by one factory distinct names.
        max_age: Browser freshness apart from the server TTL: `expire=3600, max_age=60`
            keeps the entry an hour and tells clients 60 seconds (from delivery, no `Age`);
            `max_age=0` sends `no-cache`, so clients revalidate and get 304s.
        cache_control: The whole response Cache-Control value, verbatim (for example
            `"public, s-maxage=600"`); no `Expires` or `Age` is added.
        refresh_on_no_cache: When a request says `Cache-Control: no-cache` (or `Pragma:
            no-cache`), run the endpoint and store the fresh result instead of bypassing the
            cache. Default: the store's setting (off, the seed's behaviour).
        early_recompute: XFetch's beta (Vattani et al., VLDB 2015), 0 (off) by default, 1
            usual: a hit close to expiry refreshes the entry early in the background with
            probability rising as expiry nears (sooner for endpoints that take longer to
            run), so a hot key is recomputed before it expires instead of by a stampede.
            The hit itself is served from the entry, as with stale_while_revalidate.
        compress: LZ4 compression of this endpoint's entries, over the store's
            `compress_over`: None (the default) follows the store; True compresses entries
            of 1 KiB and more, a number of bytes sets that threshold, False never
            compresses. An entry is stored compressed only when that makes it smaller;
            reading needs no setting.
    """
    if callable(expire) and not isinstance(expire, (int, timedelta)):
        return cache()(expire)  # bare @cache
    ttl_ms = _ttl_ms(expire)
    _compress_over(compress)  # a bad value fails here, not at the first request

    def decorator(func: F) -> F:
        endpoint = CachedEndpoint(
            func,
            ttl_ms,
            store,
            per_user=per_user,
            vary=vary,
            tags=tags,
            shared=shared,
            stale_while_revalidate=stale_while_revalidate,
            stale_if_error=stale_if_error,
            name=name,
            max_age=max_age,
            cache_control=cache_control,
            refresh_on_no_cache=refresh_on_no_cache,
            early_recompute=early_recompute,
            compress=compress,
        )
        request_param = endpoint.request_param
        response_param = endpoint.response_param
        has_user = per_user is not None

        @functools.wraps(func)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            request = (
                kwargs.pop(_REQUEST_PARAM, None)
                if request_param is None
                else kwargs.get(request_param)
            )
            sub_response = (
                kwargs.pop(_RESPONSE_PARAM, None)
                if response_param is None
                else kwargs.get(response_param)
            )
            user = kwargs.pop(_USER_PARAM, _NO_USER) if has_user else _NO_USER
            if args or not isinstance(request, Request):
                # Called directly, not by FastAPI: behave like the undecorated function.
                if endpoint.is_async:
                    return await func(*args, **kwargs)
                return await run_in_threadpool(func, *args, **kwargs)
            return await endpoint.handle(request, sub_response, kwargs, user)

        wrapper.__signature__ = endpoint.signature  # type: ignore[attr-defined]
        wrapper.__oxcache__ = endpoint  # type: ignore[attr-defined]
        del wrapper.__wrapped__  # FastAPI must read our signature, not the original's
        return cast(F, wrapper)

    return decorator


def _shortcut(seconds: int, name: str) -> Callable[..., Callable[[F], F]]:
    shortcut = functools.partial(cache, expire=seconds)
    functools.update_wrapper(shortcut, cache)
    shortcut.__name__ = name  # type: ignore[attr-defined]
    shortcut.__qualname__ = name  # type: ignore[attr-defined]
    shortcut.__doc__ = f"`@cache` with `expire={seconds}` seconds."
    return cast(Callable[..., Callable[[F], F]], shortcut)


cache_one_minute = _shortcut(ONE_MINUTE, "cache_one_minute")
cache_one_hour = _shortcut(ONE_HOUR, "cache_one_hour")
cache_one_day = _shortcut(ONE_DAY, "cache_one_day")
cache_one_week = _shortcut(ONE_WEEK, "cache_one_week")
cache_one_month = _shortcut(ONE_MONTH, "cache_one_month")
cache_one_year = _shortcut(ONE_YEAR, "cache_one_year")
