"""The dependencies a hit does not need. FastAPI solves every parameter of the function it
calls before calling it, so a cached endpoint's database session would be opened for every
hit. `@cache` keeps such a dependency out of the signature FastAPI reads, and solves it with
FastAPI's own solver (`solve_dependencies`, `dependency_overrides` honoured, yield
dependencies closed with the request's) only when the endpoint runs.

A dependency parameter is left to the endpoint's runs (`Deferred`) when all of these hold:

- its annotation names only classes that are not plain values (`db: Session`, not `str`, a
  pydantic model or a container), and it is not `Security(...)`;
- nothing in its tree reads the request's parameters (path, query, header, cookie, body),
  takes `BackgroundTasks` or `SecurityScopes`, is a security scheme, or is marked
  `always_run`;
- nothing in its tree is also needed by the endpoint's other dependencies or its `per_user`
  dependency (FastAPI would share one value between them).

When the store keys such a value (its type is not in the store's `ignore_arg_types`), it is
solved before the key on every request instead; the key is then the same as before."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Iterable, Iterator, MutableMapping
from contextlib import AsyncExitStack
from datetime import date, time, timedelta
from decimal import Decimal
from enum import Enum
from typing import Any, Callable, TypeVar
from uuid import UUID

from fastapi import params
from fastapi.security.base import SecurityBase
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response

from oxcache.errors import ConfigError
from oxcache.keys import ALWAYS_IGNORED
from oxcache.signature import annotated_metadata, annotation_types, is_ignored_annotation

try:  # FastAPI's solver, as routes use it; a FastAPI without it keeps every dependency
    from fastapi.dependencies.utils import get_dependant, solve_dependencies
except ImportError:  # pragma: no cover - every FastAPI this package supports has them
    get_dependant = solve_dependencies = None  # type: ignore[assignment]

__all__ = [
    "ALWAYS_RUN",
    "PENDING_PARAM",
    "SUPPORTED",
    "Deferred",
    "Pending",
    "always_run",
    "defer",
    "depends_of",
]

logger = logging.getLogger("oxcache")

F = TypeVar("F", bound=Callable[..., Any])

#: The attribute `always_run` sets on a dependency.
ALWAYS_RUN = "__oxcache_always_run__"
#: The key under which the wrapper leaves a request's `Pending` in the endpoint's kwargs.
PENDING_PARAM = "oxcache_pending__"

#: Classes whose values are data a key holds, never a resource: never deferred.
_VALUE_TYPES: tuple[type[Any], ...] = (
    str,
    bytes,
    bytearray,
    int,
    float,
    complex,
    bool,
    Decimal,
    UUID,
    Enum,
    date,
    time,
    timedelta,
    list,
    tuple,
    dict,
    set,
    frozenset,
    BaseModel,
)


def _supported() -> bool:
    """Whether FastAPI's solver takes what `Pending.solve` passes it (FastAPI with dependency
    scopes: the request's exit stacks are in the ASGI scope)."""
    if get_dependant is None or solve_dependencies is None:
        return False
    try:
        solve = set(inspect.signature(solve_dependencies).parameters)
        build = set(inspect.signature(get_dependant).parameters)
    except (TypeError, ValueError):  # pragma: no cover
        return False
    needed = {
        "request",
        "dependant",
        "response",
        "dependency_overrides_provider",
        "dependency_cache",
        "async_exit_stack",
        "embed_body_fields",
    }
    return needed <= solve and {"path", "call", "scope"} <= build


#: Whether this FastAPI lets `@cache` solve dependencies itself; without it (an older
#: FastAPI), FastAPI solves every dependency, as it always did.
SUPPORTED = _supported()


def always_run(dependency: F) -> F:
    """Mark a dependency to run on every request, hits included (a dependency with side
    effects: an audit log, a rate limit, a session that a hit must open too)::

        @always_run
        def audit(request: Request) -> AuditLog: ...

    Without the mark, a dependency whose value never goes into a key (its type is in the
    store's `ignore_arg_types`) runs only when the endpoint runs. Returns `dependency`."""
    try:
        setattr(dependency, ALWAYS_RUN, True)
    except (AttributeError, TypeError):  # a bound method: marked by equality, as FastAPI
        try:  # shares a dependency's value between equal callables
            _MARKED.add(dependency)
        except TypeError:
            raise ConfigError(
                f"always_run cannot mark {dependency!r}: wrap it in a function and mark that"
            ) from None
    return dependency


#: Marked dependencies that take no attribute (bound methods).
_MARKED: set[Any] = set()


def _marked(call: Any) -> bool:
    while call is not None:
        if getattr(call, ALWAYS_RUN, False) is True or _identity(call) in _MARKED:
            return True
        call = getattr(call, "func", None)  # functools.partial
    return False


