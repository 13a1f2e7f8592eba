"""Issue 18's rows over HTTP: the routes of `benches/dependencies_bench.py` under uvicorn (one
worker, uvloop and httptools) on loopback, loaded by `wrk -t1 -c64`, for oxcache (APIRoute and
CachedRoute, memory and Redis), cashews, fastapi-cache2 (memory and Redis), fastapi-cachex
(memory) and floor A (no cache), all in the same interleaved rounds.

    python benches/with_redis.py python benches/http_deps_bench.py [--rounds 3] [--seconds 2]

Paths (every key filled before measuring; the endpoint runs, the sessions opened and
oxcache's storage errors during each run are counted through `/_calls`: a Redis read that
fails or takes longer than the store's `timeout`, 50 ms, is served uncached):

- `hot`: `/item/42?q=hello`, small body, no dependency, one key;
- `db1k`: `/db/item/<i>?q=x`, 1,000 keys, `db = Depends(get_db)` (a pool of 5, 1 ms check-out);
- `me100`: `/me`, per user (a bearer token dependency) plus `db`, 100 users;
- `me100-nodb`: `/me-nodb`, the token dependency only, 100 users.

Each round runs every (path, library) once, the libraries in a rotated order (reversed every
other round); a figure is the median over rounds, a ratio the median of the per-round ratios
(min-max). Writes benches/http_deps.json for benches/report.py and prints the tables.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from the root

from benches.http_bench import get, start, wrk
from benches.report import http_deps_tables

TARGETS = [
    "floor-a-memory",
    "oxcache-memory",
    "oxcache-route-memory",
    "oxcache-redis",
    "oxcache-route-redis",
    "cashews-memory",
    "cashews-redis",
    "fastapi-cache2-memory",
    "fastapi-cache2-redis",
    "fastapi-cachex-memory",
]
SCRIPT = str(Path(__file__).with_name("spread.lua"))
#: path name -> (URL path, wrk script arguments or None for one URL)
PATHS: dict[str, tuple[str, list[str] | None]] = {
    "hot": ("/item/42?q=hello", None),
    "db1k": ("/", [SCRIPT, "db", "1000"]),
    "me100": ("/", [SCRIPT, "me", "100"]),
    "me100-nodb": ("/", [SCRIPT, "me-nodb", "100"]),
}


def calls(base: str) -> tuple[int, int, int]:
    runs, opened, errors = get(base + "/_calls").split()
    return int(runs), int(opened), int(errors)


def measure(base: str, path: str, seconds: int, connections: int = 64) -> dict[str, float]:
    url, script = PATHS[path]
    before = calls(base)
    result = wrk(base + url, seconds, script, connections)
    after = calls(base)
    result["endpoint_runs"] = float(after[0] - before[0])
    result["sessions"] = float(after[1] - before[1])
    result["storage_errors"] = float(after[2] - before[2])
    return result


def ratios(runs: list[dict[str, dict[str, Any]]], target: str, peers: list[str]) -> list[float]:
    """Per round: the target's req/s over the best of `peers` in that round."""
    found = []
    for round_ in runs:
        best = max((round_[p]["rps"] for p in peers if p in round_), default=0.0)
        if best and target in round_:
            found.append(round_[target]["rps"] / best)
    return found


def spread(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def summarize(paths: list[str], targets: list[str], runs: dict[str, list[Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    peers = [t for t in targets if not t.startswith(("floor", "oxcache"))]
    for path in paths:
        rounds = runs[path]
        rows: dict[str, Any] = {}
        for target in targets:
            mine = [r[target] for r in rounds if target in r]
            if not mine:
                continue
            backend = target.partition("@")[0].rpartition("-")[2]
            sent = sum(r["requests"] for r in mine)
            rows[target] = {
                "rps": statistics.median(r["rps"] for r in mine),
                "rps_min": min(r["rps"] for r in mine),
                "rps_max": max(r["rps"] for r in mine),
                "p50": statistics.median(r["p50"] for r in mine),
                "p99": statistics.median(r["p99"] for r in mine),
                "endpoint_runs": sum(r["endpoint_runs"] for r in mine),
                "sessions_per_request": sum(r["sessions"] for r in mine) / sent if sent else 0.0,
                "non2xx": sum(r["non2xx"] for r in mine),
                "storage_errors": sum(r["storage_errors"] for r in mine),
                "rounds": len(mine),
                "x_floor_a": spread(ratios(rounds, target, ["floor-a-memory"])),
                "x_best_peer_same": spread(
                    ratios(rounds, target, [p for p in peers if p.endswith(backend)])
                ),
                "x_best_peer_any": spread(ratios(rounds, target, peers)),
            }
        out[path] = rows
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL"))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=2)
    parser.add_argument("--out", default="benches/http_deps.json")
    parser.add_argument("--only", nargs="*", help="run only these targets")
    parser.add_argument("--paths", nargs="*", help="run only these paths")
    parser.add_argument(
        "--before",
        help="another checkout's python/ folder: its oxcache runs too, as `<target>@before`, "
        "in the same rounds (a before/after comparison)",
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: run scripts/ensure-wrk (apt-get install wrk)")
    if not args.redis_url:
        sys.exit("REDIS_URL is not set: run it under benches/with_redis.py")
    targets = [t for t in TARGETS if not args.only or t in args.only]
    paths = [p for p in PATHS if not args.paths or p in args.paths]
    if args.before:
        targets += [f"{t}@before" for t in targets if t.startswith("oxcache")]
    servers = {
        t: start(
            t.partition("@")[0],
            args.redis_url,
            "benches.http_deps_app:app",
            args.before if t.endswith("@before") else None,
        )
        for t in targets
    }
    runs: dict[str, list[dict[str, dict[str, float]]]] = {p: [] for p in paths}
    load = []
    try:
        for base in (b for _, b in servers.values()):  # fill every key (and warm up)
            for path in paths:
                measure(base, path, 1, connections=8)
        for round_ in range(args.rounds):
            order = targets[round_ % len(targets) :] + targets[: round_ % len(targets)]
            if round_ % 2:
                order.reverse()
            for path in paths:
                found: dict[str, dict[str, float]] = {}
                for target in order:
                    result = measure(servers[target][1], path, args.seconds)
                    found[target] = result
                    print(
                        f"round {round_ + 1} {path:11s} {target:22s} {result['rps']:8.0f} req/s"
                        f" runs {result['endpoint_runs']:.0f}"
                        f" storage errors {result['storage_errors']:.0f}"
                        f" sessions/req {result['sessions'] / max(result['requests'], 1):.2f}",
                        flush=True,
                    )
                runs[path].append(found)
            load.append(os.getloadavg()[0])
    finally:
        for proc, _ in servers.values():
            proc.terminate()
        for proc, _ in servers.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
    summary = summarize(paths, targets, runs)
    Path(args.out).write_text(
        json.dumps(
            {
                "connections": 64,
                "seconds": args.seconds,
                "rounds": args.rounds,
                "load": load,
                "paths": summary,
            },
            indent=1,
        )
    )
    print("\n".join(http_deps_tables(Path(args.out))))


if __name__ == "__main__":
    main()
