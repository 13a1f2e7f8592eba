"""A lean solver for the dependencies `CachedRoute` runs before an early answer (the guards,
the `per_user` dependency, the dependencies a key holds), for the shapes most routes have:
dependencies whose parameters are scalar header, query, cookie or path parameters, the
`Request` (or `HTTPConnection`), and other dependencies of the same kind; security schemes
(`Security(HTTPBearer())`) are such dependencies. FastAPI's `solve_dependencies` does much
more per request (a `Response`, override lookups, a dependant per overridden call, cache
keys, the classification of every callable); the plan here is made once per route.

It gives what FastAPI's solver gives, or declines (None) and FastAPI's solver runs instead:

- it declines at compile time any tree with a yield dependency, a `Response`,
  `BackgroundTasks`, `WebSocket` or `SecurityScopes` parameter, OAuth2 scopes, a body
  parameter, a parameter with validators or constraints (whose validation may have effects)
  or a callable whose kind (async, sync) it cannot tell as FastAPI does;
- at request time, it declines when `dependency_overrides` replaces one of its callables,
  and when a parameter is missing or invalid: nothing has run yet, so FastAPI's solver then
  runs them all, its error response (422) and its exceptions exactly its own;
- otherwise it validates every parameter first (FastAPI's `request_params_to_args`, or the
  raw text for a plain `str` parameter, which validation returns unchanged), then calls the
  dependencies in FastAPI's order (depth first, in declaration order), sharing one value per
  callable as FastAPI's dependency cache does (`use_cache`), async ones awaited and sync ones
  in the threadpool; what they raise propagates as from FastAPI's solver."""

from __future__ import annotations

import enum
import inspect
import types
import typing
from collections.abc import Mapping
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any, Union
from uuid import UUID

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

try:
    from fastapi.dependencies.utils import request_params_to_args
except ImportError:  # pragma: no cover - every FastAPI this package supports has it
    request_params_to_args = None  # type: ignore[assignment]

__all__ = ["Invalid", "LeanSolver"]

#: The sources of parameters, in the order FastAPI validates them.
_PATH, _QUERY, _HEADER, _COOKIE = range(4)

#: Leaf types whose validation is pydantic's own (no user code runs).
_SCALARS: tuple[type[Any], ...] = (
    str,
    int,
    float,
    bool,
    bytes,
    Decimal,
    UUID,
    date,
    datetime,
    time,
    timedelta,
    type(None),
)
_UNIONS = (Union, types.UnionType)
_CONTAINERS = (list, set, frozenset, tuple)


class Invalid(Exception):
    """A parameter of the plan is missing or invalid: FastAPI answers the request 422 (its
    handler solves every dependency, as it would have). Raised before any dependency ran."""


def _reads_after_request(root: _Node) -> bool:
    """Whether a dependency that takes the `Request` runs before one whose parameters are
    read from it: FastAPI reads each dependency's parameters just before calling it, after
    the dependencies before it, which may have changed the request's headers or cookies in
    place; this plan reads them all first, so it declines such a tree."""
    seen_request = False

    def visit(node: _Node) -> bool:
        nonlocal seen_request
        for sub in node.subs:
            if visit(sub):
                return True
        if node is not root and seen_request and (node.fields or node.groups):
            return True
        if node.request_names:
            seen_request = True
        return False

    return visit(root)


class _NotLean(Exception):
    """A dependency tree the lean solver does not take."""


def _plain_type(annotation: Any) -> bool:
    """Whether validating `annotation` runs no user code: scalars, enums, literals, and
    unions and sequences of them."""
    origin = typing.get_origin(annotation)
    if origin is None:
        if isinstance(annotation, type):
            return issubclass(annotation, _SCALARS) or issubclass(annotation, enum.Enum)
        return False
    if origin is typing.Literal:
        return True
    if origin in _UNIONS or origin in _CONTAINERS:
        args = [a for a in typing.get_args(annotation) if a is not Ellipsis]
        return all(_plain_type(a) for a in args)
    return False


def _is_str(annotation: Any) -> bool:
    """`str`, `str | None` or `Optional[str]`: a raw value validates to itself."""
    if annotation is str:
        return True
    if typing.get_origin(annotation) in _UNIONS:
        return set(typing.get_args(annotation)) == {str, type(None)}
    return False


