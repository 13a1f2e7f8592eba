"""One variant of `benches/dependencies_bench.py` for uvicorn (the routes of issue 18: `hot`,
`db`, `me`, `me-nodb`): `BENCH_TARGET=oxcache-route-redis REDIS_URL=... uvicorn
benches.http_deps_app:app`. `/_calls` answers `<endpoint runs> <sessions opened> <storage
errors>`, so a run can prove it served hits, count the sessions a hit opened, and tell the
runs that followed a failed or timed-out read (oxcache serves those uncached)."""

from __future__ import annotations

import os
from typing import Any

from benches.asgi import lifespan, respond
from benches.dependencies_bench import TARGETS

variant = TARGETS[os.environ["BENCH_TARGET"]](os.environ.get("REDIS_URL"))


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """ASGI: lifespan runs the variant's setup and teardown; `/_calls` reports endpoint runs,
    sessions opened and storage errors; everything else goes to the variant's app."""
    if scope["type"] == "lifespan":
        await lifespan(receive, send, variant.setup, variant.teardown)
        return
    if scope["type"] == "http" and scope["path"] == "/_calls":
        await respond(
            send, 200, f"{variant.runs[0]} {variant.pool.opened} {variant.errors()}".encode()
        )
        return
    await variant.app(scope, receive, send)