def _identity(call: Any) -> Any:
    """What FastAPI's dependency cache compares a callable by: equality (two `obj.method`
    are one dependency), or identity for a callable that cannot be hashed."""
    try:
        hash(call)
    except TypeError:
        return id(call)
    return call


def depends_of(param: inspect.Parameter, hint: Any) -> params.Depends | None:
    """The `Depends(...)` FastAPI reads for `param` (as a default, or the last one in its
    `Annotated` metadata), if any."""
    if isinstance(param.default, params.Depends):
        return param.default
    found = [m for m in annotated_metadata(hint) if isinstance(m, params.Depends)]
    return found[-1] if found else None


def _resource_type(hint: Any) -> bool:
    """Whether the annotation names classes and none of them holds plain data."""
    classes = [c for c in annotation_types(hint) if c is not type(None)]
    return bool(classes) and not any(c is object or issubclass(c, _VALUE_TYPES) for c in classes)


def _holder(parameters: list[inspect.Parameter]) -> Callable[..., Any]:
    """A function with these parameters, for `get_dependant` to read (never called)."""

    def deferred(**kwargs: Any) -> None:  # pragma: no cover - only its signature is read
        raise RuntimeError("only read for its signature")

    keyword = inspect.Parameter.KEYWORD_ONLY  # any order of defaults
    deferred.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [p.replace(kind=keyword) for p in parameters]
    )
    return deferred


def _walk(dependant: Any) -> Iterator[Any]:
    """Every dependant in the tree under `dependant` (itself excluded)."""
    stack = list(getattr(dependant, "dependencies", ()) or ())
    while stack:
        node = stack.pop()
        yield node
        stack.extend(getattr(node, "dependencies", ()) or ())


def _calls(dependant: Any) -> set[Any]:
    return {_identity(node.call) for node in _walk(dependant)}


def _self_contained(sub: Any) -> bool:
    """Whether a dependency's tree can run apart from the request's parameters: it reads no
    path, query, header, cookie or body parameter, takes no `BackgroundTasks`, `WebSocket`
    or `SecurityScopes`, is no security scheme and is not marked `always_run`."""
    for node in (sub, *_walk(sub)):
        if (
            node.path_params
            or node.query_params
            or node.header_params
            or node.cookie_params
            or node.body_params
            or node.background_tasks_param_name
            or node.websocket_param_name
            or node.security_scopes_param_name
            or getattr(node, "own_oauth_scopes", None)
            or _marked(node.call)
            or isinstance(node.call, SecurityBase)
        ):
            return False
    return True


class Deferred:
    """The parameters of one endpoint that FastAPI leaves to `@cache` (their names, in
    order), and the `Dependant` that solves them."""

    __slots__ = ("_keyed", "calls", "dependant", "hints", "names", "warned")

    def __init__(self, names: tuple[str, ...], dependant: Any, hints: dict[str, Any]) -> None:
        self.names = names
        self.dependant = dependant
        self.hints = hints
        #: Every callable of their trees (by id), to notice a route that also needs one.
        self.calls = _calls(dependant)
        self._keyed: dict[tuple[type[Any], ...], bool] = {}
        #: The route dependants already checked for a shared dependency.
        self.warned: set[int] = set()

    def keyed(self, skip: tuple[type[Any], ...]) -> bool:
        """Whether a store leaving the types `skip` out of keys keys any of these values
        (then they are solved before the key)."""
        found = self._keyed.get(skip)
        if found is None:
            every = ALWAYS_IGNORED + skip
            found = not all(is_ignored_annotation(self.hints.get(n), every) for n in self.names)
            self._keyed[skip] = found
        return found

    def check_route(self, scope: MutableMapping[str, Any], name: str) -> None:
        """Warn once per route when a dependency of the route, its router or the app needs
        one of these dependencies: FastAPI would have shared one value, while the endpoint
        gets its own."""
        for holder in (scope.get("route"), _effective(scope)):
            dependant = getattr(holder, "dependant", None)
            if dependant is None or id(dependant) in self.warned:
                continue
            self.warned.add(id(dependant))
            shared = sorted(
                getattr(node.call, "__name__", repr(node.call))
                for node in _walk(dependant)
                if _identity(node.call) in self.calls
            )
            if shared:
                logger.warning(
                    "%s: the route's dependencies also use %s, which @cache solves apart "
                    "for the endpoint's own parameters %s on a miss (two values where "
                    "FastAPI makes one); mark the dependency with oxcache.always_run to "
                    "share it",
                    name,
                    ", ".join(dict.fromkeys(shared)),
                    list(self.names),
                )


