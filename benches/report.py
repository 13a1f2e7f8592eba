"""Turn a pytest-benchmark JSON file into benches/RESULTS.md: tables of ratios, the machine,
and the command that made them.  Usage: python benches/report.py benches/results.json"""

import json
import platform
import sys
from collections import defaultdict
from importlib.metadata import version
from pathlib import Path
from typing import Any

COMMAND = "make bench"
E2E_COLUMNS = (
    "library",
    "µs / request",
    "requests / s",
    "x floor A",
    "x floor B",
    "x best peer, same backend",
)
PEERS = ("fastapi-redis-cache", "fastapi-cache2", "cashews", "fastapi-cachex")


def machine() -> list[str]:
    cpu = "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    import os

    # oxcache is distributed as fastapi-oxcache (PyPI refuses the bare name).
    libs = [
        "fastapi-oxcache",
        "fastapi",
        "starlette",
        "pydantic",
        "redis",
        "uvicorn",
        *PEERS,
        "xxhash",
    ]
    versions = []
    for lib in libs:
        try:
            versions.append(f"{lib} {version(lib)}")
        except Exception:
            versions.append(f"{lib} ?")
    return [
        f"- CPU: {cpu}, {os.cpu_count()} cores; "
        f"Python {platform.python_version()} ({platform.system()})",
        "- " + ", ".join(versions),
    ]


def per_op(bench: dict[str, Any]) -> float:
    """Seconds per operation: e2e rounds hold `batch` requests each."""
    batch = bench.get("extra_info", {}).get("batch", 1)
    return float(bench["stats"]["median"]) / batch


def fmt_us(seconds: float) -> str:
    return f"{seconds * 1e6:,.1f}"


