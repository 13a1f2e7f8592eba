"""What many test files build: a client whose lifespan runs the store, and the apps and
helpers more than one file uses. Fixtures (the stores on each backend, the Redis servers)
are in conftest.py."""

from __future__ import annotations

from typing import Callable

from fastapi import FastAPI
from fastapi.testclient import TestClient

from oxcache import Cache

#: The `make_store` fixture: a store on the parametrized backend (memory, Redis, cluster).
MakeStore = Callable[..., Cache]


def client_for(app: FastAPI, store: Cache) -> TestClient:
    """A client whose lifespan connects (and later closes) the store, on one event loop."""
    app.router.lifespan_context = store.lifespan
    return TestClient(app)