def _mode(call: Any) -> bool:
    """Whether FastAPI awaits `call` (True) or runs it in the threadpool (False); raises
    `_NotLean` for a generator or a callable this module does not classify as FastAPI does
    (partials, wrapped functions, legacy coroutine markers)."""
    if inspect.isclass(call):
        return False  # FastAPI calls a class (its constructor) in the threadpool
    target = call.__func__ if inspect.ismethod(call) else call
    if not inspect.isfunction(target):  # an instance: its class's __call__
        if "__call__" in getattr(call, "__dict__", {}):
            raise _NotLean  # FastAPI would classify the instance's own attribute
        target = getattr(type(call), "__call__", None)  # noqa: B004
        if not inspect.isfunction(target):
            raise _NotLean
    if (
        hasattr(target, "__wrapped__")
        or hasattr(call, "__wrapped__")
        or getattr(target, "_is_coroutine", None) is not None
        or inspect.isgeneratorfunction(target)
        or inspect.isasyncgenfunction(target)
    ):
        raise _NotLean
    return inspect.iscoroutinefunction(target)


class _Node:
    """One dependency of the plan: how to call it and what its parameters are."""

    __slots__ = (
        "cache_key",
        "call",
        "fields",
        "groups",
        "index",
        "is_async",
        "name",
        "request_names",
        "subs",
        "use_cache",
    )

    def __init__(self, dependant: Any, index: int, root: bool) -> None:
        self.index = index
        self.call = dependant.call
        self.name = dependant.name
        self.use_cache = bool(getattr(dependant, "use_cache", True))
        self.subs: tuple[_Node, ...] = ()
        #: Plain `str` parameters: (source, name, alias, required, default); a header's
        #: alias is its raw (lower-case, latin-1) name.
        self.fields: list[tuple[int, str, Any, bool, Any]] = []
        #: Other parameters, validated by FastAPI per source: (source, fields).
        self.groups: list[tuple[int, list[Any]]] = []
        self.request_names = tuple(
            n
            for n in (dependant.request_param_name, dependant.http_connection_param_name)
            if n is not None
        )
        if (
            dependant.body_params
            or dependant.websocket_param_name
            or dependant.response_param_name
            or dependant.background_tasks_param_name
            or dependant.security_scopes_param_name
            or getattr(dependant, "own_oauth_scopes", None)
            or getattr(dependant, "parent_oauth_scopes", None)
            or getattr(dependant, "concurrency", None) is not None
        ):
            raise _NotLean
        scope = getattr(dependant, "scope", None)
        self.is_async = False
        if root:
            self.cache_key: Any = None
        else:
            self.is_async = _mode(self.call)
            try:
                hash(self.call)
            except TypeError:
                raise _NotLean from None
            self.cache_key = (self.call, scope or "")
        for source, fields in (
            (_PATH, dependant.path_params),
            (_QUERY, dependant.query_params),
            (_HEADER, dependant.header_params),
            (_COOKIE, dependant.cookie_params),
        ):
            self._add(source, list(fields))

    def _add(self, source: int, fields: list[Any]) -> None:
        plain = True
        for field in fields:
            info = field.field_info
            annotation = getattr(info, "annotation", None)
            if (
                info.metadata
                or getattr(info, "default_factory", None) is not None
                or not _plain_type(annotation)
            ):
                raise _NotLean  # validators, constraints, models: left to FastAPI
            default = None if info.is_required() else info.default
            plain = plain and (
                _is_str(annotation)
                and info.validation_alias is None
                and not getattr(field, "config", None)
                and not getattr(info, "validate_default", False)
                and (default is None or type(default) is str)
            )
        if not fields:
            return
        if not plain or source == _PATH:
            self.groups.append((source, fields))
            return
        for field in fields:
            info = field.field_info
            required = info.is_required()
            alias: Any = str(field.alias)
            if source == _HEADER:  # matched against the raw headers, as Starlette does
                alias = alias.lower().encode("latin-1")
            default = None if required else info.default
            self.fields.append((source, field.name, alias, required, default))


def _fastapi_scheme(call: Any) -> bool:
    """Whether `call` is one of FastAPI's security schemes (`OAuth2PasswordBearer()`,
    `HTTPBearer()`, `APIKeyHeader()`...), as FastAPI defines its `__call__`."""
    if not callable(call):
        return False
    method = type(call).__call__
    return str(getattr(method, "__module__", "")).startswith("fastapi.security.")


