"""The fleet bench: oxcache on several uvicorn workers of one machine, what each hit and
each miss costs the workers and Redis, on one Redis and on a Redis Cluster.

Rows: `uvicorn --workers 2` and `--workers 4` (uvloop, httptools) of benches/fleet_app.py,
loaded by wrk (64 connections) with hits of `/small` spread round-robin over `--keys`
entries, for floor A (no cache), oxcache on one Redis, the same with a `NearCache`, and
both again on a Redis Cluster of 3 primaries and 3 replicas; every server on loopback,
started here (the classes of tests/conftest.py) and stopped at the end. A cluster row with
the near cache is skipped, marked "not supported on this tree", where
`Cache(cluster=True, near=NearCache())` raises ConfigError. Each row has its own key prefix
and Redis client name, so its near cache hears only of its own keys and its connections
can be counted on each node.

Rounds interleave the rows (a different order each round); each measured run follows a
1 s warm-up run (which fills every worker's near cache) and gives: req/s, p50/p99; Redis
commands per request (INFO commandstats deltas summed over the primaries, the bench's own
INFO left out), bytes per request to and from Redis (INFO stats, less what the bench's own
INFO calls cost), Redis CPU per request (all nodes) and the workers' CPU per request
(/proc), and, from every worker's own counters (SIGUSR1, benches/fleet_app.py), endpoint
runs (0 for a cache row: every request was a hit), hits, near-cache hits and errors.
Figures are medians over rounds; req/s depends on the load of the machine (recorded), the
per-request counts and bytes do not.

Then, per Redis row, sequential misses and invalidations (`/_invalidate?n=`): commands,
bytes (to clients, and replicated), keys and Redis memory per entry, and near-cache
notification messages per worker.

Writes benches/fleet.json and benches/FLEET.md (benches/fleet_report.py: the tables and the
arithmetic of a 100-worker fleet, which docs/scaling.md includes).

Usage: python benches/fleet_bench.py [--rounds 3] [--seconds 5] [--keys 200] [--timeout S]
           [--out benches/fleet.json] [--md benches/FLEET.md] [--only CONFIG...]
       python benches/fleet_report.py [benches/fleet.json] [benches/FLEET.md]  (again)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from the root

from benches.fleet_report import report
from benches.http_bench import CONNECTIONS, free_port, get, uvicorn_command, wrk
from tests.conftest import RedisCluster, RedisServer

CONFIGS = [  # (name, backend, near)
    ("floor", "none", False),
    ("redis", "redis", False),
    ("redis+near", "redis", True),
    ("cluster", "cluster", False),
    ("cluster+near", "cluster", True),
]
WORKERS = (2, 4)
PATH = "/small"
WARMUP_S = 1
MISSES = 100
#: Not the application's: the bench's own INFO, and the replicas' acknowledgements (REPLCONF
#: ACK, once a second), which their primaries count as commands.
OWN_COMMANDS = {"INFO", "REPLCONF"}
LUA = """counter = 0
request = function()
  counter = counter + 1
  return wrk.format("GET", "%s?n=" .. (counter %% %d))
