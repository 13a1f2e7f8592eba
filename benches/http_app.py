"""The benchmark app of one library for uvicorn: `BENCH_TARGET=oxcache-redis REDIS_URL=...
uvicorn benches.http_app:app`. Same endpoints as the in-process benches (benches/apps.py),
plus `/_calls`: how many times the endpoints ran, so a run can prove it served hits."""

from __future__ import annotations

import os
from typing import Any

from benches.apps import BUILDERS
from benches.asgi import lifespan, respond

library, _, backend = os.environ["BENCH_TARGET"].rpartition("-")
target = BUILDERS[library][0](os.environ["REDIS_URL"] if backend == "redis" else None)


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """ASGI: lifespan runs the target's setup and teardown; `/_calls` reports endpoint runs;
    everything else goes to the target's app."""
    if scope["type"] == "lifespan":
        await lifespan(receive, send, target.setup, target.teardown)
        return
    if scope["type"] == "http" and scope["path"] == "/_calls":
        await respond(send, 200, str(target.calls[0]).encode())
        return
    await target.app(scope, receive, send)
