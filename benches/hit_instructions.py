"""What a change costs the hit path, counted rather than timed (timings on a shared machine
vary by more than the few instructions a branch costs).

    python benches/hit_instructions.py [N] [--callgrind]

For each case (the memory store, through `APIRoute` and `CachedRoute`, without observers
and with one `Observer` that does nothing), it sends 2 warm-up requests and then N hits
(2000 by default) through the whole ASGI app, and prints per hit:

- the Python bytecode instructions executed (counted with `sys.settrace` opcode events, in
  FastAPI, Starlette and oxcache alike): deterministic, so a difference of a few opcodes is
  a real one;
- with `--callgrind`, the machine instructions valgrind's callgrind counts (the interpreter
  under callgrind, run with N hits and with none, the difference divided by N): the whole
  cost, C included, but with run-to-run noise of a few thousand instructions per hit.

Run it from another checkout with `PYTHONPATH=<that checkout>/python` to compare two
versions of oxcache on the same interpreter; docs/observability.md has the figures.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import re
import subprocess
import sys
from typing import Any

CASES = ("APIRoute", "CachedRoute", "APIRoute+observer", "CachedRoute+observer")


def build(case: str) -> Any:
    from fastapi import FastAPI

    from oxcache import Cache, CachedRoute, cache

    store = Cache()
    if case.endswith("+observer"):
        from oxcache.observe import Observer

        store.observers.append(Observer())  # reports to nobody: the cost of observing
    app = FastAPI()
    if case.startswith("CachedRoute"):
        app.router.route_class = CachedRoute

    @app.get("/items/{id}")
    @cache(expire=3600, store=store)
    async def item(id: int) -> dict[str, int]:
        return {"id": id}

    return app


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


async def hits(app: Any, n: int, counter: list[int] | None = None) -> None:
    sys.path.insert(0, ROOT)
    from benches.asgi import call

    for _ in range(2):
        await call(app, "/items/1")

    def trace(frame: Any, event: str, arg: Any) -> Any:
        frame.f_trace_opcodes = True
        if event == "opcode" and counter is not None:
            counter[0] += 1
        return trace

    if counter is not None:
        sys.settrace(trace)
    try:
        for _ in range(n):
            status, headers, _ = await call(app, "/items/1")
    finally:
        sys.settrace(None)
    if n:
        assert status == 200 and headers[b"x-fastapi-cache"] == b"Hit"


def opcodes(case: str, n: int) -> float:
    counter = [0]
    asyncio.run(hits(build(case), n, counter))
    return counter[0] / n


def instructions(case: str, n: int) -> int:
    run = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            sys.executable,
            __file__,
            "--inner",
            case,
            str(n),
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=1800,
        env={**os.environ, "PYTHONHASHSEED": "0"},  # the same dict layouts every run
    )
    found = re.search(r"Collected : (\d+)", run.stderr)
    assert found, run.stderr[-2000:]
    return int(found.group(1))


def main() -> None:
    if sys.argv[1:2] == ["--inner"]:
        asyncio.run(hits(build(sys.argv[2]), int(sys.argv[3])))
        return
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    n = int(args[0]) if args else 2000
    callgrind = "--callgrind" in sys.argv
    import oxcache

    print(f"oxcache from {os.path.dirname(oxcache.__file__)}, {n} hits")
    observable = importlib.util.find_spec("oxcache.observe") is not None
    for case in CASES if observable else CASES[:2]:  # a version from before observers
        line = f"{case:22} {opcodes(case, n):8.1f} opcodes"
        if callgrind:
            per_hit = (instructions(case, n) - instructions(case, 0)) / n
            line += f" {per_hit:10.0f} machine instructions"
        print(line + " per hit", flush=True)


if __name__ == "__main__":
    main()