end
"""


@dataclass
class Row:
    config: str
    backend: str
    near: bool
    workers: int
    skipped: str | None = None
    proc: subprocess.Popen[bytes] | None = None
    base: str = ""
    stats: Path | None = None
    pids: list[int] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.config} x{self.workers}"

    @property
    def slug(self) -> str:
        return f"fleet-{self.config.replace('+', '-')}-{self.workers}w"


@dataclass
class Deployment:
    """One Redis, or every node of the cluster, with a plain client on each node."""

    url: str
    nodes: dict[int, redis.Redis]  # port -> client
    primaries: set[int]

    @classmethod
    def of(cls, url: str, ports: list[int]) -> Deployment:
        nodes = {p: redis.Redis(port=p, client_name="fleet-bench") for p in ports}
        primaries = {p for p, c in nodes.items() if c.info("replication")["role"] == "master"}
        return cls(url, nodes, primaries)

    def close(self) -> None:
        for client in self.nodes.values():
            client.close()


# -- counters ------------------------------------------------------------------------------


def node_counters(client: redis.Redis) -> dict[str, Any]:
    stats = client.info("stats")
    cpu = client.info("cpu")
    commands = {
        name.removeprefix("cmdstat_").upper(): int(value["calls"])
        for name, value in client.info("commandstats").items()
    }
    return {
        "commands": commands,
        "in": int(stats["total_net_input_bytes"]),
        "out": int(stats["total_net_output_bytes"]),
        "repl_out": int(stats.get("total_net_repl_output_bytes", 0)),
        "cpu": float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"]),
    }


def redis_snapshot(dep: Deployment) -> dict[int, dict[str, Any]]:
    return {port: node_counters(client) for port, client in dep.nodes.items()}


def redis_delta(
    dep: Deployment,
    before: dict[int, dict[str, Any]],
    after: dict[int, dict[str, Any]],
    own: dict[int, tuple[int, int]],
) -> dict[str, Any]:
    """Totals over the nodes between two snapshots; `own` is what a snapshot itself costs
    each node in bytes (in, out), measured once with nothing in between."""
    commands: Counter[str] = Counter()
    replica_commands = 0
    total = {"in": 0, "out": 0, "repl_out": 0, "cpu": 0.0}
    for port in dep.nodes:
        a, b = before[port], after[port]
        changed = {
            cmd: n - a["commands"].get(cmd, 0)
            for cmd, n in b["commands"].items()
            if cmd not in OWN_COMMANDS and n != a["commands"].get(cmd, 0)
        }
        if port in dep.primaries:
            commands.update(changed)
            total["in"] += b["in"] - a["in"] - own[port][0]
            total["out"] += b["out"] - a["out"] - own[port][1]
        else:
            replica_commands += sum(changed.values())
        total["repl_out"] += b["repl_out"] - a["repl_out"]
        total["cpu"] += b["cpu"] - a["cpu"]
    return {"commands": dict(commands), "replica_commands": replica_commands, **total}


def snapshot_cost(dep: Deployment) -> dict[int, tuple[int, int]]:
    """Bytes in and out that one snapshot adds to the next one's figures, per node."""
    costs = []
    for _ in range(3):
        a = redis_snapshot(dep)
        b = redis_snapshot(dep)
        costs.append({p: (b[p]["in"] - a[p]["in"], b[p]["out"] - a[p]["out"]) for p in a})
    return {p: min(c[p] for c in costs) for p in dep.nodes}


def idle_cpu(dep: Deployment, seconds: float = 2.0) -> float:
    """CPU seconds per second the nodes spend with no request (cluster bus, cron, the idle
    servers' heartbeats), subtracted from each run's Redis CPU."""
    before = redis_snapshot(dep)
    time.sleep(seconds)
    after = redis_snapshot(dep)
    return sum(after[p]["cpu"] - before[p]["cpu"] for p in dep.nodes) / seconds


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def read_worker(path: Path) -> dict[str, Any] | None:
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return None


def workers_snapshot(row: Row) -> dict[int, dict[str, Any]]:
    """Every worker's counters, fresh (each writes them on SIGUSR1), and its CPU time."""
    assert row.stats is not None
    seen = {pid: read_worker(row.stats / f"{pid}.json") for pid in row.pids}
    for pid in row.pids:
        os.kill(pid, signal.SIGUSR1)
    found: dict[int, dict[str, Any]] = {}
    deadline = time.monotonic() + 10
    while len(found) < len(row.pids) and time.monotonic() < deadline:
        for pid in row.pids:
            data = read_worker(row.stats / f"{pid}.json")
            old = seen[pid]
            if data is not None and (old is None or data["snapshot"] > old["snapshot"]):
                found[pid] = data | {"cpu": cpu_seconds(pid)}
        time.sleep(0.01)
    if len(found) < len(row.pids):
        raise RuntimeError(f"{row.name}: a worker did not write its counters")
    return found


def workers_delta(before: dict[int, Any], after: dict[int, Any]) -> dict[str, Any]:
    total: Counter[str] = Counter()
    cpu = []
    for pid, b in after.items():
        a = before[pid]
        total["calls"] += b["calls"] - a["calls"]
        total["notifications"] += b.get("notifications", 0) - a.get("notifications", 0)
        for name in ("hits", "misses", "errors", "l1_hits", "bypasses", "l1_flushes"):
            total[name] += b.get("stats", {}).get(name, 0) - a.get("stats", {}).get(name, 0)
        cpu.append(b["cpu"] - a["cpu"])
    return dict(total) | {"cpu": sum(cpu), "cpu_per_worker": cpu}


# -- servers -------------------------------------------------------------------------------