def _effective(scope: MutableMapping[str, Any]) -> Any:
    """The route as included (FastAPI >= 0.16x keeps it in the scope), if any."""
    state = scope.get("fastapi")
    return state.get("effective_route_context") if isinstance(state, dict) else None


def defer(
    params_: Iterable[inspect.Parameter], hints: dict[str, Any], kept: Iterable[Any] = ()
) -> Deferred | None:
    """The endpoint parameters (of `params_`) FastAPI need not solve for a hit (see the
    module docstring); `kept` are more dependencies every request runs (`per_user`). None
    when there are none, or this FastAPI's solver is not the one this module knows."""
    if not SUPPORTED:
        return None
    parameters = [p for p in params_ if p.kind is not p.VAR_KEYWORD]
    candidates: dict[str, inspect.Parameter] = {}
    for param in parameters:
        depends = depends_of(param, hints.get(param.name))
        if (
            depends is None
            or isinstance(depends, params.Security)
            or depends.dependency is None
            or _marked(depends.dependency)
            or not _resource_type(hints.get(param.name))
        ):
            continue
        candidates[param.name] = param.replace(annotation=hints.get(param.name, param.annotation))
    if not candidates:
        return None
    extra = [
        inspect.Parameter(f"oxcache_kept_{i}__", inspect.Parameter.KEYWORD_ONLY, default=dep)
        for i, dep in enumerate(params.Depends(dependency=call) for call in kept)
    ]
    try:
        trees = {
            name: get_dependant(path="", call=_holder([param])).dependencies[0]
            for name, param in candidates.items()
        }
        candidates = {n: p for n, p in candidates.items() if _self_contained(trees[n])}
        while candidates:  # what runs on every request shares nothing with what does not
            others = [
                p.replace(annotation=hints.get(p.name, p.annotation))
                for p in parameters
                if p.name not in candidates
            ]
            others = [p for p in others if depends_of(p, p.annotation) is not None]
            kept_calls = _calls(get_dependant(path="", call=_holder(others + extra)))
            shared = [n for n in candidates if _calls_of(trees[n]) & kept_calls]
            if not shared:
                break
            for name in shared:
                del candidates[name]
        if not candidates:
            return None
        dependant = get_dependant(path="", call=_holder(list(candidates.values())))
    except Exception:  # a dependency FastAPI itself would reject: FastAPI says so
        return None
    return Deferred(tuple(candidates), dependant, hints)


def _calls_of(sub: Any) -> set[Any]:
    return {_identity(sub.call)} | _calls(sub)


class Pending:
    """One request's deferred dependencies, not solved yet: the wrapper leaves it in the
    endpoint's kwargs (`PENDING_PARAM`), and the endpoint's run solves it."""

    __slots__ = ("deferred", "name", "request", "response")

    def __init__(
        self, deferred: Deferred, request: Request, response: Response | None, name: str
    ) -> None:
        self.deferred = deferred
        self.request = request
        self.response = response
        self.name = name

    async def solve(
        self,
        kwargs: dict[str, Any],
        stack: AsyncExitStack | None = None,
        response: Response | None = None,
    ) -> dict[str, Any]:
        """`kwargs` with the deferred values solved as FastAPI solves a route's (its
        `dependency_overrides`, the request's `Response`; yield dependencies closed with
        the request's). A run after the response gives its own `stack` (closed when it
        ends) and `response`. Raises what the dependencies raise, and
        `RequestValidationError` as FastAPI does for invalid values."""
        request = self.request
        scope = request.scope
        if stack is not None:  # a background refresh: the request's stacks are closing
            scope = {**scope, "fastapi_inner_astack": stack, "fastapi_function_astack": stack}
            request = Request(scope, request.receive)
        deferred = self.deferred
        if len(deferred.warned) < 8:
            deferred.check_route(scope, self.name)
        solved = await solve_dependencies(
            request=request,
            dependant=deferred.dependant,
            response=self.response if response is None else response,
            dependency_overrides_provider=_overrides_provider(scope),
            dependency_cache={},
            async_exit_stack=scope.get("fastapi_inner_astack") or AsyncExitStack(),
            embed_body_fields=False,
        )
        if solved.errors:
            from fastapi.exceptions import RequestValidationError

            raise RequestValidationError(solved.errors)
        values = {k: v for k, v in kwargs.items() if k != PENDING_PARAM}
        values.update(solved.values)
        return values


def _overrides_provider(scope: MutableMapping[str, Any]) -> Any:
    """What holds the `dependency_overrides` for this request: the route's provider, else the
    application (FastAPI gives routes of an included router the app's)."""
    for holder in (_effective(scope), scope.get("route"), scope.get("app")):
        provider = getattr(holder, "dependency_overrides_provider", None)
        if provider is not None:
            return provider
    return scope.get("app")
