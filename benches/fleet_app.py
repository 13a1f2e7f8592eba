"""One configuration of the fleet bench (benches/fleet_bench.py) for `uvicorn --workers N`.

    FLEET_BACKEND=none|redis|cluster FLEET_NEAR=0|1 FLEET_PREFIX=... REDIS_URL=... \
        FLEET_STATS=DIR \
        uvicorn benches.fleet_app:app --workers 2

The endpoints of the in-process benches (benches/apps.py) on one `Cache` (`none`: floor A,
no cache), plus `/_invalidate?n=`, which invalidates `/small`'s entry for `n`. Each worker
writes its counters (`FLEET_STATS/<pid>.json`: endpoint runs, `store.stats()`, near-cache
notifications, and how many snapshots it has written) once it is ready, near cache
subscribed, and again on every SIGUSR1, so the bench reads every worker's counters before
and after a run without a request that would land on one worker only.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from benches.apps import _routes
from benches.asgi import lifespan, respond

BACKEND = os.environ["FLEET_BACKEND"]
NEAR = os.environ.get("FLEET_NEAR") == "1"
STATS = Path(os.environ["FLEET_STATS"])

calls = [0]
inner = FastAPI()
store: Any = None
if BACKEND == "none":
    _routes(inner, lambda f: f, calls, with_request=False)
else:
    from oxcache import Cache, NearCache, cache

    store = Cache(
        os.environ["REDIS_URL"],
        prefix=os.environ.get("FLEET_PREFIX") or "bench-fleet",
        near=NearCache() if NEAR else None,
        # The library's default unless the bench says otherwise (`--timeout`).
        timeout=float(os.environ.get("FLEET_TIMEOUT") or 0.05),
    )
    _routes(inner, lambda f: cache(expire=600, store=store)(f), calls, with_request=False)
small = next(r.endpoint for r in inner.routes if getattr(r, "path", None) == "/small")
snapshots = [0]


def write_stats() -> None:
    """This worker's counters, written whole (a rename) so the bench never reads half."""
    found: dict[str, Any] = {"pid": os.getpid(), "snapshot": snapshots[0], "calls": calls[0]}
    if store is not None:
        found["stats"] = store.stats()
        if store.near is not None:
            found["notifications"] = store.near.notifications
            found["ready"] = store.near.ready
    path = STATS / f"{os.getpid()}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(found))
    tmp.replace(path)
    snapshots[0] += 1


async def startup() -> None:
    if store is not None:
        await store.__aenter__()
        if store.near is not None:
            await store.near.wait_ready(10.0)
    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, write_stats)
    write_stats()


async def shutdown() -> None:
    if store is not None:
        await store.__aexit__(None, None, None)


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """ASGI: lifespan enters the store (and waits for the near cache's subscription);
    `/_invalidate` invalidates one `/small` entry; everything else is the cached app."""
    if scope["type"] == "lifespan":
        await lifespan(receive, send, startup, shutdown)
        return
    if scope["type"] == "http" and scope["path"] == "/_invalidate":
        n = int(scope["query_string"].decode().partition("=")[2] or 0)
        done = await store.invalidate(small, n=n)
        await respond(send, 200, str(int(done)).encode())
        return
    await inner(scope, receive, send)
