"""Every function decorated with `@cache` or `@cached` in this process: the names their keys
use, what the store's `key_for`/`invalidate` read from them, and the endpoints a route calls
undecorated (`@cache` written above `@app.get`)."""

from __future__ import annotations

import logging
import threading
import weakref
from typing import Any, Callable, Protocol

from oxcache.errors import ConfigError
from oxcache.keys import KeySpace

__all__ = [
    "Keyed",
    "keyed",
    "misplaced_endpoints",
    "registered_name",
    "uncached_methods",
    "warn_misplaced",
]

logger = logging.getLogger("oxcache")

# (id of the store or 0, module, qualname) -> the live functions decorated under it, in
# decoration order.
_registry: dict[tuple[int, str, str], list[weakref.ref[Any]]] = {}
_registry_lock = threading.Lock()


class Keyed(Protocol):
    """What `@cache` and `@cached` record on the function they return (`__oxcache__`):
    how a call's key is built, for `Cache.key_for` and `Cache.invalidate`."""

    def key_for_call(self, space: KeySpace, args: dict[str, Any], origin: str | None = None) -> str:
        """The key of a call with `args` (defaults filled in), from `origin` if the keys
        hold one."""
        ...

    def invalidation(self, space: KeySpace, args: dict[str, Any]) -> tuple[list[str], list[str]]:
        """The indexes and keys that deleting a call with `args` removes."""
        ...


def keyed(func: Callable[..., Any]) -> Keyed:
    """What `@cache` or `@cached` recorded on `func`; ConfigError if it is neither."""
    found: Keyed | None = getattr(func, "__oxcache__", None)
    if found is None:
        raise ConfigError(f"{func!r} is not decorated with @cache or @cached")
    return found


def registered_name(func: Callable[..., Any], module: str, store: object | None) -> str:
    """The function-name part of the keys of `func`.

    Route factories build several endpoints from one `def`: same module, same `__name__`,
    different behaviour (the peer study's `/orders` served `/users` data). The first live
    function decorated under a module and qualified name (for one `store=`, or for the
    default store) keeps its plain name, as the seed documents; the n-th gets `name#n` and
    a warning suggesting `@cache(name=...)`, which pins a name that does not depend on
    decoration order.
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


def _routes(app: Any) -> list[Any]:
    """Every route of `app`, through included routers and mounts."""
    found: list[Any] = []
    seen: set[int] = set()

    def walk(routes: Any) -> None:
        if id(routes) in seen or not isinstance(routes, list):
            return
        seen.add(id(routes))
        for route in routes:
            found.append(route)
            for attr in ("original_router", "router"):  # included routers (FastAPI 0.16x)
                walk(getattr(getattr(route, attr, None), "routes", None))
            walk(getattr(route, "routes", None))  # Mount, APIRouter

    walk(getattr(getattr(app, "router", app), "routes", None))
    return found


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
    for route in _routes(app):
        endpoint = getattr(route, "endpoint", None)
        if endpoint is not None and id(endpoint) in decorated and endpoint not in found:
            found.append(endpoint)
    return found


def uncached_methods(app: Any) -> list[tuple[Callable[..., Any], str, str]]:
    """`@cache` endpoints on routes that take none of the request methods `@cache` caches
    (GET and HEAD; such as `@app.post`): (endpoint, methods, path) of each."""
    found: list[tuple[Callable[..., Any], str, str]] = []
    for route in _routes(app):
        endpoint = getattr(route, "endpoint", None)
        cached: frozenset[str] | None = getattr(
            getattr(endpoint, "__oxcache__", None), "methods", None
        )
        methods = getattr(route, "methods", None)
        if endpoint is None or not cached or not methods or set(methods) & cached:
            continue
        found.append((endpoint, ", ".join(sorted(methods)), str(getattr(route, "path", "?"))))
    return found


def warn_misplaced(app: Any, warn_once: Callable[..., object]) -> None:
    """Warn (once per function, through `warn_once(tag, message, *args)`) about every
    endpoint of `app` that `@cache` never sees because it was written above the route, and
    every `@cache` endpoint whose route takes no GET or HEAD request."""
    for func in misplaced_endpoints(app):
        warn_once(
            "order:" + str(id(func)),
            "%s.%s is never cached: @cache is above the route decorator, so the route "
            "calls the undecorated function. Put @cache below @app.get(...), directly "
            "above the def.",
            getattr(func, "__module__", "?"),
            getattr(func, "__qualname__", func),
        )
    for func, methods, path in uncached_methods(app):
        warn_once(
            "methods:" + str(id(func)),
            "%s.%s is never cached: its route takes %s %s, and @cache caches only GET and "
            "HEAD requests unless told otherwise. Remove @cache from it (after a write, "
            "invalidate what it changed: store.invalidate(...), store.invalidate_tag(...)), "
            'or, for a query that changes nothing (search, GraphQL), @cache(methods=["POST"]).',
            getattr(func, "__module__", "?"),
            getattr(func, "__qualname__", func),
            methods,
            path,
        )
