"""Redis commands per hit and per miss (INFO commandstats), and Redis memory per cached
entry (MEMORY USAGE of every key a library wrote), for each library on the same Redis,
driving the apps in process (benches/asgi.py). Writes benches/redis_stats.json for
benches/report.py.  Usage: python benches/redis_stats.py [OUT.json]  (REDIS_URL names the Redis)

The Redis should be the bench's own: the counters are reset (CONFIG RESETSTAT) per step.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import redis

from benches.apps import BUILDERS, oxcache_compressed_target
from benches.asgi import call

LIBRARIES = [
    "floor-b",
    "oxcache",
    "oxcache-lz4",
    "fastapi-redis-cache",
    "fastapi-cache2",
    "cashews",
    "fastapi-cachex",
]
REPEAT = 20
ENTRIES = 100


def commands(client: redis.Redis) -> Counter[str]:
    stats = client.info("commandstats")
    counts: Counter[str] = Counter()
    for name, value in stats.items():
        command = name.removeprefix("cmdstat_")
        if command.startswith(("config", "info")):
            continue  # the measurement's own
        counts[command.upper()] = int(value["calls"])
    return counts


def per_request(counts: Counter[str], n: int) -> dict[str, float]:
    return {cmd: calls / n for cmd, calls in sorted(counts.items())}


async def measure(library: str, url: str, client: redis.Redis) -> dict[str, Any]:
    build = oxcache_compressed_target if library == "oxcache-lz4" else BUILDERS[library][0]
    target = build(url)
    if target.setup:
        await target.setup()
    try:
        result: dict[str, Any] = {"name": target.name}
        # Misses: fresh arguments every time.
        await call(target.app, "/small", b"n=-1")  # connections and scripts warmed up
        client.config_resetstat()
        for i in range(REPEAT):
            status, _, _ = await call(target.app, "/small", f"n={1000 + i}".encode())
            assert status == 200
        result["miss"] = per_request(commands(client), REPEAT)
        # Hits of one entry.
        await call(target.app, "/small")
        await call(target.app, "/small")
        before = target.calls[0]
        client.config_resetstat()
        for _ in range(REPEAT):
            status, _, _ = await call(target.app, "/small")
            assert status == 200
        result["hit"] = per_request(commands(client), REPEAT)
        result["hit_ran_endpoint"] = target.calls[0] != before
        # Memory: the keys ENTRIES misses of each size added, and what they hold.
        result["memory"] = {}
        for size in ("small", "50KiB"):
            keys_before = set(client.scan_iter(count=1000))
            body_len = 0
            for i in range(ENTRIES):
                query = f"n={(2000 if size == 'small' else 3000) + i}".encode()
                status, _, body = await call(target.app, f"/{size}", query)
                assert status == 200
                body_len = len(body)
            new = set(client.scan_iter(count=1000)) - keys_before
            usage = sum(int(client.memory_usage(k, samples=0) or 0) for k in new)
            # The entries' own bytes: oxcache's generation tokens (`@gen:` keys) and locks
            # are strings too, but not entries; their memory still counts below.
            value = sum(
                int(client.strlen(k)) for k in new if client.type(k) == b"string" and b":@" not in k
            )
            result["memory"][size] = {
                "body": body_len,
                "keys": len(new),
                "memory_per_entry": usage / ENTRIES,
                "value_per_entry": value / ENTRIES,
            }
        return result
    finally:
        if target.teardown:
            await target.teardown()


async def main(url: str) -> dict[str, Any]:
    client = redis.Redis.from_url(url)
    out = {}
    for library in LIBRARIES:  # (oxcache-lz4: the same app storing compressed entries)
        if library == "floor-b":
            # One bare GET per request, hit or miss: no entries, so no memory table.
            target = BUILDERS[library][0](url)
            assert target.setup and target.teardown
            await target.setup()
            client.config_resetstat()
            for _ in range(REPEAT):
                await call(target.app, "/small")
            out[library] = {"name": target.name, "hit": per_request(commands(client), REPEAT)}
            await target.teardown()
            continue
        out[library] = await measure(library, url, client)
        print(library, out[library]["hit"], out[library]["miss"], flush=True)
    client.close()
    out["codec"] = codec_cost()
    return out


def codec_cost() -> dict[str, dict[str, float]]:
    """CPU cost of compressing (on a miss) and decompressing (on a hit) one entry."""
    import timeit

    from benches.apps import payload
    from oxcache._core import encode_entry, pack_entry, unpack_entry

    cost = {}
    for size in ("50KiB", "1MiB"):
        body = json.dumps(payload(size), separators=(",", ":")).encode()
        data = encode_entry(200, [(b"content-type", b"application/json")], body, 1, 2)
        packed = pack_entry(data)
        n = 200 if size == "50KiB" else 20
        cost[size] = {
            "entry": len(data),
            "packed": len(packed),
            "compress_us": min(
                timeit.repeat(lambda data=data: pack_entry(data), number=n, repeat=3)
            )
            / n
            * 1e6,
            "decompress_us": min(
                timeit.repeat(lambda packed=packed: unpack_entry(packed), number=n, repeat=3)
            )
            / n
            * 1e6,
        }
    return cost


if __name__ == "__main__":
    logging.disable(logging.INFO)  # fastapi-redis-cache logs every key it adds
    result = asyncio.run(main(os.environ["REDIS_URL"]))
    Path(sys.argv[1] if len(sys.argv) > 1 else "benches/redis_stats.json").write_text(
        json.dumps(result, indent=1)
    )
