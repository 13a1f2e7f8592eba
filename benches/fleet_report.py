"""benches/FLEET.md from benches/fleet.json (benches/fleet_bench.py): the measured tables, and
the arithmetic of a fleet of 100 workers on a Redis Cluster of 3 primaries and 3 replicas
made from them. docs/scaling.md includes the file, so every figure there comes from one run.

Usage: python benches/fleet_report.py [benches/fleet.json] [benches/FLEET.md]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

HIT_COLUMNS = (
    "row",
    "req/s (median)",
    "x floor",
    "worker CPU µs/req",
    "Redis cmds/hit",
    "bytes in / out per hit",
    "Redis CPU µs/hit",
    "L1 share of hits",
    "endpoint runs",
    "errors",
)
MISS_COLUMNS = (
    "row",
    "miss: cmds (replicated)",
    "miss: bytes in / out",
    "replicated B",
    "keys / entry",
    "memory B / entry",
    "notifications / worker",
    "invalidate: cmds",
    "bytes in / out",
    "notifications / worker",
)

#: The fleet of the arithmetic: workers, primaries, replicas, requests per second per
#: worker, the share of requests that are hits, the share of hits the near cache answers,
#: invalidations per second (fleet-wide).
FLEET = {"W": 100, "P": 3, "R": 3, "r": 500, "h": 0.95, "q": 0.90, "I": 20}


def header(columns: tuple[str, ...]) -> list[str]:
    return ["| " + " | ".join(columns) + " |", "|---" + "|---:" * (len(columns) - 1) + "|"]


def n(value: float, digits: int = 0) -> str:
    return f"{value:,.{digits}f}"


def tables(data: dict[str, Any]) -> list[str]:
    """The hit table, the miss and invalidation table, and the connections per node."""
    meta, rows = data["meta"], data["rows"]
    floors = {
        r["workers"]: r["rps"] for r in rows.values() if r["config"] == "floor" and "rps" in r
    }
    out = [
        f"`{meta['command']}` at `{meta['commit']}`, {meta['date']}: {meta['rounds']} "
        f"interleaved rounds of {meta['seconds']} s per row (after {meta['warmup_seconds']} s "
        f"of warm-up each), wrk with {meta['connections']} connections, hits spread over "
        f"{meta['keys']} keys of `/small`, `Cache(timeout={meta['timeout']:g})`; "
        f"{meta['cpus']} cores shared with other jobs, Redis {meta.get('redis_version')}; "
        f"load average (1, 5, 15 min) {meta['load_start']} at the start, "
        f"{meta['load_end']} at the end; {meta['wall_seconds']:.0f} s in all.",
        "",
        "### Hits",
        "",
        *header(HIT_COLUMNS),
    ]
    for name, r in rows.items():
        if "skipped" in r:
            out.append(f"| {name} | {r['skipped']} |" + " |" * (len(HIT_COLUMNS) - 2))
            continue
        floor = floors.get(r["workers"])
        ratio = f"{r['rps'] / floor:.2f}" if floor else ""
        cmds = f"{r['commands']:.3f}" if "commands" in r else ""
        nbytes = f"{r['bytes_in']:.1f} / {r['bytes_out']:.1f}" if "bytes_in" in r else ""
        rcpu = f"{r['redis_cpu_us']:.1f}" if "redis_cpu_us" in r else ""
        l1 = f"{r['l1_hits'] / r['hits']:.3f}" if r["near"] and r["hits"] else ""
        runs = n(r["endpoint_runs"]) if r["config"] != "floor" else "every request"
        out.append(
            f"| {name} | {n(r['rps'])} | {ratio} | {r['worker_cpu_us']:.0f} | {cmds} | "
            f"{nbytes} | {rcpu} | {l1} | {runs} | {r['errors']:.0f} |"
        )
    for workers in (2, 4):
        a, b = rows.get(f"cluster+near x{workers}"), rows.get(f"redis+near x{workers}")
        if a and b and "rps" in a and "rps" in b:
            out += [
                "",
                f"Near-cache hit on the cluster against one on one Redis, {workers} workers "
                f"(issue 20's bound: 1.1x): worker CPU per request "
                f"{a['worker_cpu_us'] / b['worker_cpu_us']:.2f}x, req/s "
                f"{b['rps'] / a['rps']:.2f}x (time per request).",
            ]
    out += [
        "",
        "`x floor`: req/s against floor A (the endpoint without a cache) on as many workers "
        "in the same rounds. Worker CPU: user + system time of every worker over the "
        "requests; Redis CPU: all nodes, less their idle rate "
        f"({', '.join(f'{k} {v:.3f} cores' for k, v in meta['redis_idle_cpu'].items())}). "
        "Endpoint runs: every worker's own count; 0 means every measured request was a hit.",
        "",
        "### Misses and invalidations",
        "",
        f"{meta['misses']} sequential misses of fresh keys per row, then the invalidation of "
        "each (`store.invalidate(endpoint, n=...)`): commands on the primaries (those run "
        "inside scripts included, as INFO commandstats counts them; the replicas' in "
        "brackets), bytes from and to clients, bytes replicated, the keys and Redis memory "
        "(MEMORY USAGE) a miss adds, and the notification messages each worker's near cache "
        "received.",
        "",
        *header(MISS_COLUMNS),
    ]
    for name, r in rows.items():
        if "miss" not in r:
            continue
        m, i = r["miss"], r["invalidate"]
        out.append(
            f"| {name} | {m['commands']:.2f} ({m['replica_commands']:.2f}) | "
            f"{m['bytes_in']:.0f} / {m['bytes_out']:.0f} | {m['bytes_replicated']:.0f} | "
            f"{m['keys']:.2f} | {m['memory']:.0f} | {m['notifications_per_worker']:.2f} | "
            f"{i['commands']:.2f} | {i['bytes_in']:.0f} / {i['bytes_out']:.0f} | "
            f"{i['notifications_per_worker']:.2f} |"
        )
    sample = next((r["miss"] for r in rows.values() if "miss" in r), None)
    if sample is not None and "memory_by_kind" in sample:
        kinds = ", ".join(f"{k} {v:.0f} B" for k, v in sample["memory_by_kind"].items())
        out += ["", f"Memory of one entry by key ({sample['body']} B body): {kinds}."]
    out += [
        "",
        "### Connections",
        "",
        "What each row's workers held on each node after their first measured run (CLIENT "
        "LIST by client name): all / subscribed / tracking.",
        "",
    ]
    for name, r in rows.items():
        if "connections" in r:
            per = ", ".join(
                f"{c['role']} {c['all']}/{c['pubsub']}/{c['tracking']}"
                for c in r["connections"].values()
            )
            out.append(f"- {name}: {per}")
    return out


def pick(rows: dict[str, Any], config: str) -> dict[str, Any] | None:
    """The 4-worker row of `config` (else its 2-worker row), unless skipped."""
    for workers in (4, 2):
        row = rows.get(f"{config} x{workers}")
        if row is not None and "skipped" not in row:
            return row
    return None


def per_worker_notifications(rows: dict[str, Any], near: str, plain: str) -> dict[str, float]:
    """Notification messages and bytes each worker receives per miss and per invalidation:
    the near row's bytes to clients less the plain row's, over its workers (both sizes,
    averaged)."""
    found: dict[str, list[float]] = {"miss_b": [], "inv_b": [], "miss_m": [], "inv_m": []}
    for workers in (2, 4):
        a, b = rows.get(f"{near} x{workers}"), rows.get(f"{plain} x{workers}")
        if not a or not b or "miss" not in a or "miss" not in b:
            continue
        found["miss_b"].append((a["miss"]["bytes_out"] - b["miss"]["bytes_out"]) / workers)
        found["inv_b"].append(
            (a["invalidate"]["bytes_out"] - b["invalidate"]["bytes_out"]) / workers
        )
        found["miss_m"].append(a["miss"]["notifications_per_worker"])
        found["inv_m"].append(a["invalidate"]["notifications_per_worker"])
    return {k: sum(v) / len(v) for k, v in found.items() if v}


def arithmetic(data: dict[str, Any], fleet: dict[str, float] = FLEET) -> list[str]:
    """A fleet of `W` workers on `P` primaries and `R` replicas, from the measured rows."""
    rows = data["rows"]
    cluster, single = pick(rows, "cluster"), pick(rows, "redis")
    near_single, cluster_near = pick(rows, "redis+near"), pick(rows, "cluster+near")
    if cluster is None or single is None or near_single is None:
        return ["(the fleet arithmetic needs the redis, redis+near and cluster rows)"]
    W, P, R, r, h, q, inv = (fleet[k] for k in ("W", "P", "R", "r", "h", "q", "I"))
    total = W * r
    hits, misses = total * h, total * (1 - h)
    measured_cn = cluster_near is not None and "miss" in cluster_near
    notes = (
        per_worker_notifications(rows, "cluster+near", "cluster")
        if measured_cn
        else per_worker_notifications(rows, "redis+near", "redis")
    )
    source_n = "the cluster+near rows" if measured_cn else "the redis+near rows, one Redis"
    c_hit, c_miss = cluster["commands"], cluster["miss"]["commands"]
    c_inv, c_rep = cluster["invalidate"]["commands"], cluster["miss"]["replica_commands"]
    c_rep_inv = cluster["invalidate"]["replica_commands"]
    l1 = cluster_near or near_single
    l1_cmds, l1_cpu, hit_cpu = l1["commands"], l1["worker_cpu_us"], cluster["worker_cpu_us"]
    conns = [c["all"] for c in cluster["connections"].values() if c["role"] == "primary"]
    per_worker_conn = sum(conns) / len(conns) / cluster["workers"]
    if cluster_near is not None and "connections" in cluster_near:
        tracked = [
            c["tracking"] for c in cluster_near["connections"].values() if c["role"] == "primary"
        ]
        tracking = sum(tracked) / len(tracked) / cluster_near["workers"]
        tracking_note = "measured (cluster+near rows)"
    else:
        tracking = 1.0
        tracking_note = "issue 20's design, one per primary per worker: not measured on this tree"

    def primary_cmds(l1: float) -> float:
        return (hits * (1 - l1) * c_hit + hits * l1 * l1_cmds + misses * c_miss + inv * c_inv) / P

    bytes_out_hit, bytes_out_miss = cluster["bytes_out"], cluster["miss"]["bytes_out"]
    plain_out = (hits * bytes_out_hit + misses * bytes_out_miss) / P
    near_out = (hits * (1 - q) * bytes_out_hit + misses * bytes_out_miss) / P
    note_msgs = misses * notes["miss_m"] + inv * notes["inv_m"]  # per worker per second
    note_bytes = misses * notes["miss_b"] + inv * notes["inv_b"]  # per worker per second
    memory = cluster["miss"]["memory"]
    replica_cmds = (misses * c_rep + inv * c_rep_inv) / R
    out = [
        f"Assumed: **W = {W:,}** workers, **P = {P}** primaries and **R = {R}** replicas, "
        f"**r = {r:,}** requests per second per worker ({n(total)} req/s in all), a share "
        f"**h = {h:.2f}** of them hits, a share **q = {q:.2f}** of the hits answered by the "
        f"near cache, **I = {inv}** invalidations per second (one entry each), keys spread "
        "evenly over the slots. Measured (per request, from the rows named): "
        f"a hit on the cluster {c_hit:.2f} commands and {hit_cpu:.0f} µs of worker CPU "
        f"(cluster row), a near-cache hit {l1_cmds:.3f} (heartbeats) and {l1_cpu:.0f} µs "
        f"({'cluster+near' if cluster_near else 'redis+near'} row), "
        f"a miss {c_miss:.2f} on the primaries and {c_rep:.2f} replicated, "
        f"an invalidation {c_inv:.2f} and {c_rep_inv:.2f} replicated; "
        f"a notification costs each worker {notes['miss_m']:.2f} messages "
        f"({notes['miss_b']:.0f} B) per miss and {notes['inv_m']:.2f} ({notes['inv_b']:.0f} B) "
        f"per invalidation ({source_n}); each worker held {per_worker_conn:.1f} connections "
        f"per primary (cluster rows, at {64 // cluster['workers']} concurrent requests per "
        "worker).",
        "",
        "| quantity | formula | without near cache (q = 0) | with near cache |",
        "|---|---|---:|---:|",
        f"| connections per primary | W x (pool + tracking); the pool at most 32 "
        "(`max_connections`) | "
        f"{n(W * per_worker_conn)} (at most {n(W * 32)}) | "
        f"{n(W * (per_worker_conn + tracking))} (at most {n(W * (32 + tracking))}) |",
        "| connections per replica | reads go to primaries | about 0 | about 0 |",
        f"| Redis hits per second (fleet) | W r h (1 - q) | {n(hits)} | {n(hits * (1 - q))} |",
        f"| one worker's CPU for its hits, in cores | r h (q cpu_l1 + (1 - q) cpu_hit) | "
        f"{r * h * hit_cpu / 1e6:.2f} | {r * h * (q * l1_cpu + (1 - q) * hit_cpu) / 1e6:.2f} |",
        f"| commands per second per primary | (W r h (1 - q) c_hit + W r (1 - h) c_miss + I "
        f"c_inv) / P | {n(primary_cmds(0.0))} | {n(primary_cmds(q))} |",
        f"| commands per second per replica | (W r (1 - h) c_rep + I c_rep_inv) / R | "
        f"{n(replica_cmds)} | {n(replica_cmds)} |",
        f"| bytes per second to clients per primary, replies | (hits x out_hit + misses x "
        f"out_miss) / P | {n(plain_out / 1e6, 1)} MB/s | {n(near_out / 1e6, 1)} MB/s |",
        f"| notification messages per invalidation (fleet) | W x messages per worker | 0 | "
        f"{n(W * notes['inv_m'])} |",
        f"| notification messages per miss (fleet) | W x messages per worker | 0 | "
        f"{n(W * notes['miss_m'])} |",
        f"| notifications each worker receives per second | W r (1 - h) m_miss + I m_inv | 0 | "
        f"{n(note_msgs)} ({n(note_bytes / 1e6, 2)} MB/s) |",
        f"| notification bytes per second per primary | W x that / P | 0 | "
        f"{n(W * note_bytes / P / 1e6, 1)} MB/s |",
        f"| Redis memory per primary (and its replica), 1M entries of this size | "
        f"1M x {memory:.0f} B / P | "
        f"{n(1e6 * memory / P / 2**20)} MiB | {n(1e6 * memory / P / 2**20)} MiB |",
        "",
        f"Connections per primary with the near cache: {tracking_note}.",
    ]
    return out


def report(data: dict[str, Any]) -> str:
    """The whole of benches/FLEET.md."""
    lines = [
        "# Fleet bench",
        "",
        "Written by `benches/fleet_bench.py` (`make fleet-bench`); rewrite it from the JSON "
        "with `python benches/fleet_report.py`. Requests per second depend on the machine's "
        "load, which other jobs shared; the counts, bytes and connections do not.",
        "",
        "## Measured",
        "",
        *tables(data),
        "",
        f"## A fleet of {FLEET['W']} workers on {FLEET['P']} primaries and {FLEET['R']} replicas",
        "",
        *arithmetic(data),
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    source = Path(sys.argv[1] if len(sys.argv) > 1 else "benches/fleet.json")
    target = Path(sys.argv[2] if len(sys.argv) > 2 else "benches/FLEET.md")
    target.write_text(report(json.loads(source.read_text())))
