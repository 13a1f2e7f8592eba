"""Which of an endpoint's arguments go into its cache key."""

from __future__ import annotations

import contextlib
import inspect
import typing
from types import UnionType
from typing import Any, Callable, Union

from fastapi import BackgroundTasks, Response
from fastapi.security import SecurityScopes
from starlette.requests import HTTPConnection

#: Arguments of these types never affect the body, or cannot be keyed: always left out.
ALWAYS_IGNORED: tuple[type[Any], ...] = (HTTPConnection, Response, BackgroundTasks, SecurityScopes)

_UNION_TYPES: tuple[Any, ...] = (Union, UnionType)


def resolved_hints(func: Callable[..., Any]) -> dict[str, Any]:
    """The endpoint's annotations with string annotations (`from __future__ import
    annotations`) evaluated; falls back to the raw annotations if evaluation fails."""
    try:
        return typing.get_type_hints(func, include_extras=True)
    except Exception:
        pass
    # One annotation could not be evaluated: evaluate the others one by one, so a single
    # unresolvable name does not hide `request: Request` from us.
    namespace = dict(getattr(func, "__globals__", {}))
    hints: dict[str, Any] = {}
    for name, param in inspect.signature(func).parameters.items():
        annotation = param.annotation
        if annotation is inspect.Parameter.empty:
            continue
        if isinstance(annotation, str):
            with contextlib.suppress(Exception):  # left as the string FastAPI will see
                annotation = eval(annotation, namespace)
        hints[name] = annotation
    return hints


def annotation_types(annotation: Any) -> list[type[Any]]:
    """The classes an annotation names, through `Annotated`, `Optional` and unions."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return annotation_types(typing.get_args(annotation)[0])
    if origin in _UNION_TYPES:
        found: list[type[Any]] = []
        for arg in typing.get_args(annotation):
            found.extend(annotation_types(arg))
        return found
    if isinstance(annotation, type):
        return [annotation]
    return []


def is_ignored_annotation(annotation: Any, ignored: tuple[type[Any], ...]) -> bool:
    """True when any class the annotation names (other than None) is one of `ignored`."""
    return any(
        issubclass(cls, ignored) for cls in annotation_types(annotation) if cls is not type(None)
    )