def e2e_tables(benches: list[dict[str, Any]]) -> list[str]:
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for b in benches:
        if b["group"].startswith("e2e"):
            groups[b["group"]].append(b)
    out: list[str] = []
    order = [
        "e2e hit small",
        "e2e hit 50KiB",
        "e2e hit 1MiB",
        "e2e miss small",
        "e2e 304 small",
        "e2e 304 1MiB",
    ]
    for group in order + sorted(set(groups) - set(order)):
        rows = groups.get(group)
        if not rows:
            continue
        times = {r["extra_info"]["library"]: per_op(r) for r in rows}
        floor_a = times.get("floor A (no cache)")
        floor_b = times.get("floor B (no cache + 1 Redis GET)")
        peers = {k: v for k, v in times.items() if not k.startswith(("floor", "oxcache"))}
        best_peer = {
            kind: min((v for k, v in peers.items() if f"({kind})" in k), default=None)
            for kind in ("Redis", "memory")
        }
        out += [f"### {group[4:]}", ""]
        out += [
            "| " + " | ".join(E2E_COLUMNS) + " |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for lib, t in sorted(times.items(), key=lambda kv: kv[1]):
            kind = "Redis" if "(Redis" in lib else "memory" if "(memory" in lib else None
            peer = best_peer.get(kind) if kind else None
            cells = [
                lib,
                fmt_us(t),
                f"{1 / t:,.0f}",
                f"{t / floor_a:.2f}" if floor_a else "",
                f"{t / floor_b:.2f}" if floor_b else "",
                f"{t / peer:.2f}" if peer and not lib.startswith("floor") else "",
            ]
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
    return out


def per_user_tables(benches: list[dict[str, Any]]) -> list[str]:
    out: list[str] = []
    for kind in ("memory", "Redis"):
        rows = {
            b["extra_info"]["library"]: per_op(b)
            for b in benches
            if b["group"] == f"per-user hit {kind}"
        }
        if not rows:
            continue
        base = rows.get("oxcache shared + auth")
        plain = rows.get("oxcache shared")
        out += [
            f"### per-user hit, {kind}",
            "",
            "| endpoint | µs / request | x shared + auth | x shared |",
            "|---|---:|---:|---:|",
        ]
        for lib, t in sorted(rows.items(), key=lambda kv: kv[1]):
            cells = [
                lib,
                fmt_us(t),
                f"{t / base:.2f}" if base else "",
                f"{t / plain:.2f}" if plain else "",
            ]
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
    return out


def near_tables(benches: list[dict[str, Any]]) -> list[str]:
    out: list[str] = []
    for size in ("small", "50KiB", "1MiB"):
        rows = {
            b["extra_info"]["library"]: per_op(b)
            for b in benches
            if b["group"] == f"near hit {size}"
        }
        if not rows:
            continue
        floor_a = rows.get("floor A (no cache)")
        out += [
            f"### near-cache hit {size}",
            "",
            "| library | µs / request | requests / s | x floor A |",
            "|---|---:|---:|---:|",
        ]
        for lib, t in sorted(rows.items(), key=lambda kv: kv[1]):
            ratio = f"{t / floor_a:.2f}" if floor_a else ""
            out.append(f"| {lib} | {fmt_us(t)} | {1 / t:,.0f} | {ratio} |")
        out.append("")
    return out


def cluster_tables(benches: list[dict[str, Any]]) -> list[str]:
    out: list[str] = []
    for group in sorted({b["group"] for b in benches if b["group"].startswith("cluster hit")}):
        rows = {b["extra_info"]["library"]: per_op(b) for b in benches if b["group"] == group}
        single = rows.get("oxcache (Redis)")
        out += [
            f"### {group}",
            "",
            "| backend | µs / request | requests / s | x one Redis |",
            "|---|---:|---:|---:|",
        ]
        for lib, t in sorted(rows.items(), key=lambda kv: kv[1]):
            ratio = f"{t / single:.2f}" if single else ""
            out.append(f"| {lib} | {fmt_us(t)} | {1 / t:,.0f} | {ratio} |")
        out.append("")
    return out


def core_tables(benches: list[dict[str, Any]]) -> list[str]:
    out: list[str] = []
    keys = [b for b in benches if b["group"] == "core cache_key"]
    if keys:
        ox = next(per_op(b) for b in keys if b["extra_info"]["library"] == "oxcache")
        out += [
            "### cache_key (an int, a str, an Enum, a list of 5 str)",
            "",
            "| key builder | ns / key | x oxcache |",
            "|---|---:|---:|",
        ]
        for b in sorted(keys, key=per_op):
            out.append(
                f"| {b['extra_info']['library']} | {per_op(b) * 1e9:,.0f} | {per_op(b) / ox:.1f} |"
            )
        out.append("")
    etag_groups = sorted(
        {b["group"] for b in benches if b["group"].startswith("core etag")},
        key=lambda g: ("100 B", "10 KiB", "1 MiB").index(g.split("etag ")[1]),
    )
    for group in etag_groups:
        rows = [b for b in benches if b["group"] == group]
        ox = next(per_op(b) for b in rows if b["extra_info"]["library"].startswith("oxcache"))
        out += [
            f"### {group[5:]}",
            "",
            "| hash | ns / body | GB/s | x oxcache time |",
            "|---|---:|---:|---:|",
        ]
        for b in sorted(rows, key=per_op):
            size = b["extra_info"]["bytes"]
            out.append(
                f"| {b['extra_info']['library']} | {per_op(b) * 1e9:,.0f} | "
                f"{size / per_op(b) / 1e9:.2f} | {per_op(b) / ox:.2f} |"
            )
        out.append("")
    ops = defaultdict(dict)
    for b in benches:
        if b["group"].startswith("core ") and b["extra_info"].get("scenario") not in (
            "cache_key",
            "etag",
        ):
            ops[b["extra_info"]["scenario"]][b["extra_info"]["library"]] = per_op(b)
    if ops:
        out += [
            "### other core functions",
            "",
            "| function | oxcache ns | reference ns | speed-up |",
            "|---|---:|---:|---:|",
        ]
        for op, libs in ops.items():
            ox, ref = libs.get("oxcache"), libs.get("reference (pure Python)")
            if ox and ref:
                out.append(f"| {op} | {ox * 1e9:,.0f} | {ref * 1e9:,.0f} | {ref / ox:.0f}x |")
        out.append("")
    return out


def http_tables(path: Path) -> list[str]:
    if not path.exists():
        return ["(no benches/http.json: run `make bench`)", ""]
    data = json.loads(path.read_text())
    rows = data["targets"]
    out = [
        f"`benches/http_bench.py`: uvicorn (one worker, uvloop and httptools, as installed "
        "by `pip install 'fastapi[standard]'`) on loopback, `wrk -t1 "
        f"-c{data['connections']} -d{data['seconds']}s --latency` on hits of `{data['path']}`, "
        f"{data['rounds']} rounds interleaving the libraries (a different order each round); "
        "medians over rounds. wrk, uvicorn and Redis share the machine's cores.",
        "",
        "| library | requests / s | p50 ms | p99 ms | x floor A req/s | x best peer req/s, "
        "same backend | x best peer req/s, any backend | endpoint runs / non-2xx |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    floor_a = rows.get("floor-a-memory", {}).get("rps")
    peers = {k: v["rps"] for k, v in rows.items() if not k.startswith(("floor", "oxcache"))}
    best_any = max(peers.values(), default=None)
    for target, r in sorted(rows.items(), key=lambda kv: -kv[1]["rps"]):
        backend = target.rpartition("-")[2]
        same = max((v for k, v in peers.items() if k.endswith(backend)), default=None)
        mine = not target.startswith("floor")
        cells = [
            target,
            f"{r['rps']:,.0f}",
            f"{r['p50'] * 1e3:.2f}",
            f"{r['p99'] * 1e3:.2f}",
            f"{r['rps'] / floor_a:.2f}" if floor_a else "",
            f"{r['rps'] / same:.2f}" if same and mine else "",
            f"{r['rps'] / best_any:.2f}" if best_any and mine else "",
            f"{r['endpoint_runs']:.0f} / {r['non2xx']:.0f}",
        ]
        out.append("| " + " | ".join(cells) + " |")
    out.append("")
    return out


def http_deps_tables(path: Path) -> list[str]:
    """The tables of `benches/http_deps_bench.py` (issue 18's routes over HTTP)."""
    if not path.exists():
        return ["(no benches/http_deps.json: run `make bench`)", ""]
    data = json.loads(path.read_text())

    def cell(found: dict[str, float], mine: bool = True) -> str:
        if not found or not mine:
            return ""
        return f"{found['median']:.2f} ({found['min']:.2f}-{found['max']:.2f})"

    load = ", ".join(f"{x:.2f}" for x in data.get("load", []))
    out = [
        "`benches/http_deps_bench.py`: uvicorn (one worker, uvloop, httptools) on loopback, "
        f"`wrk -t1 -c{data['connections']} -d{data['seconds']}s`, {data['rounds']} rounds "
        "interleaving the libraries; req/s is the median over rounds, a ratio the median "
        "(min-max) of the per-round ratios. Sessions per request: database sessions opened "
        "during the run over the requests wrk completed (0 = no hit opened one). Load "
        f"average after each round: {load}. Endpoint runs of oxcache rows: in brackets, how "
        "many followed a storage error (a read that failed or passed the store's 50 ms "
        "timeout is served uncached)."
        + (
            " `@before`: the same target with the oxcache of another checkout (`--before`), "
            "in the same rounds."
            if any("@before" in t for rows in data["paths"].values() for t in rows)
            else ""
        ),
        "",
    ]
    for path, rows in data["paths"].items():
        out += [
            f"| `{path}` | req/s (median, min-max) | x floor A | x best peer, same backend "
            "| x best peer, any backend | sessions per request | endpoint runs "
            "(oxcache storage errors) | non-2xx |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for target, r in sorted(rows.items(), key=lambda kv: -kv[1]["rps"]):
            mine = target.startswith("oxcache")
            errors = f" ({r.get('storage_errors', 0):.0f})" if mine else ""
            out.append(
                f"| {target} | {r['rps']:,.0f} ({r['rps_min']:,.0f}-{r['rps_max']:,.0f}) | "
                f"{cell(r['x_floor_a'])} | {cell(r['x_best_peer_same'], mine)} | "
                f"{cell(r['x_best_peer_any'], mine)} | {r['sessions_per_request']:.2f} | "
                f"{r['endpoint_runs']:.0f}{errors} | {r['non2xx']:.0f} |"
            )
        out.append("")
    return out


def redis_tables(path: Path) -> list[str]:
    if not path.exists():
        return ["(no benches/redis_stats.json: run `make bench`)", ""]
    data = json.loads(path.read_text())

    def fmt(commands: dict[str, float]) -> str:
        total = sum(commands.values())
        parts = ", ".join(f"{c} {n:g}" for c, n in commands.items())
        return f"{total:g} ({parts})"

    out = [
        "`benches/redis_stats.py`: INFO commandstats around 20 requests of each kind "
        "(CONFIG RESETSTAT before), divided by 20.",
        "",
        "| library | commands per hit | commands per miss |",
        "|---|---|---|",
    ]
    libraries = {k: v for k, v in data.items() if k != "codec"}
    for r in libraries.values():
        out.append(f"| {r['name']} | {fmt(r['hit'])} | {fmt(r['miss']) if 'miss' in r else ''} |")
    out += [
        "",
        "### Redis memory per entry",
        "",
        "100 misses of each size, then every key they added: `value` is STRLEN of the entry",
        "keys (what the library's format adds to the body; not oxcache's index and generation",
        "keys), `memory` is MEMORY USAGE of all new keys",
        "(Redis's own key, dict and expiry overhead and jemalloc's size classes included; a",
        "54 KB value occupies a 56 KiB allocation), per entry.",
        "",
        "| library | body | value | value - body | memory | memory - body |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in libraries.values():
        for size, m in r.get("memory", {}).items():
            out.append(
                f"| {r['name']} {size} | {m['body']:,} | {m['value_per_entry']:,.0f} | "
                f"{m['value_per_entry'] - m['body']:,.0f} | {m['memory_per_entry']:,.0f} | "
                f"{m['memory_per_entry'] - m['body']:,.0f} |"
            )
    codec = data.get("codec")
    if codec:
        out += [
            "",
            "### Compression (`Cache(compress_over=...)`, LZ4): CPU cost and size",
            "",
            "One encoded entry of the JSON body, packed on a miss and unpacked on a hit",
            "(`oxcache._core.pack_entry` / `unpack_entry`, best of 3).",
            "",
            "| body | entry bytes | stored bytes | saved | compress µs | decompress µs |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for size, c in codec.items():
            out.append(
                f"| {size} | {c['entry']:,} | {c['packed']:,} | "
                f"{1 - c['packed'] / c['entry']:.0%} | {c['compress_us']:,.1f} | "
                f"{c['decompress_us']:,.1f} |"
            )
    out.append("")
    return out


def _e2e(benches: list[dict[str, Any]], group: str, library: str) -> float | None:
    for b in benches:
        if b["group"] == group and b["extra_info"]["library"] == library:
            return per_op(b)
    return None


def _core(benches: list[dict[str, Any]], group: str, prefix: str) -> float | None:
    for b in benches:
        if b["group"] == group and b["extra_info"]["library"].startswith(prefix):
            return per_op(b)
    return None


def targets_table(benches: list[dict[str, Any]], source: Path) -> list[str]:
    """Each target of issues 7 and 9 with the figure this run measured."""
    rows: list[tuple[str, str, float | None, float, bool]] = []  # name, unit, got, bound, le

    def ratio(a: float | None, b: float | None) -> float | None:
        return a / b if a is not None and b else None

    floor_a, floor_b = "floor A (no cache)", "floor B (no cache + 1 Redis GET)"
    hits = [
        ("Redis hit (small) / floor B", "e2e hit small", "oxcache (Redis)", floor_b),
        ("memory hit (small) / floor A", "e2e hit small", "oxcache (memory)", floor_a),
        (
            "Redis hit (small), CachedRoute / floor B",
            "e2e hit small",
            "oxcache CachedRoute (Redis)",
            floor_b,
        ),
        (
            "memory hit (small), CachedRoute / floor A",
            "e2e hit small",
            "oxcache CachedRoute (memory)",
            floor_a,
        ),
        (
            "near-cache L1 hit (small), oxcache / floor A",
            "near hit small",
            "oxcache (Redis + near)",
            floor_a,
        ),
        (
            "near-cache L1 hit (small), oxcache CachedRoute / floor A",
            "near hit small",
            "oxcache CachedRoute (Redis + near)",
            floor_a,
        ),
    ]
    for name, group, library, floor in hits:
        got = ratio(_e2e(benches, group, library), _e2e(benches, group, floor))
        rows.append((name, "x", got, 1.1, True))
    http = source.with_name("http.json")
    if http.exists():
        t = json.loads(http.read_text())["targets"]
        peers = {k: v["rps"] for k, v in t.items() if not k.startswith(("floor", "oxcache"))}
        same = max(v for k, v in peers.items() if k.endswith("-redis"))
        rows.append(
            (
                "wrk hits req/s, oxcache Redis / best peer on Redis",
                "x",
                t["oxcache-redis"]["rps"] / same,
                1.5,
                False,
            )
        )
        rows.append(
            (
                "wrk hits req/s, oxcache Redis / best peer on any backend",
                "x",
                t["oxcache-redis"]["rps"] / max(peers.values()),
                1.5,
                False,
            )
        )
        for target, label in (
            ("oxcache-route-redis", "CachedRoute Redis"),
            ("oxcache-route-memory", "CachedRoute memory"),
        ):
            if target in t:
                rows.append(
                    (
                        f"wrk hits req/s, oxcache {label} / best peer on any backend",
                        "x",
                        t[target]["rps"] / max(peers.values()),
                        1.5,
                        False,
                    )
                )
    for kind in ("Redis", "memory"):
        rows.append(
            (
                f"304 of 1 MiB / 304 of a small body ({kind})",
                "x",
                ratio(
                    _e2e(benches, "e2e 304 1MiB", f"oxcache ({kind})"),
                    _e2e(benches, "e2e 304 small", f"oxcache ({kind})"),
                ),
                1.2,
                True,
            )
        )
    rows.append(
        (
            "etag speed on 1 MiB / xxhash xxh3_128",
            "x",
            ratio(
                _core(benches, "core etag 1 MiB", "xxhash"),
                _core(benches, "core etag 1 MiB", "oxcache"),
            ),
            0.5,
            False,
        )
    )
    rows.append(
        (
            "cache_key speed / fastapi-cache2 default_key_builder",
            "x",
            ratio(
                _core(benches, "core cache_key", "fastapi-cache2"),
                _core(benches, "core cache_key", "oxcache"),
            ),
            10.0,
            False,
        )
    )
    stats = source.with_name("redis_stats.json")
    if stats.exists():
        memory = json.loads(stats.read_text()).get("oxcache", {}).get("memory", {})
        for size, m in memory.items():
            rows.append(
                (
                    f"entry bytes beyond the body, {size} (STRLEN - body)",
                    "B",
                    m["value_per_entry"] - m["body"],
                    64,
                    True,
                )
            )
    out = ["| target | measured | bound | met |", "|---|---:|---:|---|"]
    for name, unit, got, bound, at_most in rows:
        if got is None:
            out.append(f"| {name} | not measured | {bound:g}{unit} | ? |")
            continue
        met = got <= bound if at_most else got >= bound
        sign = "<=" if at_most else ">="
        out.append(
            f"| {name} | {got:.2f}{unit} | {sign} {bound:g}{unit} | {'yes' if met else 'NO'} |"
        )
    out.append("")
    return out


def fleet_section(path: Path) -> list[str]:
    """benches/FLEET.md (written by `make fleet-bench`, not by `make bench`), a level down."""
    if not path.exists():
        return ["(no benches/FLEET.md: run `make fleet-bench`)", ""]
    text = path.read_text().split("\n", 1)[1]  # its title is this section's
    return [("#" + line if line.startswith("##") else line) for line in text.splitlines()]


def main() -> None:
    source = Path(sys.argv[1] if len(sys.argv) > 1 else "benches/results.json")
    data = json.loads(source.read_text())
    benches = data["benchmarks"]
    notes = Path(__file__).with_name("NOTES.md")
    lines = [
        "# Benchmark results",
        "",
        f"Made by `{COMMAND}` (pytest-benchmark; this file is written by `benches/report.py`",
        f"from `{source.name}`) on {data.get('datetime', '?')[:19]}.",
        "",
        *machine(),
        "",
        "End to end: the same FastAPI app under each library, driven in process through a raw",
        "ASGI call (no HTTP client, no sockets to the app), on the same redis-server on loopback.",
        "Each figure is the median round over 50 sequential requests (10 for 1 MiB); every round",
        "checks status and body, and that hits did not run the endpoint. Floor A is the endpoint",
        "with no cache;",
        "floor B the same plus one bare `redis.asyncio` GET, the least a Redis hit can cost.",
        "Lower is better; ratios are times (x floor A = 1.10 means 10% slower than no cache).",
        "",
        "## Targets (issues 7 and 9), this run",
        "",
        *targets_table(benches, source),
        "## End to end, in process",
        "",
        *e2e_tables(benches),
        "## Over HTTP, 64 connections (wrk)",
        "",
        *http_tables(source.with_name("http.json")),
        "## Routes with dependencies over HTTP (issue 18)",
        "",
        *http_deps_tables(source.with_name("http_deps.json")),
        "## Redis commands per request",
        "",
        *redis_tables(source.with_name("redis_stats.json")),
        "## Per-user hits (`benches/bench_per_user.py`)",
        "",
        "`shared + auth` has the same authentication dependency as `per-user` without putting",
        "the user in the key, so the ratio between them is what per-user caching itself costs.",
        "",
        *per_user_tables(benches),
        "## Near cache (`benches/bench_near.py`)",
        "",
        "An L1 hit of a `NearCache` (no Redis I/O) against floor A and the plain Redis hit,",
        "measured in the same run; every round checks that all its requests were L1 hits.",
        "",
        *near_tables(benches),
        "## Redis Cluster beside one Redis (`benches/bench_cluster.py`)",
        "",
        "The same app in the same run on a single redis-server and on a local 3-primary,",
        "3-replica cluster (all on loopback): the client-side cost of the cluster.",
        "",
        *cluster_tables(benches),
        "## Several workers, one Redis or a cluster (`make fleet-bench`)",
        "",
        *fleet_section(source.with_name("FLEET.md")),
        "",
        "## Core (`oxcache._core`)",
        "",
        *core_tables(benches),
    ]
    if notes.exists():
        lines += [notes.read_text().strip(), ""]
    out = Path(__file__).with_name("RESULTS.md")
    out.write_text("\n".join(lines) + "\n")
    print("wrote", out)


if __name__ == "__main__":
    main()
