"""What a change costs the hit path, counted rather than timed (timings on a shared machine
vary by more than the few instructions a branch costs).

    python benches/hit_instructions.py [N] [--callgrind]

For each case (the memory store, through `APIRoute` and `CachedRoute`, without observers
and with one `Observer` that does nothing; and a per-user route whose user comes from a
bearer token dependency, issue 18's `me-nodb`), it sends 2 warm-up requests and then N hits
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

CASES = (
    "APIRoute",
    "CachedRoute",
    "APIRoute+observer",
    "CachedRoute+observer",
    "APIRoute per-user",
    "CachedRoute per-user",
)
#: The per-user cases' request header.
TOKEN = [(b"authorization", b"Bearer user-1")]


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

    from fastapi import Depends, Header, HTTPException

    async def current_user(authorization: str | None = Header(default=None)) -> str:
        if authorization is None or not authorization.startswith("Bearer "):
            raise HTTPException(status_code=401)
        return authorization[7:]

    @app.get("/me")
    @cache(expire=3600, store=store, per_user=current_user)
    async def me(user_id: str = Depends(current_user)) -> dict[str, str]:
        return {"user": user_id}

    return app


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


async def hits(app: Any, n: int, counter: list[int] | None = None, user: bool = False) -> None:
    sys.path.insert(0, ROOT)
    from benches.asgi import call

    path, headers = ("/me", TOKEN) if user else ("/items/1", None)
    for _ in range(2):
        await call(app, path, b"", headers)

    def trace(frame: Any, event: str, arg: Any) -> Any:
        frame.f_trace_opcodes = True
        if event == "opcode" and counter is not None:
            counter[0] += 1
        return trace

    if counter is not None:
        sys.settrace(trace)
    try:
        for _ in range(n):
            status, answer, _ = await call(app, path, b"", headers)
    finally:
        sys.settrace(None)
    if n:
        assert status == 200 and answer[b"x-fastapi-cache"] == b"Hit"


def opcodes(case: str, n: int) -> float:
    counter = [0]
    asyncio.run(hits(build(case), n, counter, case.endswith("per-user")))
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
        case = sys.argv[2]
        asyncio.run(hits(build(case), int(sys.argv[3]), None, case.endswith("per-user")))
        return
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    n = int(args[0]) if args else 2000
    callgrind = "--callgrind" in sys.argv
    import oxcache

    print(f"oxcache from {os.path.dirname(oxcache.__file__)}, {n} hits")
    observable = importlib.util.find_spec("oxcache.observe") is not None
    for case in CASES if observable else CASES[:2] + CASES[4:]:  # before observers
        line = f"{case:22} {opcodes(case, n):8.1f} opcodes"
        if callgrind:
            per_hit = (instructions(case, n) - instructions(case, 0)) / n
            line += f" {per_hit:10.0f} machine instructions"
        print(line + " per hit", flush=True)


if __name__ == "__main__":
    main()
