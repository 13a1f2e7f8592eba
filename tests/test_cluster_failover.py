"""A Redis Cluster primary killed during an invalidation: the invalidation is queued, the
replica is promoted, and then both the invalidation and caching resume within seconds,
without waiting for requests to find the new slot map one failure at a time."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from typing import Any

import httpx
import pytest
import redis
from fastapi import FastAPI

from oxcache import Cache, cache
from tests.conftest import RedisCluster, sync_client


def wait_promoted(cluster: RedisCluster, victim: int, within_s: float = 60.0) -> None:
    """Until a live node says every slot of the `victim` primary has a new primary (its
    replica, promoted) and the cluster is ok. (`RedisCluster.wait_until_ok` reads CLUSTER
    SLOTS as a dict, which this redis-py returns as a list: it does not wait for that.)"""
    deadline = time.monotonic() + within_s
    live = [n.port for n in cluster.nodes if n.proc is not None and n.port != victim]
    while time.monotonic() < deadline:
        try:
            node = redis.Redis(port=live[0], socket_timeout=1.0)
            try:
                slots = node.execute_command("CLUSTER", "SLOTS")
                state = node.cluster("info").get("cluster_state")
            finally:
                node.close()
        except redis.RedisError:
            slots, state = [], None
        if state == "ok" and slots and all(int(r[2][1]) != victim for r in slots):
            return
        time.sleep(0.05)
    raise RuntimeError("the replica was not promoted in time")


@pytest.mark.parametrize("fault", ["kill", "stop"])
def test_an_invalidation_a_killed_primary_missed_lands_and_caching_resumes_after_promotion(
    own_cluster: RedisCluster, fault: str
) -> None:
    prefix = "failover"
    store = Cache(own_cluster.url, prefix=prefix)  # the production timeout, 50 ms
    data = {"v": 1}
    app = FastAPI()

    @app.get("/things/{n}")
    @cache(expire=600, store=store, tags=["things"])
    async def things(n: int) -> dict[str, int]:
        return {"n": n, "v": data["v"]}

    # The primary holding the tag's generation: the invalidation must reach it.
    with own_cluster.client() as raw:
        victim = raw.get_node_from_key(f"{prefix}:@gen:tag:things").port

    async def scenario() -> dict[str, Any]:
        async with (
            store,
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http,
        ):
            for n in range(20):
                assert (await http.get(f"/things/{n}")).json()["v"] == 1
            assert (await http.get("/things/0")).headers["x-fastapi-cache"] == "Hit"
            node = own_cluster.node(victim)
            if fault == "kill":
                node.kill()  # SIGKILL, as the invalidation is sent: connections refused
            else:
                assert node.proc is not None  # SIGSTOP: a partition, connections hang
                os.kill(node.proc.pid, signal.SIGSTOP)
                stopped.append(node.proc)
                node.proc = None  # gone, as far as the cluster's health is concerned
            data["v"] = 2
            result = await store.invalidate_tag("things")
            # Requests keep coming while the replica takes over (each one a miss: the
            # invalidation is queued), as on a live site.
            served: list[int] = []

            async def load() -> None:
                while True:
                    response = await http.get(f"/things/{len(served) % 20}")
                    served.append(response.status_code)
                    assert response.json()["v"] == 2
                    await asyncio.sleep(0.01)

            loader = asyncio.ensure_future(load())
            await asyncio.to_thread(wait_promoted, own_cluster, victim)
            promoted = time.monotonic()
            landed = await store.wait_invalidations(timeout=30)
            landed_s = time.monotonic() - promoted
            loader.cancel()
            assert set(served) == {200}
            # Caching resumes: every answer is fresh, and soon one is a hit again.
            deadline = time.monotonic() + 30
            hits = 0
            while hits < 20 and time.monotonic() < deadline:
                for n in range(20):
                    response = await http.get(f"/things/{n}")
                    assert response.status_code == 200 and response.json()["v"] == 2
                    hits += response.headers["x-fastapi-cache"] == "Hit"
                await asyncio.sleep(0.05)
            return {
                "queued": not result.landed,
                "landed": landed,
                "landed_s": landed_s,
                "resumed_s": time.monotonic() - promoted,
                "hits": hits,
            }

    stopped: list[Any] = []
    try:
        found = asyncio.run(scenario())
    finally:
        for proc in stopped:
            proc.kill()  # never back: its replica took over
            proc.wait(timeout=10)
    assert found["queued"] and found["landed"] and found["hits"] >= 20


def test_a_primary_that_is_only_slow_costs_misses_but_no_slot_map_reload(
    cluster_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A primary paused (`CLIENT PAUSE`) for ten times the store's timeout, and then
    answering again: the requests it made late are misses (never a 500), and caching
    resumes on the same slot map. Before, each timeout reloaded the slot map (CLUSTER
    SLOTS, the command table, a connection to every primary) and refused every call until
    the reload was done: under load, a slow answer cascaded into seconds of misses."""
    prefix = "slow-" + uuid.uuid4().hex[:8]
    store = Cache(cluster_url, prefix=prefix)  # the production timeout, 50 ms
    app = FastAPI()

    @app.get("/things/{n}")
    @cache(expire=600, store=store)
    async def things(n: int) -> dict[str, int]:
        return {"n": n}

    raw = sync_client(cluster_url)
    assert isinstance(raw, redis.RedisCluster)
    with raw:
        victim = raw.get_node_from_key(store.key_for(things, "http://t", n=0)).port
        # Only keys on the paused primary: every request below waits for it.
        ids = [
            n
            for n in range(200)
            if raw.get_node_from_key(store.key_for(things, "http://t", n=n)).port == victim
        ][:10]
    assert len(ids) == 10
    backend: Any = store.backend
    reloads: list[object] = []
    manager_class = type(backend.client.nodes_manager)
    reload = manager_class.initialize

    async def counted(manager: Any, *args: Any, **kwargs: Any) -> Any:
        if manager is backend.client.nodes_manager:
            reloads.append(manager)
        return await reload(manager, *args, **kwargs)

    async def scenario() -> dict[str, Any]:
        async with (
            store,
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http,
        ):
            for n in ids:
                assert (await http.get(f"/things/{n}")).json() == {"n": n}
                assert (await http.get(f"/things/{n}")).headers["x-fastapi-cache"] == "Hit"
            monkeypatch.setattr(manager_class, "initialize", counted)  # from now on
            pause_ms = 500
            pauser = redis.Redis(port=victim, socket_timeout=5)
            try:
                pauser.execute_command("CLIENT", "PAUSE", pause_ms, "ALL")
            finally:
                pauser.close()
            paused_at = time.monotonic()
            # During the pause: fresh answers (uncached), never an error.
            during: list[str] = []
            while time.monotonic() - paused_at < pause_ms / 1000:
                response = await http.get(f"/things/{ids[len(during) % len(ids)]}")
                assert response.status_code == 200
                during.append(response.headers.get("x-fastapi-cache", "none"))
                await asyncio.sleep(0.01)
            errors = store.stats()["errors"]
            # After it: hits again, bounded in time, with no reload of the slot map.
            deadline = time.monotonic() + 30
            hits = 0
            while hits < len(ids) and time.monotonic() < deadline:
                hits = 0
                for n in ids:
                    response = await http.get(f"/things/{n}")
                    assert response.status_code == 200 and response.json() == {"n": n}
                    hits += response.headers["x-fastapi-cache"] == "Hit"
                await asyncio.sleep(0.05)
            return {"during": during, "errors": errors, "hits": hits}

    found = asyncio.run(scenario())
    # The pause was felt: a request timed out (the circuit then left the cluster alone).
    assert found["errors"] >= 1 and set(found["during"]) != {"Hit"}
    assert found["hits"] == len(ids)
    assert reloads == []
