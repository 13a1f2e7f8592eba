"""What `CachedRoute` solves before it answers a route with dependencies early: the route's
dependencies (the app's, router's and route's `dependencies=[...]`, `Security(...)`, the
`per_user` dependency and the dependencies a key holds; not those `@cache` defers), in
FastAPI's order (dependencies come before a route's parameters): with the lean solver
(`oxcache.solve`) when the tree is simple and the request leaves it nothing to decline, else
with FastAPI's own solver.

A request they refuse is refused (their exception propagates, as from FastAPI's handler).
One they pass is answered from the cache when its key is known; otherwise FastAPI's handler
runs with a dependant whose dependencies hand over the values already solved
(`Guards.handler_dependant`), so each dependency runs once per request, hit or miss."""

from __future__ import annotations

import dataclasses
from contextlib import AsyncExitStack
from typing import Any

from fastapi.dependencies.utils import get_dependant, solve_dependencies
from starlette.requests import Request
from starlette.responses import Response

from oxcache.deferred import SUPPORTED
from oxcache.endpoint import CachedEndpoint
from oxcache.keys import normalize_user_id, secret
from oxcache.solve import Invalid, LeanSolver
from oxcache.store import Cache

__all__ = ["GUARDS_SCOPE_KEY", "Guards"]

#: The ASGI scope key under which the solved values wait for FastAPI's handler.
GUARDS_SCOPE_KEY = "oxcache.guards"

#: Values a raw request's signature may hold as they are (exact types: `1` and `True` are
#: equal in a dict but not in a key).
_PLAIN = (str, int, float, bool, bytes, type(None))


def _nodes(dependant: Any) -> list[Any]:
    found: list[Any] = []
    stack = list(dependant.dependencies)
    while stack:
        node = stack.pop()
        found.append(node)
        stack.extend(node.dependencies)
    return found


class Guards:
    """The dependencies of one route (as FastAPI built its handler: `holder` is the route, or
    the inclusion of its router) that `CachedRoute` solves before answering."""

    __slots__ = ("dependant", "holder", "lean", "plans", "solving")

    def __init__(self, holder: Any, dependant: Any) -> None:
        self.holder = holder
        self.dependant = dependant
        # The route's dependencies without its own parameters, solved as FastAPI solves them.
        self.solving = dataclasses.replace(
            dependant,
            path_params=[],
            query_params=[],
            header_params=[],
            cookie_params=[],
            body_params=[],
            request_param_name=None,
            websocket_param_name=None,
            http_connection_param_name=None,
            response_param_name=None,
            background_tasks_param_name=None,
            security_scopes_param_name=None,
        )
        #: The plan that solves them without FastAPI's solver, when they are simple.
        self.lean = LeanSolver.compile(self.solving)
        #: Per `ignore_arg_types`: the dependency values a key holds (name, secret or not).
        self.plans: dict[tuple[type[Any], ...], tuple[tuple[str, bool], ...]] = {}

    @staticmethod
    def possible(dependant: Any) -> bool:
        """Whether this FastAPI's dependant can be solved in two steps here: the solver is
        the one `deferred` knows, the dependant a dataclass, and no dependency reads the
        body or takes `BackgroundTasks` (those stay with FastAPI's handler)."""
        if not SUPPORTED or not dataclasses.is_dataclass(dependant):
            return False
        try:
            return not any(
                node.body_params or node.background_tasks_param_name or node.websocket_param_name
                for node in _nodes(dependant)
            )
        except AttributeError:
            return False

    async def solve(self, request: Request) -> dict[str, Any] | None:
        """Solve the route's dependencies for `request`: their values (left in the scope for
        `handler_dependant`), or None when one was invalid (FastAPI's handler then solves
        them all and answers its 422). Raises what they raise."""
        scope = request.scope
        provider = getattr(self.holder, "dependency_overrides_provider", None) or scope.get("app")
        lean = self.lean
        if lean is not None:
            try:
                found = await lean.solve(request, getattr(provider, "dependency_overrides", None))
            except Invalid:
                return None  # nothing ran: FastAPI's handler runs each dependency once
            if found is not None:
                scope[GUARDS_SCOPE_KEY] = (found, None)
                return found
        solved = await solve_dependencies(
            request=request,
            dependant=self.solving,
            dependency_overrides_provider=provider,
            dependency_cache={},
            async_exit_stack=scope.get("fastapi_inner_astack") or AsyncExitStack(),
            embed_body_fields=False,
        )
        if solved.errors:
            return None
        scope[GUARDS_SCOPE_KEY] = (solved.values, solved.response)
        values: dict[str, Any] = solved.values
        return values

    def key_parts(
        self, endpoint: CachedEndpoint, store: Cache, values: dict[str, Any]
    ) -> tuple[str | None, tuple[Any, ...]] | None:
        """What the solved `values` add to a raw request's signature: the user id (per-user
        endpoints) and the values of the dependencies the key holds (secrets as a hash).
        None when one cannot be compared exactly (not a plain value) or the user id is not
        one."""
        uid = None
        if endpoint.per_user is not None:
            user = values.get(endpoint.user_param)
            if type(user) is str:  # what `normalize_user_id` gives it
                uid = user
            else:
                try:
                    uid = normalize_user_id(user)
                except TypeError:
                    return None  # `handle` serves it uncached, with its warning
        ignored = store.keyspace.ignored
        plan = self.plans.get(ignored)
        if plan is None:
            keys = endpoint.keys
            plan = tuple(
                (name, name in keys.secret_params)
                for name in keys.names(ignored)
                if name in endpoint.deps
            )
            self.plans[ignored] = plan
        parts: list[Any] = [uid]
        for name, hidden in plan:
            if name not in values:
                return None  # solved later (a deferred dependency): not in the signature
            value = values[name]
            if type(value) not in _PLAIN:
                return None
            if hidden and value is not None:
                value = secret(value).digest
            parts.append((name, type(value), value))
        return uid, tuple(parts)

    def handler_dependant(self) -> Any:
        """The route's dependant for FastAPI's handler after `solve`: its own parameters as
        they are, its dependencies handing over the solved values (and the headers and
        status they set on the `Response`)."""
        path = self.dependant.path or ""
        handover = [get_dependant(path=path, call=_restore)]
        for sub in self.dependant.dependencies:
            if sub.name is not None:
                handover.append(get_dependant(path=path, call=_value_of(sub.name), name=sub.name))
        return dataclasses.replace(self.dependant, dependencies=handover)


async def _restore(request: Request, response: Response) -> None:
    """Copy what the solved dependencies set on their `Response` to the handler's."""
    _, solved = request.scope[GUARDS_SCOPE_KEY]
    if solved is not None and solved is not response:  # None: solved by the lean solver
        response.raw_headers.extend(solved.raw_headers)
        if solved.status_code is not None:
            response.status_code = solved.status_code


def _value_of(name: str) -> Any:
    async def value(request: Request) -> Any:
        return request.scope[GUARDS_SCOPE_KEY][0][name]

    value.__name__ = f"solved_{name}"
    return value
