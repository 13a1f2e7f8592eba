"""One variant of `benches/dependencies_bench.py` for uvicorn (the routes of issue 18: `hot`,
`db`, `me`, `me-nodb`): `BENCH_TARGET=oxcache-route-redis REDIS_URL=... uvicorn
benches.http_deps_app:app`. `/_calls` answers `<endpoint runs> <sessions opened> <storage
errors>`, so a run can prove it served hits, count the sessions a hit opened, and tell the
runs that followed a failed or timed-out read (oxcache serves those uncached)."""

from __future__ import annotations

import os
from typing import Any

from benches.dependencies_bench import TARGETS

variant = TARGETS[os.environ["BENCH_TARGET"]](os.environ.get("REDIS_URL"))


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """ASGI: lifespan runs the variant's setup and teardown; `/_calls` reports endpoint runs,
    sessions opened and storage errors; everything else goes to the variant's app."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                if variant.setup:
                    await variant.setup()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if variant.teardown:
                    await variant.teardown()
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] == "http" and scope["path"] == "/_calls":
        body = f"{variant.runs[0]} {variant.pool.opened} {variant.errors()}".encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})
        return
    await variant.app(scope, receive, send)
