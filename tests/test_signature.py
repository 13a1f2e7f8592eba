"""signature.py: the classes an annotation names, on every supported Python."""

from __future__ import annotations

import typing
from typing import Annotated, Optional

from fastapi import FastAPI, Query, Request
from fastapi.testclient import TestClient

from oxcache import Cache, cache
from oxcache.signature import annotation_types, is_ignored_annotation, resolved_hints


def test_a_parametrized_container_names_no_class() -> None:
    """On Python 3.10 `isinstance(list[str], type)` is True, and `issubclass(list[str], ...)`
    raises: such an annotation must name no class, not crash the key layout."""
    assert annotation_types(list[str]) == []
    assert annotation_types(dict[str, int]) == []
    # What Python 3.10's get_type_hints makes of `tags: Annotated[list[str] | None, Query()]
    # = None`: an Optional around the Annotated.
    hint = Optional[Annotated[list[str] | None, Query()]]
    assert set(annotation_types(hint)) == {type(None)}
    assert not is_ignored_annotation(hint, (Request,))


def test_classes_are_found_through_annotated_optional_and_unions() -> None:
    assert annotation_types(Annotated[Request, "x"]) == [Request]
    assert annotation_types(Request | None) == [Request, type(None)]
    assert is_ignored_annotation(Optional[Request], (Request,))
    assert annotation_types(list) == [list]


def test_a_none_default_keeps_the_annotation_as_written() -> None:
    """Python 3.10's get_type_hints adds `Optional[...]` around the hint of a parameter that
    defaults to None; resolved_hints gives what was written, on every Python."""

    def f(tags: Annotated[list[str] | None, Query()] = None, n: int | None = None) -> None: ...

    hints = resolved_hints(f)
    assert typing.get_origin(hints["tags"]) is Annotated
    assert typing.get_args(hints["tags"])[0] == list[str] | None
    assert set(annotation_types(hints["n"])) == {int, type(None)}


def test_query_lists_defaulting_to_none_stay_query_parameters() -> None:
    """FastAPI reads the wrapper's signature: `Query()` must still be visible there, or on
    Python 3.10 a list defaulting to None became a body parameter and the query was ignored.
    (An optional query model, `Annotated[Model | None, Query()]`, needs FastAPI 0.159.)"""
    store = Cache()
    app = FastAPI()

    @app.get("/items")
    @cache(expire=60, store=store)
    async def items(
        tags: Annotated[list[str] | None, Query()] = None, limit: int | None = None
    ) -> dict[str, object]:
        return {"tags": tags, "limit": limit}

    route = app.routes[-1]
    assert [f.name for f in route.dependant.body_params] == []  # type: ignore[attr-defined]
    with TestClient(app) as client:
        miss = client.get("/items?tags=a&tags=b&limit=5")
        hit = client.get("/items?tags=a&tags=b&limit=5")
    assert miss.json() == hit.json() == {"tags": ["a", "b"], "limit": 5}
    assert hit.headers["x-fastapi-cache"] == "Hit"