def start(row: Row, url: str | None, prefix: str, timeout: float) -> None:
    row.stats = Path(tempfile.mkdtemp(prefix="oxcache-fleet-"))
    port = free_port()
    path = os.pathsep.join(p for p in (".", os.environ.get("PYTHONPATH")) if p)
    env = dict(
        os.environ,
        FLEET_BACKEND=row.backend,
        FLEET_NEAR="1" if row.near else "0",
        FLEET_STATS=str(row.stats),
        FLEET_PREFIX=prefix,
        FLEET_TIMEOUT=str(timeout),
        REDIS_URL=f"{url}?client_name={row.slug}" if url else "",
        PYTHONPATH=path,
    )
    row.proc = subprocess.Popen(
        uvicorn_command("benches.fleet_app:app", port, row.workers),
        env=env,
        stdout=subprocess.DEVNULL,
    )
    row.base = f"http://127.0.0.1:{port}"


def wait_started(row: Row, deadline_s: float = 90.0) -> None:
    """Until every worker has entered its store (near cache subscribed, or 10 s passed) and
    written its counters; the workers' pids are then the row's."""
    assert row.proc is not None and row.stats is not None
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if row.proc.poll() is not None:
            raise RuntimeError(f"{row.name}: uvicorn exited with {row.proc.returncode}")
        pids = [int(p.stem) for p in row.stats.glob("*.json")]
        if len(pids) >= row.workers:
            row.pids = sorted(pids)
            return
        time.sleep(0.1)
    raise RuntimeError(f"{row.name}: {row.workers} workers did not start")


def alive_worker(pid: int) -> bool:
    try:
        return b"multiprocessing" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def stop(rows: list[Row]) -> None:
    """uvicorn's supervisor stops its workers on SIGTERM; whatever outlives 15 s is
    killed, workers included."""
    running = [r for r in rows if r.proc is not None]
    for row in running:
        assert row.proc is not None
        row.proc.terminate()
    for row in running:
        assert row.proc is not None
        try:
            row.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            row.proc.kill()
            row.proc.wait(timeout=5)
        for pid in row.pids:
            if alive_worker(pid):
                os.kill(pid, signal.SIGKILL)
        if row.stats is not None:
            shutil.rmtree(row.stats, ignore_errors=True)
        row.proc = None


def cluster_near_refused(url: str) -> str | None:
    """Why this tree refuses the near cache on a cluster, or None when it takes it."""
    from oxcache import Cache, NearCache
    from oxcache.errors import ConfigError

    try:
        Cache(url, prefix="fleet-probe", near=NearCache())
    except ConfigError as error:
        return f"not supported on this tree (ConfigError: {error})"
    return None


def fill(row: Row, keys: int) -> None:
    """The entries the hits read: one miss for each key, 8 at a time."""

    def one(n: int) -> None:
        get(f"{row.base}{PATH}?n={n}")

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(one, range(keys)))


def connections(dep: Deployment, row: Row) -> dict[str, dict[str, int]]:
    """The connections the row's workers hold on each node (by client name): all of them,
    subscribed ones (P) and ones tracking keys (t)."""
    found = {}
    for port, client in dep.nodes.items():
        listed = [c for c in client.client_list() if c.get("name") == row.slug]
        found[str(port)] = {
            "role": "primary" if port in dep.primaries else "replica",
            "all": len(listed),
            "pubsub": sum("P" in c["flags"] for c in listed),
            "tracking": sum("t" in c["flags"] for c in listed),
        }
    return found


# -- the measurements ----------------------------------------------------------------------


def measure(
    row: Row, dep: Deployment | None, own: Any, idle: float, seconds: int, script: str
) -> Any:
    url = row.base + PATH
    wrk(url, WARMUP_S, [script])  # near caches filled, connections open, slot maps loaded
    w0 = workers_snapshot(row)
    r0 = redis_snapshot(dep) if dep else None
    began = time.monotonic()
    result: dict[str, Any] = dict(wrk(url, seconds, [script]))
    wall = time.monotonic() - began
    r1 = redis_snapshot(dep) if dep else None
    w1 = workers_snapshot(row)
    n = result["requests"]
    workers = workers_delta(w0, w1)
    result.update(
        endpoint_runs=workers["calls"],
        hits=workers["hits"],
        l1_hits=workers["l1_hits"],
        errors=workers["errors"],
        l1_flushes=workers["l1_flushes"],
        worker_cpu_us=workers["cpu"] / n * 1e6,
        # Share of one core each worker used, so a saturated worker shows.
        worker_busy=[c / seconds for c in workers["cpu_per_worker"]],
    )
    if dep is not None and r0 is not None and r1 is not None:
        delta = redis_delta(dep, r0, r1, own)
        result.update(
            commands=sum(delta["commands"].values()) / n,
            commands_by_name={k: v / n for k, v in sorted(delta["commands"].items())},
            bytes_in=delta["in"] / n,
            bytes_out=delta["out"] / n,
            redis_cpu_us=max(delta["cpu"] - idle * wall, 0.0) / n * 1e6,
        )
    return result


