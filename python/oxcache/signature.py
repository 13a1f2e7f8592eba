"""What a function's annotations say: its type hints with string annotations evaluated, and
the classes an annotation names through `Annotated`, `Optional` and unions. `keys.py` reads
them to leave arguments out of keys; `endpoint.py` to find the `Request` and `Response`."""

from __future__ import annotations

import contextlib
import inspect
import sys
import typing
from types import GenericAlias, UnionType
from typing import Annotated, Any, Callable, Union

__all__ = ["annotated_metadata", "annotation_types", "is_ignored_annotation", "resolved_hints"]

_UNION_TYPES: tuple[Any, ...] = (Union, UnionType)


def resolved_hints(func: Callable[..., Any]) -> dict[str, Any]:
    """The endpoint's annotations with string annotations (`from __future__ import
    annotations`) evaluated; falls back to the raw annotations if evaluation fails."""
    try:
        return _without_implicit_optional(func, typing.get_type_hints(func, include_extras=True))
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


def _without_implicit_optional(func: Callable[..., Any], hints: dict[str, Any]) -> dict[str, Any]:
    """Python 3.10's `get_type_hints` wraps the hint of a parameter whose default is None in
    `Optional[...]` (3.11 stopped): `tags: Annotated[list[str] | None, Query()] = None` comes
    back as `Optional[Annotated[...]]`, which hides `Query()` from FastAPI once it reads the
    wrapper's signature (the list became a body parameter). Unwrap what Python added."""
    if sys.version_info >= (3, 11):
        return hints
    for name, param in inspect.signature(func).parameters.items():
        hint = hints.get(name)
        if param.default is not None or typing.get_origin(hint) is not Union:
            continue
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is type(None) and typing.get_origin(args[0]) is Annotated:
            hints[name] = args[0]
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
    # On Python 3.10 `list[str]` passes for a class (isinstance(list[str], type) is True) and
    # issubclass() on it raises; it names a container, not a class to match.
    if isinstance(annotation, type) and not isinstance(annotation, GenericAlias):
        return [annotation]
    return []


def is_ignored_annotation(annotation: Any, ignored: tuple[type[Any], ...]) -> bool:
    """True when any class the annotation names (other than None) is one of `ignored`."""
    return any(
        issubclass(cls, ignored) for cls in annotation_types(annotation) if cls is not type(None)
    )


def annotated_metadata(annotation: Any) -> tuple[Any, ...]:
    """The metadata of an `Annotated[...]` annotation (`Depends(...)`, `Query(...)`), or ()."""
    if typing.get_origin(annotation) is typing.Annotated:
        return tuple(typing.get_args(annotation)[1:])
    return ()
