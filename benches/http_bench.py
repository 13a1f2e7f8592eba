"""Over HTTP: each library's app under uvicorn on loopback (one worker), loaded by `wrk` with
64 connections, on cache hits of the small endpoint. Rounds interleave the libraries (a
different order each round) so machine drift hits all of them alike; each figure is the
median over rounds. Writes benches/http.json for benches/report.py.

Usage: python benches/http_bench.py [--rounds N] [--seconds S]  (REDIS_URL names the Redis)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

TARGETS = [
    "floor-a-memory",
    "floor-b-redis",
    "oxcache-redis",
    "oxcache-memory",
    "oxcache-route-redis",
    "oxcache-route-memory",
    "fastapi-cache2-redis",
    "fastapi-cache2-memory",
    "cashews-redis",
    "cashews-memory",
    "fastapi-cachex-redis",
    "fastapi-cachex-memory",
    "fastapi-redis-cache-redis",
]
CONNECTIONS = 64
PATH = "/small"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get(url: str, timeout: float = 5.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return bytes(response.read())


def uvicorn_command(app: str, port: int, workers: int = 1) -> list[str]:
    """uvicorn serving `app` on a loopback `port` with `workers` processes, as
    `pip install "fastapi[standard]"` (uvicorn[standard]) runs it: uvloop and httptools."""
    return [
        sys.executable,
        "-m",
        "uvicorn",
        app,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--loop",
        "uvloop",
        "--http",
        "httptools",
        "--no-access-log",
        "--log-level",
        "warning",
    ]


def start(
    target: str, redis_url: str, app: str = "benches.http_app:app", oxcache: str | None = None
) -> tuple[subprocess.Popen[bytes], str]:
    """uvicorn serving `app` for `target` on a free loopback port, once it answers (with the
    oxcache package found under `oxcache`, another checkout's `python/`, when given)."""
    port = free_port()
    path = os.pathsep.join(p for p in (oxcache, ".", os.environ.get("PYTHONPATH")) if p)
    env = dict(os.environ, BENCH_TARGET=target, REDIS_URL=redis_url, PYTHONPATH=path)
    proc = subprocess.Popen(
        uvicorn_command(app, port),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            get(base + "/_calls", timeout=1.0)
            return proc, base
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"uvicorn for {target} did not start")


_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0}


def seconds(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    if match is None:
        raise ValueError(text)
    return float(match.group(1)) * _UNITS[match.group(2)]


def wrk(
    url: str, duration: float, script: list[str] | None = None, connections: int = CONNECTIONS
) -> dict[str, float]:
    """One wrk run (`script`: a Lua script and its arguments): req/s, p50, p99 (s), the
    requests sent, non-2xx responses, whether there were socket errors."""
    command = ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency"]
    if script:
        command += ["-s", script[0], url]
        if script[1:]:
            command += ["--", *script[1:]]
    else:
        command.append(url)
    out = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=int(duration) + 30,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    sent = re.search(r"(\d+) requests in", out)
    result = {"rps": rps, "requests": float(sent.group(1)) if sent else float("nan")}
    for pct in ("50", "99"):
        found = re.search(rf"^\s+{pct}%\s+(\S+)", out, re.MULTILINE)
        result[f"p{pct}"] = seconds(found.group(1)) if found else float("nan")
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    result["non2xx"] = float(bad.group(1)) if bad else 0.0
    result["socket_errors"] = 1.0 if errors else 0.0
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL"))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=4)
    parser.add_argument("--out", default="benches/http.json")
    parser.add_argument("--only", nargs="*", help="run only these targets (for a quick look)")
    args = parser.parse_args()
    targets = [t for t in TARGETS if not args.only or t in args.only]
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: run scripts/ensure-wrk (apt-get install wrk)")
    servers = {t: start(t, args.redis_url) for t in targets}
    runs: dict[str, list[dict[str, float]]] = {t: [] for t in targets}
    try:
        for _, base in servers.values():
            get(base + PATH)  # the miss that fills the entry
            get(base + PATH)
        for round_ in range(args.rounds):
            order = targets[round_ % len(targets) :] + targets[: round_ % len(targets)]
            if round_ % 2:
                order.reverse()
            for target in order:
                base = servers[target][1]
                before = int(get(base + "/_calls"))
                result = wrk(base + PATH, args.seconds)
                ran = int(get(base + "/_calls")) - before
                # A "hit" benchmark where the endpoint ran would measure something else.
                result["endpoint_runs"] = float(ran if not target.startswith("floor") else 0)
                runs[target].append(result)
                print(
                    f"round {round_ + 1} {target:28s} {result['rps']:9.0f} req/s "
                    f"p50 {result['p50'] * 1e3:6.2f} ms p99 {result['p99'] * 1e3:6.2f} ms",
                    flush=True,
                )
    finally:
        for proc, _ in servers.values():
            proc.terminate()
        for proc, _ in servers.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
    summary = {
        target: {
            key: statistics.median(r[key] for r in results)
            for key in ("rps", "p50", "p99", "non2xx", "socket_errors", "endpoint_runs")
        }
        | {"rounds": len(results)}
        for target, results in runs.items()
    }
    Path(args.out).write_text(
        json.dumps(
            {
                "connections": CONNECTIONS,
                "seconds": args.seconds,
                "rounds": args.rounds,
                "path": PATH,
                "targets": summary,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