def _source(request: Request, source: int) -> Mapping[str, Any]:
    if source == _HEADER:
        return request.headers
    if source == _QUERY:
        return request.query_params
    if source == _COOKIE:
        return request.cookies
    return request.path_params


class LeanSolver:
    """The plan for one route's dependencies (see the module docstring): `compile` it once,
    `solve` it per request."""

    __slots__ = ("calls", "nodes", "root")

    def __init__(self, root: _Node, nodes: list[_Node]) -> None:
        self.root = root
        self.nodes = nodes
        #: Every callable of the tree, to notice `dependency_overrides` of one.
        self.calls = tuple(dict.fromkeys(n.call for n in nodes if n is not root))

    @property
    def takes_request(self) -> bool:
        """Whether a dependency of the plan other than FastAPI's own security schemes
        (which read headers only) is given the `Request`."""
        return any(
            node.request_names and not _fastapi_scheme(node.call)
            for node in self.nodes
            if node is not self.root
        )

    @classmethod
    def compile(cls, dependant: Any) -> LeanSolver | None:
        """The plan for `dependant`'s dependencies (its own parameters must be none), or
        None when the tree is not one this module solves exactly as FastAPI does."""
        if request_params_to_args is None:  # pragma: no cover
            return None
        nodes: list[_Node] = []

        def build(dep: Any, root: bool) -> _Node:
            node = _Node(dep, len(nodes), root)
            nodes.append(node)
            node.subs = tuple(build(sub, False) for sub in dep.dependencies)
            return node

        try:
            root = build(dependant, True)
        except (_NotLean, AttributeError, TypeError, ValueError):
            # ValueError: a header name FastAPI takes but latin-1 cannot spell, say; FastAPI
            # builds such a route (and fails its requests), so this must not fail it.
            return None
        if root.fields or root.groups or root.request_names:
            return None  # the route's own parameters are FastAPI's to solve
        if _reads_after_request(root):
            return None
        return cls(root, nodes)

    def overridden(self, overrides: Any) -> bool:
        """Whether `dependency_overrides` replaces one of the plan's callables."""
        if not overrides:
            return False
        try:
            return any(call in overrides for call in self.calls)
        except TypeError:  # pragma: no cover - an unusual mapping
            return True

    async def solve(self, request: Request, overrides: Any = None) -> dict[str, Any] | None:
        """The values of the route's dependencies for `request` (by parameter name, as
        FastAPI's solver gives them), or None: FastAPI's solver must solve them (an
        override). Raises `Invalid` for a missing or invalid parameter (before any
        dependency ran), and what the dependencies raise."""
        if overrides and self.overridden(overrides):
            return None
        arguments: list[dict[str, Any]] = [{}]  # the root's: filled by `_run`
        sources: list[Any] = [None, None, None, None]
        for node in self.nodes[1:]:
            values: dict[str, Any] = {}
            for source, name, alias, required, default in node.fields:
                if source == _HEADER:  # as Starlette's `Headers.get`: the first one
                    raw: Any = None
                    for header, value in request.scope["headers"]:
                        if header == alias:
                            raw = value.decode("latin-1")
                            break
                else:
                    found = sources[source]
                    if found is None:
                        found = sources[source] = _source(request, source)
                    raw = found.get(alias)
                if raw is None:
                    if required:
                        raise Invalid  # FastAPI's 422
                    raw = default
                values[name] = raw
            for source, group in node.groups:
                solved, errors = request_params_to_args(group, _source(request, source))
                if errors:
                    raise Invalid
                values.update(solved)
            for name in node.request_names:
                values[name] = request
            arguments.append(values)
        return await self._run(self.root, arguments, {})

    async def _run(
        self, node: _Node, arguments: list[dict[str, Any]], cache: dict[Any, Any]
    ) -> dict[str, Any]:
        """`node`'s arguments, its dependencies solved (as `solve_dependencies` does)."""
        values = arguments[node.index]
        for sub in node.subs:
            sub_values = (
                await self._run(sub, arguments, cache) if sub.subs else arguments[sub.index]
            )
            key = sub.cache_key
            if sub.use_cache and key in cache:
                solved = cache[key]
            elif sub.is_async:
                solved = await sub.call(**sub_values)
            else:
                solved = await run_in_threadpool(sub.call, **sub_values)
            if sub.name is not None:
                values[sub.name] = solved
            if key not in cache:
                cache[key] = solved
        return values