def scan_keys(dep: Deployment, prefix: str) -> set[tuple[int, bytes]]:
    return {
        (port, key)
        for port in dep.primaries
        for key in dep.nodes[port].scan_iter(match=prefix + ":*", count=1000)
    }


def kind(key: bytes) -> str:
    """What a key of the store holds: `entry`, `gen` (a generation token), or the kind of
    index (`variants`, `user`, `tag`)."""
    local = key.decode().partition(":")[2]
    return local[1:].partition(":")[0] if local.startswith("@") else "entry"


def misses_and_invalidations(
    row: Row, dep: Deployment, own: Any, prefix: str, first: int
) -> dict[str, Any]:
    """MISSES sequential misses of fresh keys, then the invalidation of each: per operation,
    the commands and bytes, the keys and memory a miss adds, and the notification messages
    each worker's near cache heard."""
    out: dict[str, Any] = {}
    keys_before = scan_keys(dep, prefix)
    for step in ("miss", "invalidate"):
        w0, r0 = workers_snapshot(row), redis_snapshot(dep)
        wrong = 0  # requests that were not misses; invalidations that deleted nothing
        body = 0
        for i in range(MISSES):
            if step == "miss":
                with urllib.request.urlopen(f"{row.base}{PATH}?n={first + i}") as response:
                    body = len(response.read())
                    wrong += response.headers["x-fastapi-cache"] != "Miss"
            else:
                deleted = get(f"{row.base}/_invalidate?n={first + i}")
                wrong += deleted != b"1"  # the entry the miss stored, deleted
        time.sleep(0.3)  # the notifications reach every worker
        r1, w1 = redis_snapshot(dep), workers_snapshot(row)
        delta = redis_delta(dep, r0, r1, own)
        workers = workers_delta(w0, w1)
        out[step] = {
            "commands": sum(delta["commands"].values()) / MISSES,
            "commands_by_name": {k: v / MISSES for k, v in sorted(delta["commands"].items())},
            "replica_commands": delta["replica_commands"] / MISSES,
            "bytes_in": delta["in"] / MISSES,
            "bytes_out": delta["out"] / MISSES,
            "bytes_replicated": delta["repl_out"] / MISSES,
            "notifications_per_worker": workers["notifications"] / MISSES / row.workers,
            "errors": workers["errors"],
            "wrong": wrong,
        }
        if step == "miss":
            new = scan_keys(dep, prefix) - keys_before
            by_kind: Counter[str] = Counter()
            for port, key in new:
                by_kind[kind(key)] += int(dep.nodes[port].memory_usage(key, samples=0) or 0)
            out[step]["body"] = body
            out[step]["keys"] = len(new) / MISSES
            out[step]["memory"] = sum(by_kind.values()) / MISSES
            out[step]["memory_by_kind"] = {k: v / MISSES for k, v in sorted(by_kind.items())}
            out[step]["endpoint_runs"] = workers["calls"]
    return out


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--keys", type=int, default=200)
    parser.add_argument("--out", default="benches/fleet.json")
    parser.add_argument(
        "--timeout", type=float, default=0.05, help="Cache(timeout=...), 0.05 s by default"
    )
    parser.add_argument("--only", nargs="*", help="run only these configurations")
    parser.add_argument("--md", default="benches/FLEET.md", help="the Markdown report")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: run scripts/ensure-wrk (apt-get install wrk)")
    started = time.monotonic()
    meta: dict[str, Any] = {
        "command": "python benches/fleet_bench.py " + " ".join(sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "commit": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        ).stdout.strip(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "connections": CONNECTIONS,
        "seconds": args.seconds,
        "warmup_seconds": WARMUP_S,
        "rounds": args.rounds,
        "keys": args.keys,
        "timeout": args.timeout,
        "misses": MISSES,
        "load_start": load(),
    }
    configs = [c for c in CONFIGS if not args.only or c[0] in args.only]
    rows = [Row(c, b, near, w) for c, b, near in configs for w in WORKERS]
    single: RedisServer | None = None
    cluster: RedisCluster | None = None
    deps: dict[str, Deployment] = {}
    scratch = Path(tempfile.mkdtemp(prefix="oxcache-fleet-"))
    script = scratch / "keys.lua"  # hits spread round-robin over the keys
    script.write_text(LUA % (PATH, args.keys))
    try:
        single = RedisServer()
        cluster = RedisCluster(3)
        urls = {"redis": single.url, "cluster": cluster.url}
        deps["redis"] = Deployment.of(urls["redis"], [single.port])
        deps["cluster"] = Deployment.of(urls["cluster"], [n.port for n in cluster.nodes])
        meta["redis_version"] = deps["redis"].nodes[single.port].info("server")["redis_version"]
        refused = cluster_near_refused(urls["cluster"])
        for row in rows:
            if row.backend == "cluster" and row.near and refused:
                row.skipped = refused
        live = [r for r in rows if r.skipped is None]
        for row in live:
            start(row, urls.get(row.backend), row.slug, args.timeout)
        for row in live:
            wait_started(row)
        for row in live:
            if row.backend != "none":
                fill(row, args.keys)
        own = {name: snapshot_cost(dep) for name, dep in deps.items()}
        idle = {name: idle_cpu(dep) for name, dep in deps.items()}
        meta["redis_idle_cpu"] = idle
        runs: dict[str, list[dict[str, Any]]] = {r.name: [] for r in live}
        conns: dict[str, Any] = {}
        meta["load_rounds"] = []
        for round_ in range(args.rounds):
            order = live[round_ % len(live) :] + live[: round_ % len(live)]
            if round_ % 2:
                order.reverse()
            for row in order:
                dep = deps.get(row.backend)
                result = measure(
                    row,
                    dep,
                    own.get(row.backend),
                    idle.get(row.backend, 0.0),
                    args.seconds,
                    str(script),
                )
                runs[row.name].append(result)
                if dep is not None and row.name not in conns:
                    conns[row.name] = connections(dep, row)
                print(
                    f"round {round_ + 1} {row.name:18s} {result['rps']:8.0f} req/s "
                    f"cmd/req {result.get('commands', 0):.3f} "
                    f"B in {result.get('bytes_in', 0):6.1f} out {result.get('bytes_out', 0):6.1f} "
                    f"worker CPU {result['worker_cpu_us']:6.1f} us/req "
                    f"runs {result['endpoint_runs']} l1 {result['l1_hits']}/{result['hits']}",
                    flush=True,
                )
            meta["load_rounds"].append(load())
        costs: dict[str, Any] = {}
        for i, row in enumerate(live):
            if row.backend != "none":
                dep = deps[row.backend]
                costs[row.name] = misses_and_invalidations(
                    row, dep, own[row.backend], row.slug, 100_000 + i * 10_000
                )
                print(row.name, json.dumps(costs[row.name]), flush=True)
    finally:
        stop(rows)
        for dep in deps.values():
            dep.close()
        if cluster is not None:
            cluster.stop()
        if single is not None:
            single.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    meta["load_end"] = load()
    meta["wall_seconds"] = round(time.monotonic() - started, 1)
    summary: dict[str, Any] = {}
    for row in rows:
        entry: dict[str, Any] = {
            "config": row.config,
            "backend": row.backend,
            "near": row.near,
            "workers": row.workers,
        }
        if row.skipped:
            summary[row.name] = entry | {"skipped": row.skipped}
            continue
        results = runs[row.name]
        for key in ("rps", "p50", "p99", "worker_cpu_us", "commands", "bytes_in", "bytes_out"):
            if key in results[0]:
                entry[key] = statistics.median(r[key] for r in results)
        if "redis_cpu_us" in results[0]:
            entry["redis_cpu_us"] = statistics.median(r["redis_cpu_us"] for r in results)
        entry["rps_rounds"] = [r["rps"] for r in results]
        for key in (
            "requests",
            "endpoint_runs",
            "hits",
            "l1_hits",
            "l1_flushes",
            "errors",
            "non2xx",
        ):
            entry[key] = sum(r[key] for r in results)
        entry["socket_errors"] = max(r["socket_errors"] for r in results)
        entry["worker_busy"] = [
            round(statistics.median(b), 2)
            for b in zip(*(r["worker_busy"] for r in results), strict=True)
        ]
        if "commands_by_name" in results[0]:
            names = {k for r in results for k in r["commands_by_name"]}
            entry["commands_by_name"] = {
                k: statistics.median(r["commands_by_name"].get(k, 0.0) for r in results)
                for k in sorted(names)
            }
        if row.name in conns:
            entry["connections"] = conns[row.name]
        if row.name in costs:
            entry |= costs[row.name]
        summary[row.name] = entry
    data = {"meta": meta, "rows": summary}
    Path(args.out).write_text(json.dumps(data, indent=1) + "\n")
    Path(args.md).write_text(report(data))
    print(report(data))


if __name__ == "__main__":
    main()
