"""Turning an endpoint's return value into the Response FastAPI would have sent.

On a miss the decorator must store the exact bytes the route sends, so it renders the
return value the way FastAPI's own request handler does (`response_model` validation and
filtering, `response_class`, the route's status code, headers set on an injected `Response`)
and hands FastAPI a finished Response, which FastAPI passes through untouched.
"""

from __future__ import annotations

import inspect
from collections.abc import MutableMapping
from typing import Any

from fastapi import routing as fastapi_routing
from fastapi.datastructures import DefaultPlaceholder
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse, Response
from starlette.requests import Request

__all__ = ["CachedResponse", "render", "route_settings"]

_SERIALIZE_PARAMS = frozenset(inspect.signature(fastapi_routing.serialize_response).parameters)
_effective_context = getattr(fastapi_routing, "_get_scope_effective_route_context", None)
_extract_endpoint_context = getattr(fastapi_routing, "_extract_endpoint_context", None)
_body_allowed = getattr(
    fastapi_routing,
    "is_body_allowed_for_status_code",
    lambda status: status is None or not (status < 200 or status in (204, 205, 304)),
)


class CachedResponse(Response):
    """A response built from stored parts: no header computation, no re-encoding."""

    def __init__(
        self, status_code: int, raw_headers: list[tuple[bytes, bytes]], body: bytes
    ) -> None:
        self.status_code = status_code
        self.raw_headers = raw_headers
        self.body = body
        self.background = None


def route_settings(scope: MutableMapping[str, Any]) -> Any:
    """The matched APIRoute, or the effective settings FastAPI applies to it when the route
    was included through a router (FastAPI >= 0.16x)."""
    route = scope.get("route")
    if _effective_context is not None:
        context = _effective_context(scope)
        if context is not None and getattr(context, "original_route", None) is route:
            return context
    return route


async def render(
    request: Request, raw: Any, sub_response: Response | None, endpoint: Any, is_coroutine: bool
) -> Response:
    """The Response FastAPI would send for `raw`, the value the endpoint returned."""
    if isinstance(raw, Response):
        return raw
    route = route_settings(request.scope)
    if route is None or not hasattr(route, "response_field"):
        # Called outside FastAPI's routing (a plain Starlette route, say): plain JSON.
        return JSONResponse(jsonable_encoder(raw))

    response_class = route.response_class
    default_class = isinstance(response_class, DefaultPlaceholder)
    actual_class = response_class.value if default_class else response_class
    field = route.response_field
    kwargs: dict[str, Any] = {
        "field": field,
        "response_content": raw,
        "include": route.response_model_include,
        "exclude": route.response_model_exclude,
        "by_alias": route.response_model_by_alias,
        "exclude_unset": route.response_model_exclude_unset,
        "exclude_defaults": route.response_model_exclude_defaults,
        "exclude_none": route.response_model_exclude_none,
        "is_coroutine": is_coroutine,
    }
    use_dump_json = "dump_json" in _SERIALIZE_PARAMS and field is not None and default_class
    if "dump_json" in _SERIALIZE_PARAMS:
        kwargs["dump_json"] = use_dump_json
    if "endpoint_ctx" in _SERIALIZE_PARAMS and _extract_endpoint_context is not None:
        kwargs["endpoint_ctx"] = _extract_endpoint_context(endpoint)
    content = await fastapi_routing.serialize_response(**kwargs)

    status_code = route.status_code
    if sub_response is not None and sub_response.status_code:
        status_code = sub_response.status_code
    response_args: dict[str, Any] = {}
    if status_code is not None:
        response_args["status_code"] = status_code
    if use_dump_json:
        response: Response = Response(
            content=content, media_type="application/json", **response_args
        )
    else:
        response = actual_class(content, **response_args)
    if not _body_allowed(response.status_code):
        response.body = b""
    if sub_response is not None:
        response.headers.raw.extend(sub_response.headers.raw)
    return response
